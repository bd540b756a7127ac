package sinktest

import (
	"context"

	"github.com/prometheus/client_golang/prometheus"
	"gopkg.in/yaml.v3"

	"github.com/flowbus/flowbus/pipeline"
)

// Phased is a source for runtime tests: it emits Phases[i] batches of Per
// flows in phase i, numbering the flows from 0, and calls Before[i-1]
// before each phase after the first (a test hook that may block, e.g. to
// start or end a broker outage).
type Phased struct {
	Phases []int
	Per    int
	Before []func()
}

// Total is the number of flows p emits.
func (p *Phased) Total() int {
	n := 0
	for _, b := range p.Phases {
		n += b * p.Per
	}
	return n
}

// Run implements pipeline.Source.
func (p *Phased) Run(ctx context.Context, out pipeline.Output) error {
	n := 0
	for i, batches := range p.Phases {
		if i > 0 && i-1 < len(p.Before) && p.Before[i-1] != nil {
			p.Before[i-1]()
		}
		for k := 0; k < batches; k++ {
			if err := out.Emit(ctx, Batch(n, p.Per)); err != nil {
				return nil
			}
			n += p.Per
		}
	}
	return nil
}

// RegisterPhased registers typ as a source type whose every instance is p.
func RegisterPhased(typ string, p *Phased) {
	pipeline.RegisterSource(typ, func(*pipeline.Build, *yaml.Node) (pipeline.Source, error) { return p, nil })
}

// Metric sums the values of the counters named name in reg.
func Metric(reg *prometheus.Registry, name string) float64 {
	mfs, err := reg.Gather()
	if err != nil {
		return -1
	}
	sum := 0.0
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			sum += m.GetCounter().GetValue()
		}
	}
	return sum
}
