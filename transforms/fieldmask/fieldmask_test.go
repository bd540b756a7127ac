package fieldmask

import (
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
	"google.golang.org/protobuf/types/known/wrapperspb"
	"gopkg.in/yaml.v3"

	"github.com/flowbus/flowbus/codec"
	flowpb "github.com/flowbus/flowbus/flow"
	"github.com/flowbus/flowbus/pipeline"
)

// richFlow is an enriched L7 flow with most parts of a Flow populated.
func richFlow() *flowpb.Flow {
	return &flowpb.Flow{
		Time:     timestamppb.New(time.Date(2026, 11, 24, 12, 0, 0, 123456000, time.UTC)),
		Uuid:     "a4100bd7-9732-442e-bbc8-beb5c7212f44",
		Emitter:  &flowpb.Emitter{Name: "flowbus", Version: "1"},
		Verdict:  flowpb.Verdict_FORWARDED,
		Ethernet: &flowpb.Ethernet{Source: "02:00:00:00:00:01", Destination: "02:00:00:00:00:02"},
		IP:       &flowpb.IP{Source: "10.0.0.1", Destination: "10.0.0.2", IpVersion: flowpb.IPVersion_IPv4},
		L4: &flowpb.Layer4{Protocol: &flowpb.Layer4_TCP{TCP: &flowpb.TCP{
			SourcePort: 40000, DestinationPort: 80, Flags: &flowpb.TCPFlags{SYN: true, ACK: true},
		}}},
		Source: &flowpb.Endpoint{ID: 12, Identity: 3456, Namespace: "shop", PodName: "cart-1",
			Labels: []string{"k8s:app=cart"}, Workloads: []*flowpb.Workload{{Name: "cart", Kind: "Deployment"}}},
		Destination: &flowpb.Endpoint{ID: 13, Identity: 4567, Namespace: "shop", PodName: "db-0",
			Labels: []string{"k8s:app=db"}},
		Type:                  flowpb.FlowType_L7,
		NodeName:              "kind/worker",
		NodeLabels:            []string{"kubernetes.io/hostname=worker"},
		SourceNames:           []string{"cart.shop.svc"},
		L7:                    &flowpb.Layer7{Type: flowpb.L7FlowType_REQUEST, LatencyNs: 5, Record: &flowpb.Layer7_Http{Http: &flowpb.HTTP{Method: "GET", Url: "http://db/x?a=1", Protocol: "HTTP/1.1"}}},
		EventType:             &flowpb.CiliumEventType{Type: 129},
		TraceObservationPoint: flowpb.TraceObservationPoint_TO_ENDPOINT,
		IsReply:               wrapperspb.Bool(false),
		Interface:             &flowpb.NetworkInterface{Index: 3, Name: "eth0"},
		SocketCookie:          42,
		Summary:               "HTTP/1.1 GET http://db/x?a=1",
		EgressAllowedBy:       []*flowpb.Policy{{Name: "allow-db", Namespace: "shop"}},
	}
}

func mustYAML(t testing.TB, src string) *yaml.Node {
	t.Helper()
	var doc yaml.Node
	if err := yaml.Unmarshal([]byte(src), &doc); err != nil {
		t.Fatal(err)
	}
	return doc.Content[0]
}

