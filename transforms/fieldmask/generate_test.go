package fieldmask

import (
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	flowpb "github.com/flowbus/flowbus/flow"
	"github.com/flowbus/flowbus/pipeline"
	"github.com/flowbus/flowbus/sources/generate"
)

// refTree is a field mask as Hubble's fieldmask package builds it.
type refTree map[string]refTree

func newRefTree(paths []string) refTree {
	t := refTree{}
	for _, p := range paths {
		n := t
		parts := strings.Split(p, ".")
		for i, part := range parts {
			child, seen := n[part]
			if seen && child == nil {
				break
			}
			if i == len(parts)-1 {
				n[part] = nil
				break
			}
			if !seen {
				child = refTree{}
				n[part] = child
			}
			n = child
		}
	}
	return t
}

// refCopy is the copy Hubble's exporter makes into a fresh flow: leaves
// copied when set, interior messages created, oneof members followed only
// when active.
func refCopy(t refTree, dst, src protoreflect.Message) {
	fds := dst.Descriptor().Fields()
	for name, next := range t {
		fd := fds.ByName(protoreflect.Name(name))
		if next == nil {
			if src.Has(fd) {
				dst.Set(fd, src.Get(fd))
			}
			continue
		}
		if od := fd.ContainingOneof(); od != nil && src.WhichOneof(od) != fd {
			continue
		}
		refCopy(next, dst.Mutable(fd).Message(), src.Get(fd).Message())
	}
}

// TestGeneratedFlows masks flows of the generate source in place and
// compares them with the copy Hubble's exporter would make.
func TestGeneratedFlows(t *testing.T) {
	masks := [][]string{
		{"time", "node_name", "verdict", "source.namespace", "source.pod_name", "destination.namespace", "destination.pod_name"},
		{"IP", "l4.TCP.destination_port", "l4.UDP.destination_port", "l4.ICMPv4.type", "drop_reason_desc"},
		{"l7.http.url", "l7.http.code", "l7.dns.query", "l7.type", "l7.latency_ns", "source.labels", "source"},
		{"l4", "trace_observation_point", "is_reply", "traffic_direction", "policy_match_type", "Summary", "uuid"},
		{"ethernet.source", "tunnel.IP.source", "interface.name", "egress_allowed_by", "event_type.type"},
	}
	g := generate.NewGenerator(5)
	var e pipeline.Event
	for _, paths := range masks {
		m := build(t, "include: ["+strings.Join(paths, ", ")+"]")
		tree := newRefTree(paths)
		for i := range 4000 {
			g.Fill(&e, int64(i)*1e6)
			want := &flowpb.Flow{}
			refCopy(tree, want.ProtoReflect(), e.Flow.ProtoReflect())
			m.Apply(&e)
			if !proto.Equal(e.Flow, want) {
				t.Fatalf("mask %v:\n got %v\nwant %v", paths, e.Flow, want)
			}
			if e.Time != want.Time || e.NodeName != want.NodeName {
				t.Fatalf("envelope %v %q", e.Time, e.NodeName)
			}
		}
	}
}

// BenchmarkGenerated masks batches of 512 generated flows; b.N counts
// flows, generation is not timed. The mask names only messages every
// generated flow has, so nothing is created.
func BenchmarkGenerated(b *testing.B) {
	m := build(b, "include: [time, node_name, verdict, IP, source.namespace, source.pod_name, destination.namespace, destination.pod_name, Summary]")
	g := generate.NewGenerator(1)
	batch := pipeline.NewBatch()
	defer batch.Release()
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i += 512 {
		b.StopTimer()
		batch.Truncate(0)
		for j := range 512 {
			g.Fill(batch.Next(), int64(i+j))
		}
		b.StartTimer()
		m.Process(batch)
	}
}

func noGo(l *level) {
	l.goOK = false
	for _, s := range l.sub {
		noGo(s.next)
	}
}

// TestGoAndReflectAgree masks generated flows through the generated
// structs and through protoreflect: the results are the same.
func TestGoAndReflectAgree(t *testing.T) {
	for _, conf := range []string{
		"include: [time, verdict, source.namespace, l4.TCP.flags, l4.UDP, l7.http.url, l7.dns, IP.source, tunnel]",
		"include: [l7.kafka.topic, l7.type, destination, l4.ICMPv6.type, l4.SCTP, ethernet, trace_context.parent]",
	} {
		fast, slow := build(t, conf), build(t, conf)
		if !fast.include.goOK {
			t.Fatalf("%s: not compiled to Go fields", conf)
		}
		noGo(slow.include)
		g := generate.NewGenerator(21)
		var e pipeline.Event
		for i := range 5000 {
			g.Fill(&e, int64(i))
			other := pipeline.Event{Flow: proto.Clone(e.Flow).(*flowpb.Flow)}
			fast.Apply(&e)
			slow.Apply(&other)
			if !proto.Equal(e.Flow, other.Flow) {
				t.Fatalf("%s:\nGo      %v\nreflect %v", conf, e.Flow, other.Flow)
			}
		}
	}
}
