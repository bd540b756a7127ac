package fieldpath

import (
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	flowpb "github.com/flowbus/flowbus/flow"
)

func sampleFlow() *flowpb.Flow {
	return &flowpb.Flow{
		Time:           timestamppb.New(time.Date(2026, 11, 24, 12, 0, 0, 5000, time.UTC)),
		Verdict:        flowpb.Verdict_DROPPED,
		IP:             &flowpb.IP{Source: "10.0.0.1", Destination: "10.0.0.2", IpVersion: flowpb.IPVersion_IPv4},
		L4:             &flowpb.Layer4{Protocol: &flowpb.Layer4_TCP{TCP: &flowpb.TCP{SourcePort: 4000, DestinationPort: 443}}},
		Source:         &flowpb.Endpoint{Namespace: "shop", PodName: "cart-1", Labels: []string{"k8s:app=cart", "k8s:tier=web"}},
		L7:             &flowpb.Layer7{Record: &flowpb.Layer7_Http{Http: &flowpb.HTTP{Url: "http://x/y"}}},
		IsReply:        wrapperspb.Bool(false),
		NodeName:       "kind/worker",
		DropReasonDesc: 250,
	}
}

func TestAppendText(t *testing.T) {
	f := sampleFlow()
	tests := []struct {
		path string
		want string
		ok   bool
	}{
		{"source.namespace", "shop", true},
		{"source.pod_name", "cart-1", true},
		{"verdict", "DROPPED", true},
		{"drop_reason_desc", "250", true},
		{"l4.TCP.destination_port", "443", true},
		{"l4.UDP.destination_port", "", false},
		{"IP.source", "10.0.0.1", true},
		{"IP.ipVersion", "IPv4", true},
		{"l7.http.url", "http://x/y", true},
		{"l7.dns.query", "", false},
		{"destination.namespace", "", false},
		{"source.labels", "k8s:app=cart,k8s:tier=web", true},
		{"is_reply", "false", true},
		{"time", "2026-11-24T12:00:00.000005Z", true},
		{"node_name", "kind/worker", true},
		{"source", "", false},
		{"Type", "", false},
	}
	for _, tt := range tests {
		t.Run(tt.path, func(t *testing.T) {
			p, err := Parse(tt.path)
			if err != nil {
				t.Fatal(err)
			}
			got, ok := p.AppendText(nil, f)
			if string(got) != tt.want || ok != tt.ok {
				t.Errorf("AppendText = %q, %v; want %q, %v", got, ok, tt.want, tt.ok)
			}
		})
	}
}

func TestParseErrors(t *testing.T) {
	tests := []struct{ path, wantErr string }{
		{"", "empty"},
		{"source.podname", `has no field "podname"`},
		{"verdict.x", "it has no field"},
		{"source.labels.x", "repeated field"},
		{"l4.tcp.source_port", `has no field "tcp"`},
	}
	for _, tt := range tests {
		if _, err := Parse(tt.path); err == nil || !strings.Contains(err.Error(), tt.wantErr) {
			t.Errorf("Parse(%q) error = %v, want containing %q", tt.path, err, tt.wantErr)
		}
	}
}

func TestClear(t *testing.T) {
	f := sampleFlow()
	MustParse("source.pod_name").Clear(f)
	MustParse("l4.TCP").Clear(f)
	MustParse("destination.pod_name").Clear(f) // unset parent: no-op
	if f.Source.PodName != "" || f.L4.GetTCP() != nil || f.Source.Namespace != "shop" {
		t.Errorf("unexpected flow after Clear: %v", f)
	}
}

func TestAppendTextAllocs(t *testing.T) {
	f := sampleFlow()
	paths := []Path{MustParse("source.namespace"), MustParse("verdict"), MustParse("l4.TCP.destination_port")}
	buf := make([]byte, 0, 256)
	allocs := testing.AllocsPerRun(100, func() {
		buf = buf[:0]
		for _, p := range paths {
			buf, _ = p.AppendText(buf, f)
		}
	})
	if allocs != 0 {
		t.Errorf("AppendText allocates %.1f times, want 0", allocs)
	}
}

func BenchmarkAppendText(b *testing.B) {
	f := sampleFlow()
	p := MustParse("l4.TCP.destination_port")
	buf := make([]byte, 0, 64)
	b.ReportAllocs()
	for b.Loop() {
		buf, _ = p.AppendText(buf[:0], f)
	}
}
