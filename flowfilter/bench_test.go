package flowfilter_test

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"google.golang.org/protobuf/encoding/protojson"

	flowpb "github.com/flowbus/flowbus/flow"
	"github.com/flowbus/flowbus/flowfilter"
	"github.com/flowbus/flowbus/internal/testflow"
)

func benchFlows(n int) []*flowpb.Flow {
	r := rand.New(rand.NewPCG(3, 4))
	flows := make([]*flowpb.Flow, n)
	for i := range flows {
		flows[i] = testflow.Random(r)
	}
	return flows
}

func mustFilter(b *testing.B, allowJSON ...string) *flowfilter.Filter {
	b.Helper()
	var allow []*flowpb.FlowFilter
	for _, js := range allowJSON {
		ff := new(flowpb.FlowFilter)
		if err := protojson.Unmarshal([]byte(js), ff); err != nil {
			b.Fatal(err)
		}
		allow = append(allow, ff)
	}
	f, err := flowfilter.New(allow, nil)
	if err != nil {
		b.Fatal(err)
	}
	return f
}

// BenchmarkMatch measures Match per flow (ns/op is per flow) over a
// corpus of varied flows, for each kind of flowfilter.
func BenchmarkMatch(b *testing.B) {
	flows := benchFlows(1024)
	cases := []struct{ name, filter string }{
		{"verdict", `{"verdict":["DROPPED","ERROR"]}`},
		{"ip-cidr", `{"source_ip":["10.0.0.0/8","fd00::/8","1.1.1.1"]}`},
		{"pod", `{"source_pod":["kube-system/","default/web"]}`},
		{"service", `{"destination_service":["kube-system/kube-dns"]}`},
		{"fqdn", `{"destination_fqdn":["*.isovalent.com","cilium.io"]}`},
		{"label", `{"source_label":["k8s:app=web"]}`},
		{"label-set", `{"source_label":["k8s:app in (web, api),!reserved:host"]}`},
		{"node-labels", `{"node_labels":["zone in (a)"]}`},
		{"workload", `{"source_workload":[{"kind":"Deployment"}]}`},
		{"protocol-port", `{"protocol":["tcp","udp"],"destination_port":["53","443"]}`},
		{"http", `{"http_status_code":["4+"],"http_method":["GET"]}`},
		{"http-path", `{"http_path":["^/v1/"]}`},
		{"http-url", `{"http_url":["users"]}`},
		{"http-header", `{"http_header":[{"key":"X-Env","value":"prod"}]}`},
		{"dns-query", `{"dns_query":["isovalent"]}`},
		{"tcp-flags", `{"tcp_flags":[{"SYN":true},{"RST":true}]}`},
		{"reply", `{"reply":[false]}`},
		{"node-name", `{"node_name":["prod/","k8s*"]}`},
		{"event-type", `{"event_type":[{"type":4,"match_sub_type":true,"sub_type":1}]}`},
		{"misc", `{"uuid":["u-1"],"ip_version":["IPv4"],"traffic_direction":["INGRESS"],"source_identity":[2],"trace_id":["t1"],"ip_trace_id":[1],"encrypted":[false],"interface":[{"name":"eth0"}],"source_cluster_name":["c1"],"drop_reason_desc":["POLICY_DENIED"]}`},
	}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			f := mustFilter(b, c.filter)
			b.ReportAllocs()
			i, kept := 0, 0
			for b.Loop() {
				if f.Match(flows[i&1023]) {
					kept++
				}
				i++
			}
			b.ReportMetric(float64(kept)/float64(i), "kept/flow")
		})
	}
	// An exporter-style allowlist of several filters.
	b.Run("allowlist", func(b *testing.B) {
		f := mustFilter(b,
			`{"verdict":["DROPPED"]}`,
			`{"source_pod":["kube-system/"],"protocol":["udp"],"destination_port":["53"]}`,
			`{"source_label":["k8s:app=web"],"destination_fqdn":["*.isovalent.com"]}`,
			`{"http_status_code":["5+"]}`)
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			f.Match(flows[i&1023])
			i++
		}
	})
}

// BenchmarkCEL measures CEL expressions per flow. The first should take at
// most 400 ns and no allocation; "hubble" evaluates it as Hubble does,
// through cel-go with a map activation per flow, for comparison.
func BenchmarkCEL(b *testing.B) {
	flows := benchFlows(1024)
	exprs := []struct{ name, expr string }{
		{"verdict-or-tcp443", `_flow.verdict == flow.Verdict.DROPPED || (has(_flow.l4.TCP) && _flow.l4.TCP.destination_port == 443u)`},
		{"labels-exists", `_flow.source.labels.exists(l, l.startsWith('k8s:app=w'))`},
		{"ip-in-list", `_flow.IP.source in ['1.1.1.1', '10.0.0.1'] && _flow.IP.destination.matches('^10\\.')`},
		{"fallback-wrapper", `_flow.is_reply == true`},
	}
	for _, e := range exprs {
		b.Run(e.name, func(b *testing.B) {
			f := mustFilter(b, fmt.Sprintf(`{"experimental":{"cel_expression":[%q]}}`, e.expr))
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				f.Match(flows[i&1023])
				i++
			}
		})
	}
	b.Run("hubble-style/verdict-or-tcp443", func(b *testing.B) {
		prg := flowfilter.HubbleStyleCELForTest(b, exprs[0].expr)
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			prg(flows[i&1023])
			i++
		}
	})
}