func build(t testing.TB, src string) *Mask {
	t.Helper()
	m, err := pipeline.Make(nil, mustYAML(t, src), FromOptions)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func event(f *flowpb.Flow) *pipeline.Event {
	return &pipeline.Event{Flow: f, Time: f.Time, NodeName: f.NodeName}
}

func TestInclude(t *testing.T) {
	full := richFlow()
	tests := []struct {
		name string
		conf string
		in   func() *flowpb.Flow
		want *flowpb.Flow
	}{
		{
			name: "leaves",
			conf: "include: [source.namespace, source.pod_name, verdict, time, node_name]",
			in:   richFlow,
			want: &flowpb.Flow{Time: full.Time, NodeName: full.NodeName, Verdict: full.Verdict,
				Source: &flowpb.Endpoint{Namespace: "shop", PodName: "cart-1"}},
		},
		{
			name: "whole message wins over a path under it",
			conf: "include: [source.pod_name, source, source.labels]",
			in:   richFlow,
			want: &flowpb.Flow{Source: full.Source},
		},
		{
			name: "duplicates",
			conf: "include: [verdict, verdict]",
			in:   richFlow,
			want: &flowpb.Flow{Verdict: full.Verdict},
		},
		{
			name: "absent interior message is created empty",
			conf: "include: [destination.pod_name, verdict]",
			in: func() *flowpb.Flow {
				f := richFlow()
				f.Destination = nil
				return f
			},
			want: &flowpb.Flow{Destination: &flowpb.Endpoint{}, Verdict: full.Verdict},
		},
		{
			name: "active oneof member",
			conf: "include: [l4.TCP.destination_port, l4.TCP.flags.SYN]",
			in:   richFlow,
			want: &flowpb.Flow{L4: &flowpb.Layer4{Protocol: &flowpb.Layer4_TCP{TCP: &flowpb.TCP{
				DestinationPort: 80, Flags: &flowpb.TCPFlags{SYN: true}}}}},
		},
		{
			name: "inactive oneof member is not created",
			conf: "include: [l4.TCP.destination_port]",
			in: func() *flowpb.Flow {
				f := richFlow()
				f.L4 = &flowpb.Layer4{Protocol: &flowpb.Layer4_UDP{UDP: &flowpb.UDP{SourcePort: 1, DestinationPort: 53}}}
				return f
			},
			want: &flowpb.Flow{L4: &flowpb.Layer4{}},
		},
		{
			name: "whole oneof member",
			conf: "include: [l4.UDP, l7.http.url]",
			in:   richFlow,
			want: &flowpb.Flow{L4: &flowpb.Layer4{}, L7: &flowpb.Layer7{Record: &flowpb.Layer7_Http{Http: &flowpb.HTTP{Url: "http://db/x?a=1"}}}},
		},
		{
			name: "leaf not set stays unset",
			conf: "include: [l7.dns, proxy_port]",
			in:   richFlow,
			want: &flowpb.Flow{L7: &flowpb.Layer7{}},
		},
		{
			name: "repeated and wrapper leaves",
			conf: "include: [source.workloads, is_reply, egress_allowed_by]",
			in:   richFlow,
			want: &flowpb.Flow{Source: &flowpb.Endpoint{Workloads: full.Source.Workloads}, IsReply: full.IsReply, EgressAllowedBy: full.EgressAllowedBy},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := build(t, tt.conf)
			e := event(tt.in())
			m.Apply(e)
			if !proto.Equal(e.Flow, tt.want) {
				t.Errorf("masked flow:\n got %v\nwant %v", e.Flow, tt.want)
			}
			if e.Time != e.Flow.Time || e.NodeName != e.Flow.NodeName {
				t.Errorf("envelope not read from the masked flow: time %v node %q", e.Time, e.NodeName)
			}
		})
	}
}

// TestIncludeJSON checks the exported line against the shape of Hubble's
// exporter tests: the envelope's time and node_name come from the masked
// flow.
func TestIncludeJSON(t *testing.T) {
	enc, err := codec.New("json")
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct{ conf, want string }{
		{"include: [source.namespace, source.pod_name]", `{"flow":{"source":{"namespace":"shop","pod_name":"cart-1"}}}`},
		{"include: [time, node_name, verdict]", `{"flow":{"time":"2026-11-24T12:00:00.123456Z","verdict":"FORWARDED","node_name":"kind/worker"},"node_name":"kind/worker","time":"2026-11-24T12:00:00.123456Z"}`},
		{"include: [destination_service]", `{"flow":{}}`},
	}
	for _, tt := range tests {
		e := event(richFlow())
		build(t, tt.conf).Apply(e)
		got, err := enc.Append(nil, e)
		if err != nil {
			t.Fatal(err)
		}
		if s := strings.TrimSpace(string(got)); s != tt.want {
			t.Errorf("%s:\n got %s\nwant %s", tt.conf, s, tt.want)
		}
	}
}

func TestExclude(t *testing.T) {
	m := build(t, "exclude: [source.labels, destination.labels, time, l4.UDP.source_port, l4.TCP.flags, l7, destination.labels]")
	e := event(richFlow())
	m.Apply(e)
	want := richFlow()
	want.Source.Labels = nil
	want.Destination.Labels = nil
	want.Time = nil
	want.L4.GetTCP().Flags = nil
	want.L7 = nil
	if diff := cmpFlows(e.Flow, want); diff != "" {
		t.Errorf("excluded flow differs: %s", diff)
	}
	if e.Time != nil || e.NodeName != "kind/worker" {
		t.Errorf("envelope: time %v node %q", e.Time, e.NodeName)
	}
	// Excluding an absent part leaves the flow alone and creates nothing.
	f := &flowpb.Flow{Verdict: flowpb.Verdict_DROPPED}
	m.Apply(event(f))
	if !proto.Equal(f, &flowpb.Flow{Verdict: flowpb.Verdict_DROPPED}) {
		t.Errorf("exclude changed an unrelated flow: %v", f)
	}
}

