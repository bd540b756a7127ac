package codec

import (
	"github.com/flowbus/flowbus/flow/observer"
	"github.com/flowbus/flowbus/pipeline"
)

// Envelope wraps e in an observer.GetFlowsResponse (allocating; for the
// reference encoders and tests).
func Envelope(e *pipeline.Event) *observer.GetFlowsResponse {
	env := &observer.GetFlowsResponse{NodeName: e.NodeName, Time: e.Time}
	switch {
	case e.Flow != nil:
		env.ResponseTypes = &observer.GetFlowsResponse_Flow{Flow: e.Flow}
	case e.Lost != nil:
		env.ResponseTypes = &observer.GetFlowsResponse_LostEvents{LostEvents: e.Lost}
	}
	return env
}
