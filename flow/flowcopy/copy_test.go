package flowcopy_test

import (
	"math/rand/v2"
	"testing"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/anypb"

	flowpb "github.com/flowbus/flowbus/flow"
	"github.com/flowbus/flowbus/flow/flowcopy"
	"github.com/flowbus/flowbus/internal/sinktest"
	"github.com/flowbus/flowbus/internal/testflow"
)

// scribble overwrites, in place, every list element and byte of m and of
// the messages it reaches, as a source reusing its storage would.
func scribble(m protoreflect.Message) {
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		switch {
		case fd.IsList():
			l := v.List()
			for i := range l.Len() {
				switch {
				case fd.Message() != nil:
					scribble(l.Get(i).Message())
				case fd.Kind() == protoreflect.StringKind:
					l.Set(i, protoreflect.ValueOfString("scribbled"))
				}
			}
		case fd.Message() != nil:
			scribble(v.Message())
		case fd.Kind() == protoreflect.BytesKind:
			for i := range v.Bytes() {
				v.Bytes()[i] = 0xDE
			}
		}
		return true
	})
}

// TestCopy: a copy equals its source, reusing storage of any earlier shape,
// and shares nothing mutable with it.
func TestCopy(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	dst := new(flowpb.Flow)
	for i := range 2000 {
		src := testflow.Random(r)
		if i%7 == 0 {
			any, err := anypb.New(&flowpb.TCPFlags{SYN: true})
			if err != nil {
				t.Fatal(err)
			}
			src.Extensions = any
		}
		want := proto.Clone(src)
		flowcopy.Flow(dst, src)
		if !proto.Equal(dst, want) {
			t.Fatalf("flow %d: copy\n%v\nwant\n%v", i, dst, want)
		}
		scribble(src.ProtoReflect())
		if !proto.Equal(dst, want) {
			t.Fatalf("flow %d: the copy shares storage with its source:\n%v", i, dst)
		}
	}
	lost := &flowpb.LostEvent{Source: flowpb.LostEventSource_PERF_EVENT_RING_BUFFER, NumEventsLost: 7}
	var dl flowpb.LostEvent
	flowcopy.LostEvent(&dl, lost)
	if !proto.Equal(&dl, lost) {
		t.Fatalf("lost event: %v", &dl)
	}
}

// TestCopyAllocs: copying flows of the same shape allocates nothing once
// the destination has that shape.
func TestCopyAllocs(t *testing.T) {
	var a, b flowpb.Flow
	sinktest.Flow(&a, 0)
	sinktest.Flow(&b, 1)
	dst := new(flowpb.Flow)
	flowcopy.Flow(dst, &a)
	n := testing.AllocsPerRun(100, func() {
		flowcopy.Flow(dst, &b)
		flowcopy.Flow(dst, &a)
	})
	if n != 0 {
		t.Fatalf("%v allocations per copy, want 0", n)
	}
}

func BenchmarkCopy(b *testing.B) {
	var src flowpb.Flow
	sinktest.Flow(&src, 0)
	dst := new(flowpb.Flow)
	b.ReportAllocs()
	for b.Loop() {
		flowcopy.Flow(dst, &src)
	}
}
