package pipeline

import (
	"fmt"
	"strings"
)

// Counts are the summary counts of one sink's paths, or their sum.
//
// For one sink, every count covers the events on the paths from the sources
// to that sink: Received is what the upstream sources emitted plus what
// they reported lost, Filtered/Sampled/RateLimited what transforms on those
// paths removed, Lost every event reported lost in the sink's stream (source
// losses, full buffers, sink failures, shutdown), and Delivered what the
// sink accepted. An event that reaches a sink by two paths (a fan-out that
// joins again) counts twice. The counts reconcile:
// Received = Delivered + Filtered + Sampled + RateLimited + Lost.
type Counts struct {
	Received, Delivered, Filtered, Sampled, RateLimited, Lost uint64
}

// Reconciles reports whether the counts add up.
func (c Counts) Reconciles() bool {
	return c.Received == c.Delivered+c.Filtered+c.Sampled+c.RateLimited+c.Lost
}

func (c *Counts) add(o Counts) {
	c.Received += o.Received
	c.Delivered += o.Delivered
	c.Filtered += o.Filtered
	c.Sampled += o.Sampled
	c.RateLimited += o.RateLimited
	c.Lost += o.Lost
}

func (c Counts) String() string {
	return fmt.Sprintf("received=%d delivered=%d filtered=%d sampled=%d rate_limited=%d lost=%d",
		c.Received, c.Delivered, c.Filtered, c.Sampled, c.RateLimited, c.Lost)
}

// SinkCounts are the counts of one sink.
type SinkCounts struct {
	Sink string
	Counts
}

// Summary is the account of a run: the total, summed over the sinks (so an
// event sent to two sinks counts twice), and the counts of each sink.
type Summary struct {
	Total Counts
	Sinks []SinkCounts
}

// Lines returns the summary lines printed at exit: the total, and one line
// per sink when there are several.
func (s *Summary) Lines() []string {
	lines := []string{"flowbus: " + s.Total.String()}
	if len(s.Sinks) > 1 {
		for _, k := range s.Sinks {
			lines = append(lines, fmt.Sprintf("flowbus: sink=%s %s", k.Sink, k.Counts))
		}
	}
	return lines
}

func (s *Summary) String() string { return strings.Join(s.Lines(), "\n") }

// Summary computes the counts from the components' counters. It is exact
// once Run has returned, and a consistent-enough snapshot while it runs.
func (p *Pipeline) Summary() *Summary {
	s := &Summary{}
	for _, k := range p.sinks {
		var c Counts
		for _, n := range p.nodes {
			paths := pathsTo(n, k)
			if paths == 0 {
				continue
			}
			switch n.kind {
			case kindSource:
				c.Received += paths * (n.stats.out.Load() + n.stats.srcLost.Load())
			case kindTransform:
				removed := paths * n.stats.removed.Load()
				switch n.drops {
				case DropsSampled:
					c.Sampled += removed
				case DropsRateLimited:
					c.RateLimited += removed
				default:
					c.Filtered += removed
				}
			}
		}
		c.Delivered = k.stats.out.Load()
		c.Lost = k.loss.total.Load()
		s.Sinks = append(s.Sinks, SinkCounts{Sink: k.name, Counts: c})
		s.Total.add(c)
	}
	return s
}

func pathsTo(n, sink *node) uint64 {
	for _, d := range n.down {
		if d.sink == sink {
			return d.paths
		}
	}
	return 0
}
