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
