package redact

import (
	"testing"

	"google.golang.org/protobuf/proto"

	flowpb "github.com/flowbus/flowbus/flow"
	"github.com/flowbus/flowbus/flow/fieldpath"
	"github.com/flowbus/flowbus/pipeline"
	"github.com/flowbus/flowbus/sources/generate"
)

// TestGoPathClear clears paths through the generated structs and through
// protoreflect (fieldpath.Path.Clear) on generated flows: the results are
// the same.
func TestGoPathClear(t *testing.T) {
	paths := []string{
		"time", "IP", "IP.source", "l4.TCP", "l4.UDP.destination_port", "l4.TCP.flags.SYN", "l4.ICMPv6",
		"source.labels", "destination", "l7", "l7.http", "l7.http.headers", "l7.dns.ips", "l7.kafka.api_key",
		"tunnel.IP.destination", "is_reply", "Summary", "egress_allowed_by", "trace_context.parent.trace_id",
	}
	g := generate.NewGenerator(9)
	var e pipeline.Event
	for _, s := range paths {
		p := fieldpath.MustParse(s)
		gp, ok := compileGoPath(p)
		if !ok {
			t.Errorf("%s: no Go path", s)
			continue
		}
		for i := range 2000 {
			g.Fill(&e, int64(i))
			want := proto.Clone(e.Flow).(*flowpb.Flow)
			p.Clear(want)
			gp.clear(e.Flow)
			if !proto.Equal(e.Flow, want) {
				t.Fatalf("%s:\n got %v\nwant %v", s, e.Flow, want)
			}
		}
	}
}

func TestGoPathOneof(t *testing.T) {
	f := &flowpb.Flow{L4: &flowpb.Layer4{Protocol: &flowpb.Layer4_UDP{UDP: &flowpb.UDP{DestinationPort: 53}}}}
	for _, s := range []string{"l4.TCP", "l4.TCP.destination_port", "l7.http.url"} {
		gp, _ := compileGoPath(fieldpath.MustParse(s))
		gp.clear(f) // inactive members and unset parents: nothing happens
	}
	if f.L4.GetUDP().GetDestinationPort() != 53 || f.L7 != nil {
		t.Fatalf("flow changed: %v", f)
	}
	gp, _ := compileGoPath(fieldpath.MustParse("l4.UDP.destination_port"))
	gp.clear(f)
	if f.L4.GetUDP() == nil || f.L4.GetUDP().DestinationPort != 0 {
		t.Fatalf("port not cleared: %v", f)
	}
	gp, _ = compileGoPath(fieldpath.MustParse("l4.UDP"))
	gp.clear(f)
	if f.L4 == nil || f.L4.Protocol != nil {
		t.Fatalf("UDP not cleared: %v", f)
	}
}
