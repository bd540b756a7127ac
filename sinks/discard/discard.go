// Package discard is the `discard` sink: it counts events and drops them,
// for benchmarks and for measuring the rest of a pipeline.
package discard

import (
	"context"
	"fmt"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/flowbus/flowbus/pipeline"
)

func init() {
	pipeline.RegisterSink(pipeline.Spec{
		Type:    "discard",
		Summary: "counts events and drops them, for benchmarks and for measuring the rest of a pipeline",
		Example: `type: discard
inputs: [flows]
`,
	}, New)
}

// Options: the discard sink has no keys of its own.
type Options struct{}

// Sink drops every event it is given; Write never fails.
type Sink struct {
	events  atomic.Uint64
	counter prometheus.Counter
}

// New builds a discard sink.
func New(b *pipeline.Build, _ *Options) (*Sink, error) {
	s := &Sink{counter: prometheus.NewCounter(prometheus.CounterOpts{
		Name: "flowbus_discard_events_total",
		Help: "Events dropped by the discard sink.",
	})}
	if b.Metrics != nil {
		if err := b.Metrics.Register(s.counter); err != nil {
			return nil, fmt.Errorf("discard sink %s: register metrics: %w", b.Name, err)
		}
	}
	return s, nil
}

// Write counts the events of b and drops them.
func (s *Sink) Write(_ context.Context, b *pipeline.Batch) (int, error) {
	n := uint64(b.Len())
	s.events.Add(n)
	s.counter.Add(float64(n))
	return 0, nil
}

// Events is the number of events dropped so far.
func (s *Sink) Events() uint64 { return s.events.Load() }

// Close does nothing.
func (s *Sink) Close(context.Context) error { return nil }
