//go:build flowbus_poison

package pipeline_test

import (
	"testing"
	"unsafe"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/timestamppb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	flowpb "github.com/flowbus/flowbus/flow"
	"github.com/flowbus/flowbus/pipeline"
)

// In the poison build, releasing the last reference overwrites the batch's
// flows, including the spare storage of slots a transform removed, so a
// holder of a released flow reads the poison.
func TestReleasePoisonsFlows(t *testing.T) {
	b := pipeline.NewBatch()
	fill := func(name string) *flowpb.Flow {
		e := b.Next()
		f := e.FlowStorage()
		f.NodeName = name
		f.Time = &timestamppb.Timestamp{Seconds: 1, Nanos: 2}
		f.IsReply = wrapperspb.Bool(false)
		f.Source = &flowpb.Endpoint{Labels: []string{"k8s:app=a"}, ID: 7}
		f.Extensions = nil
		e.Time = f.Time
		return f
	}
	kept, removed := fill("kept"), fill("removed")
	b.Keep(func(e *pipeline.Event) bool { return e.Flow.NodeName == "kept" })
	b.Retain()
	b.Release()
	if kept.NodeName != "kept" {
		t.Fatal("a batch still referenced was poisoned")
	}
	b.Release()
	for _, f := range []*flowpb.Flow{kept, removed} {
		if f.NodeName != pipeline.PoisonString || f.Source.Labels[0] != pipeline.PoisonString ||
			f.Source.ID != 0xDEADBEEF || !f.IsReply.Value {
			t.Errorf("released flow not poisoned: %v", f)
		}
		if _, err := protojson.Marshal(f); err == nil {
			t.Errorf("a released flow still encodes: %v", f)
		}
	}
}

// In the poison build, a batch's own storage (Batch.Alloc) is overwritten
// when it is reused, so a string kept past the release reads 0xDE bytes.
func TestReleasePoisonsStorage(t *testing.T) {
	b := pipeline.NewBatch()
	buf := b.Alloc(4)
	copy(buf, "node")
	kept := unsafe.String(&buf[0], len(buf))
	b.Release()
	if kept != "\xde\xde\xde\xde" {
		t.Fatalf("a string in released storage reads %q", kept)
	}
}
