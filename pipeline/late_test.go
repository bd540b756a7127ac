package pipeline_test

import (
	"context"
	"sync"
	"testing"

	dto "github.com/prometheus/client_model/go"

	"github.com/flowbus/flowbus/pipeline"
)

// lateSink accepts every event in Write and, in Close, reports lose_at_close
// of them lost after all, as a Parquet sink does when it cannot complete a
// file (pipeline.LateLoser). beforeLate, when set, runs just before.
type lateSink struct {
	LoseAtClose int `yaml:"lose_at_close"`
	lose        func(int)
}

var (
	lateMu     sync.Mutex
	beforeLate func()
)

func (s *lateSink) SetLateLoss(f func(int)) { s.lose = f }
func (s *lateSink) Write(context.Context, *pipeline.Batch) (int, error) {
	return 0, nil
}
func (s *lateSink) Close(context.Context) error {
	lateMu.Lock()
	f := beforeLate
	lateMu.Unlock()
	if f != nil {
		f()
	}
	s.lose(s.LoseAtClose)
	return nil
}

func init() {
	pipeline.RegisterSink(pipeline.Spec{Type: "test-late", Summary: "test sink"}, func(b *pipeline.Build, s *lateSink) (*lateSink, error) {
		return s, nil
	})
}

// sinkMetric returns the value of a metric of the sink "s" with the given
// reason label ("" for none), from p's registry.
func sinkMetric(t *testing.T, p *pipeline.Pipeline, name, reason string) float64 {
	t.Helper()
	mfs, err := p.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			var comp, why string
			for _, l := range m.GetLabel() {
				switch l.GetName() {
				case "component":
					comp = l.GetValue()
				case "reason":
					why = l.GetValue()
				}
			}
			if comp != "s" || why != reason {
				continue next
			}
			return value(m)
		}
	}
	return -1
}

func value(m *dto.Metric) float64 {
	if c := m.GetCounter(); c != nil {
		return c.GetValue()
	}
	return m.GetGauge().GetValue()
}

// Events a sink accepted and lost afterwards (a file that could not be
// completed) count in their own counter: every Prometheus counter only goes
// up, and the summary moves them from delivered to lost and reconciles.
func TestLateLossCountersNeverDecrease(t *testing.T) {
	p := load(t, `
metrics: {listen: ""}
sources:
  gen: {type: test-count, count: 1000, batch: 10}
sinks:
  s: {type: test-late, inputs: [gen], lose_at_close: 300}
`)
	p.Handler() // registers the collector
	var outBefore float64
	lateMu.Lock()
	beforeLate = func() { outBefore = sinkMetric(t, p, "flowbus_component_events_out_total", "") }
	lateMu.Unlock()
	defer func() { lateMu.Lock(); beforeLate = nil; lateMu.Unlock() }()

	s := run(t, p, context.Background())
	if s.Total.Delivered != 700 || s.Total.Lost != 300 {
		t.Errorf("summary %v, want delivered=700 lost=300", s.Total)
	}
	out := sinkMetric(t, p, "flowbus_component_events_out_total", "")
	if outBefore != 1000 || out < outBefore {
		t.Errorf("flowbus_component_events_out_total of the sink went from %v to %v: a counter must never decrease", outBefore, out)
	}
	for _, c := range []struct {
		name, reason string
		want         float64
	}{
		{"flowbus_component_events_lost_total", "sink_late", 300},
		{"flowbus_component_events_lost_total", "sink_failed", 0},
		{"flowbus_sink_events_lost_total", "", 300},
	} {
		if got := sinkMetric(t, p, c.name, c.reason); got != c.want {
			t.Errorf("%s{reason=%q} = %v, want %v", c.name, c.reason, got, c.want)
		}
	}
}