func cmpFlows(got, want *flowpb.Flow) string {
	if proto.Equal(got, want) {
		return ""
	}
	return "got " + got.String() + "\nwant " + want.String()
}

func TestProcessSkipsLostEvents(t *testing.T) {
	m := build(t, "include: [verdict]")
	b := pipeline.NewBatch()
	defer b.Release()
	lost := b.Next()
	lost.Lost = &flowpb.LostEvent{NumEventsLost: 3}
	lost.NodeName = "n1"
	*b.Next() = *event(richFlow())
	m.Process(b)
	if b.Len() != 2 || b.Events[0].NodeName != "n1" || b.Events[0].Lost.NumEventsLost != 3 {
		t.Errorf("lost event changed: %+v", b.Events[0])
	}
	if !proto.Equal(b.Events[1].Flow, &flowpb.Flow{Verdict: flowpb.Verdict_FORWARDED}) {
		t.Errorf("flow not masked: %v", b.Events[1].Flow)
	}
}

func TestConfigErrors(t *testing.T) {
	tests := []struct{ conf, want string }{
		{"include: [source.podname]", `1:11: field path "source.podname": Endpoint has no field "podname"`},
		{"exclude:\n  - verdict\n  - l4.tcp", `3:5: field path "l4.tcp"`},
		{"include: [verdict]\nexclude: [time]", "1:1: set include or exclude, not both"},
		{"{}", "1:1: set include or exclude"},
		{"include: []", "1:1: set include or exclude"},
		{"include: [{a: b}]", "1:11: expected a field path"},
		{"include: [source.labels.x]", "1:11: "},
		{"include: [verdict]\nextra: 1", "2:1: "},
	}
	for _, tt := range tests {
		_, err := pipeline.Make(nil, mustYAML(t, tt.conf), FromOptions)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%q: error %v, want containing %q", tt.conf, err, tt.want)
		}
	}
}

func TestRegistered(t *testing.T) {
	found := false
	for _, typ := range pipeline.Types("transforms") {
		found = found || typ == "fieldmask"
	}
	if !found {
		t.Error("fieldmask is not registered")
	}
}

// flows returns n copies of richFlow for benchmarks that mask in place.
func flows(n int) []pipeline.Event {
	es := make([]pipeline.Event, n)
	for i := range es {
		es[i] = *event(richFlow())
	}
	return es
}

func TestApplyAllocs(t *testing.T) {
	for _, conf := range []string{
		"include: [time, node_name, source.namespace, source.pod_name, destination.namespace, destination.pod_name, verdict, l4.TCP.destination_port]",
		"exclude: [source.labels, destination.labels, l7, Summary]",
	} {
		m := build(t, conf)
		es := flows(101)
		i := 0
		allocs := testing.AllocsPerRun(100, func() {
			m.Apply(&es[i])
			i++
		})
		if allocs != 0 {
			t.Errorf("%s: %.1f allocs per flow, want 0", conf, allocs)
		}
	}
}

func benchmarkMask(b *testing.B, conf string) {
	m := build(b, conf)
	const n = 4096
	es := flows(n)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if i%n == 0 && i > 0 {
			b.StopTimer()
			es = flows(n)
			b.StartTimer()
		}
		m.Apply(&es[i%n])
	}
}

func BenchmarkInclude(b *testing.B) {
	benchmarkMask(b, "include: [time, node_name, source.namespace, source.pod_name, destination.namespace, destination.pod_name, verdict, l4.TCP.destination_port]")
}

func BenchmarkExclude(b *testing.B) {
	benchmarkMask(b, "exclude: [source.labels, destination.labels, l7, Summary]")
}

// TestUnknownFields: a mask drops unknown fields (from a newer schema) in
// every message it keeps, as Hubble's copy does.
func TestUnknownFields(t *testing.T) {
	f := richFlow()
	unknown := protowire.AppendVarint(protowire.AppendTag(nil, 9999, protowire.VarintType), 7)
	f.ProtoReflect().SetUnknown(unknown)
	f.Source.ProtoReflect().SetUnknown(unknown)
	build(t, "include: [source.namespace, verdict]").Apply(event(f))
	if f.ProtoReflect().GetUnknown() != nil || f.Source.ProtoReflect().GetUnknown() != nil {
		t.Errorf("unknown fields kept")
	}
	if !proto.Equal(f, &flowpb.Flow{Verdict: flowpb.Verdict_FORWARDED, Source: &flowpb.Endpoint{Namespace: "shop"}}) {
		t.Errorf("masked: %v", f)
	}
}
