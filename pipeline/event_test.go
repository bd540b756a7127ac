package pipeline_test

import (
	"testing"

	"google.golang.org/protobuf/types/known/timestamppb"

	flowpb "github.com/flowbus/flowbus/flow"
	"github.com/flowbus/flowbus/pipeline"
)

// TestEventTimestamp: the envelope's time first, else the flow's.
func TestEventTimestamp(t *testing.T) {
	env, own := timestamppb.New(timestamppb.Now().AsTime()), &timestamppb.Timestamp{Seconds: 7}
	for _, c := range []struct {
		name string
		e    pipeline.Event
		want *timestamppb.Timestamp
	}{
		{"envelope", pipeline.Event{Time: env, Flow: &flowpb.Flow{Time: own}}, env},
		{"the flow's", pipeline.Event{Flow: &flowpb.Flow{Time: own}}, own},
		{"a LostEvent's envelope", pipeline.Event{Time: env, Lost: &flowpb.LostEvent{}}, env},
		{"none", pipeline.Event{Flow: &flowpb.Flow{}}, nil},
		{"empty", pipeline.Event{}, nil},
	} {
		if got := c.e.Timestamp(); got != c.want {
			t.Errorf("%s: %v, want %v", c.name, got, c.want)
		}
	}
}

// TestBatchReuse checks that the batch released last is the next one
// handed out (its storage is the warm one), and that a reused batch comes
// back empty, with one reference and no Ack.
func TestBatchReuse(t *testing.T) {
	a, b := pipeline.NewBatch(), pipeline.NewBatch()
	a.Next().Flow = &flowpb.Flow{Uuid: "a"}
	b.Next().Flow = &flowpb.Flow{Uuid: "b"}
	b.SetAck(pipeline.NewAck(func(bool) {}))
	a.Release()
	b.Release()
	got := []*pipeline.Batch{pipeline.NewBatch(), pipeline.NewBatch()}
	for i, want := range []*pipeline.Batch{b, a} {
		if got[i] != want {
			t.Fatalf("NewBatch %d handed out %p, want %p (the batch released last first)", i, got[i], want)
		}
		if got[i].Len() != 0 || got[i].InputBytes() != 0 || got[i].Ack() != nil {
			t.Fatalf("reused batch not empty: %d events, %d bytes, ack %v", got[i].Len(), got[i].InputBytes(), got[i].Ack())
		}
	}
	for _, g := range got {
		g.Release()
	}
}
