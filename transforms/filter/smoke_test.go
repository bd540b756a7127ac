package filter

import (
	"testing"

	"gopkg.in/yaml.v3"

	flowpb "github.com/flowbus/flowbus/flow"
)

func TestSmoke(t *testing.T) {
	var doc yaml.Node
	src := `
- source_pod: ["kube-system/"]
  verdict: [DROPPED]
- experimental: {cel_expression: ["_flow.verdict == Verdict.DROPPED || (has(_flow.l4.TCP) && _flow.l4.TCP.destination_port == 443u)"]}
- source_label: ["k8s:app in (a, b)"]
`
	if err := yaml.Unmarshal([]byte(src), &doc); err != nil {
		t.Fatal(err)
	}
	ffs, err := ParseFilters(&doc)
	if err != nil {
		t.Fatal(err)
	}
	f, err := New(ffs, nil)
	if err != nil {
		t.Fatal(err)
	}
	fl := &flowpb.Flow{Verdict: flowpb.Verdict_FORWARDED, L4: &flowpb.Layer4{Protocol: &flowpb.Layer4_TCP{TCP: &flowpb.TCP{DestinationPort: 443}}}}
	if !f.Match(fl) {
		t.Fatal("want match")
	}
	fl.GetL4().GetTCP().DestinationPort = 80
	if f.Match(fl) {
		t.Fatal("want no match")
	}
	fl.Source = &flowpb.Endpoint{Labels: []string{"k8s:app=b"}}
	if !f.Match(fl) {
		t.Fatal("want label match")
	}
}
