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

// TestBatchReuse checks that a reused batch comes back empty, with one
// reference and no Ack (which batch comes back is batchStack's; see
// TestBatchStack).
func TestBatchReuse(t *testing.T) {
	a := pipeline.NewBatch()
	a.Next().Flow = &flowpb.Flow{Uuid: "a"}
	a.AddInputBytes(100)
	a.SetAck(pipeline.NewAck(func(bool) {}))
	a.Release()
	for range 8 {
		got := pipeline.NewBatch()
		if got.Len() != 0 || got.InputBytes() != 0 || got.Ack() != nil {
			t.Fatalf("reused batch not empty: %d events, %d bytes, ack %v", got.Len(), got.InputBytes(), got.Ack())
		}
		got.Retain()
		got.Release()
		got.Release() // one reference: a further Release panics
	}
}
