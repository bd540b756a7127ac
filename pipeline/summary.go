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
//
// A sink with a disk buffer adds two counts: Recovered, the events an
// earlier run left in the buffer (found at start), and Buffered, the
// events this run leaves in it (at exit) for the next. Then
// Received + Recovered = Delivered + Filtered + Sampled + RateLimited +
// Lost + Buffered.
type Counts struct {
	Received, Delivered, Filtered, Sampled, RateLimited, Lost uint64
	Recovered, Buffered                                       uint64
}

// Reconciles reports whether the counts add up.
func (c Counts) Reconciles() bool {
	return c.Received+c.Recovered == c.Delivered+c.Filtered+c.Sampled+c.RateLimited+c.Lost+c.Buffered
}

func (c *Counts) add(o Counts) {
	c.Received += o.Received
	c.Delivered += o.Delivered
	c.Filtered += o.Filtered
	c.Sampled += o.Sampled
	c.RateLimited += o.RateLimited
	c.Lost += o.Lost
	c.Recovered += o.Recovered
	c.Buffered += o.Buffered
}

// String formats the counts as the summary line does; recovered and
// buffered appear when a disk buffer makes them non-zero.
func (c Counts) String() string {
	s := fmt.Sprintf("received=%d delivered=%d filtered=%d sampled=%d rate_limited=%d lost=%d",
		c.Received, c.Delivered, c.Filtered, c.Sampled, c.RateLimited, c.Lost)
	if c.Recovered > 0 || c.Buffered > 0 {
		s += fmt.Sprintf(" recovered=%d buffered=%d", c.Recovered, c.Buffered)
	}
	return s
}

// SinkCounts are the counts of one sink.
type SinkCounts struct {
	Sink string
	Counts
}

// Summary is the account of a run: the total, summed over the sinks (so an
// event sent to two sinks counts twice), and the counts of each sink. A
// Reloader's summary sums its generations (the counts of sinks with the
// same name add up) and counts the reloads.
type Summary struct {
	Total Counts
	Sinks []SinkCounts

	// Reloads is the number of reloads that replaced the pipeline;
	// ReloadsFailed the number of reloads rejected or rolled back.
	Reloads, ReloadsFailed int
}

// add sums o into s: the counts, sink by sink, and the reloads.
func (s *Summary) add(o *Summary) {
	if o == nil {
		return
	}
	s.Total.add(o.Total)
next:
	for _, k := range o.Sinks {
		for i := range s.Sinks {
			if s.Sinks[i].Sink == k.Sink {
				s.Sinks[i].add(k.Counts)
				continue next
			}
		}
		s.Sinks = append(s.Sinks, k)
	}
	s.Reloads += o.Reloads
	s.ReloadsFailed += o.ReloadsFailed
}

// Lines returns the summary lines printed at exit: the total, and one line
// per sink when there are several. When reloads were requested, the total
// line ends with reloads=N (and reloads_failed=N when some failed).
func (s *Summary) Lines() []string {
	total := "flowbus: " + s.Total.String()
	if s.Reloads > 0 || s.ReloadsFailed > 0 {
		total += fmt.Sprintf(" reloads=%d", s.Reloads)
	}
	if s.ReloadsFailed > 0 {
		total += fmt.Sprintf(" reloads_failed=%d", s.ReloadsFailed)
	}
	lines := []string{total}
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
		c.Delivered = k.stats.delivered()
		c.Lost = k.loss.total.Load()
		if k.disk != nil {
			c.Recovered, c.Buffered = k.disk.recovered.Load(), k.disk.buffered.Load()
		}
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
