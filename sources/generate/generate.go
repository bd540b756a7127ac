// Package generate is the `generate` source: realistic synthetic Hubble
// flows for demos, load tests and benchmarks. A small cluster (three nodes,
// shop, payments, streaming, telecom and system workloads, external hosts)
// holds interleaved conversations: HTTP, Kafka and DNS with their L7
// proxy records, plain TCP with SYN/SYN-ACK/ACK/PSH/FIN/RST, UDP, ICMPv4,
// ICMPv6, SCTP, policy verdicts (allowed, denied, audited) and drops with
// their reasons, over IPv4 and IPv6. Both directions of every connection
// appear. Flows are built in reused storage, without allocating.
//
// The output is deterministic for a seed, apart from the flows' time. With
// no seed, the seed is taken from the clock (and logged), so that two runs
// do not repeat the same flow uuids.
package generate

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/flowbus/flowbus/pipeline"
	"github.com/flowbus/flowbus/pipeline/config"
)

func init() { pipeline.RegisterSource("generate", New) }

// Options are the source's config keys.
type Options struct {
	// Count is the number of flows to make; 0 makes them until stopped.
	Count uint64 `yaml:"count"`
	// Rate is the number of flows per second; 0 is as fast as possible.
	Rate float64 `yaml:"rate"`
	// Seed makes the output reproducible; unset, it comes from the clock.
	Seed *uint64 `yaml:"seed"`
}

// Source emits generated flows.
type Source struct {
	count uint64
	rate  float64
	seed  uint64
	log   *slog.Logger
}

// New builds a generate source from its config mapping.
func New(b *pipeline.Build, node *yaml.Node) (pipeline.Source, error) {
	var o Options
	if err := config.Decode(node, &o); err != nil {
		return nil, err
	}
	if o.Rate < 0 {
		return nil, config.Errorf(valueNode(node, "rate"), "generate source: rate must not be negative")
	}
	log := b.Log
	if log == nil {
		log = slog.Default()
	}
	s := &Source{count: o.Count, rate: o.Rate, log: log}
	if o.Seed != nil {
		s.seed = *o.Seed
	} else {
		s.seed = uint64(time.Now().UnixNano())
		log.Info("generate: no seed set; using the clock", "seed", s.seed)
	}
	return s, nil
}

// valueNode returns the value node of key in mapping n, or n.
func valueNode(n *yaml.Node, key string) *yaml.Node {
	if n != nil && n.Kind == yaml.MappingNode {
		for i := 0; i+1 < len(n.Content); i += 2 {
			if n.Content[i].Value == key {
				return n.Content[i+1]
			}
		}
	}
	return n
}

// batchesPerSecond is how often a paced source emits at most: at low rates
// batches are small, so that flows are spread over time.
const batchesPerSecond = 50

// Run emits count flows (or until ctx ends), paced to rate.
func (s *Source) Run(ctx context.Context, out pipeline.Output) error {
	g := NewGenerator(s.seed)
	size := pipeline.DefaultBatchSize
	var step time.Duration = 1 // between flow times when unpaced
	if s.rate > 0 {
		size = min(size, max(1, int(s.rate/batchesPerSecond)))
		step = time.Duration(float64(time.Second) / s.rate)
	}
	start := time.Now()
	var made uint64
	var last int64 // time of the last flow, unix ns
	var timer *time.Timer
	for s.count == 0 || made < s.count {
		if ctx.Err() != nil {
			return nil
		}
		n := size
		if s.count > 0 {
			n = int(min(uint64(n), s.count-made))
		}
		t := time.Now().UnixNano()
		if t <= last {
			t = last + 1
		}
		b := pipeline.NewBatch()
		for i := range n {
			g.Fill(b.Next(), t+int64(i)*int64(step))
		}
		last = t + int64(n-1)*int64(step)
		made += uint64(n)
		if err := out.Emit(ctx, b); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("generate: emit: %w", err)
		}
		if s.rate > 0 {
			// Sleep until this batch is due; a late source does not sleep.
			due := start.Add(time.Duration(float64(made) / s.rate * float64(time.Second)))
			if wait := time.Until(due); wait > 0 {
				if timer == nil {
					timer = time.NewTimer(wait)
				} else {
					timer.Reset(wait)
				}
				select {
				case <-ctx.Done():
					timer.Stop()
					return nil
				case <-timer.C:
				}
			}
		}
	}
	return nil
}
