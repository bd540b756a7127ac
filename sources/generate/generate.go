// Package generate is the `generate` source: realistic synthetic Hubble
// flows for demos, load tests and benchmarks. A small cluster (three nodes,
// shop, payments, streaming, telecom and system workloads, external hosts)
// holds interleaved conversations: HTTP, Kafka and DNS with their L7
// proxy records, plain TCP with SYN/SYN-ACK/ACK/PSH/FIN/RST, UDP, ICMPv4,
// ICMPv6, SCTP, policy verdicts (allowed, denied, audited) and drops with
// their reasons, over IPv4 and IPv6. Both directions of every connection
// appear. Flows are built in reused storage, without allocating; unpaced,
// several goroutines generate (see numStreams) and one emits, in order.
//
// The output is deterministic for a seed, apart from the flows' time. With
// no seed, the seed is taken from the clock (and logged), so that two runs
// do not repeat the same flow uuids. Its keys: `flowbus components
// generate`, or docs/components.md.
package generate

import (
	"context"
	"fmt"
	"log/slog"
	"runtime"
	"sync"
	"time"

	"github.com/flowbus/flowbus/pipeline"
)

func init() {
	pipeline.RegisterSource(pipeline.Spec{
		Type:        "generate",
		Summary:     "realistic synthetic Hubble flows (HTTP, Kafka, DNS, TCP, UDP, ICMP, SCTP, policy verdicts, drops) for demos, load tests and benchmarks",
		Description: `A small cluster (three nodes, several namespaces of workloads, external hosts) holds interleaved conversations, with both directions of every connection, L7 proxy records, policy verdicts and drops with their reasons, over IPv4 and IPv6. The output is deterministic for a seed, apart from the flows' time; with no seed the seed comes from the clock and is logged. With a count the source ends after count flows, and the pipeline drains and exits.`,
		Example: `type: generate
count: 100000
rate: 1000
seed: 42
`,
	}, New)
}

// Options are the source's config keys.
type Options struct {
	// Count is the number of flows to make; 0 makes them until stopped.
	Count uint64 `yaml:"count" default:"0" doc:"the number of flows to make; 0 makes them until the pipeline stops"`
	// Rate is the number of flows per second; 0 is as fast as possible.
	Rate float64 `yaml:"rate" default:"0" doc:"flows per second; 0 is as fast as possible"`
	// Seed makes the output reproducible; unset, it comes from the clock.
	Seed *uint64 `yaml:"seed" doc:"makes the output reproducible; default: the clock (logged)"`
}

// Source emits generated flows.
type Source struct {
	count uint64
	rate  float64
	seed  uint64
	log   *slog.Logger
	// workers is how many goroutines generate when unpaced.
	workers int
}

// New builds a generate source from its options.
func New(b *pipeline.Build, o *Options) (*Source, error) {
	if o.Rate < 0 {
		return nil, b.Errorf("rate", "generate source: rate must not be negative")
	}
	log := b.Log
	if log == nil {
		log = slog.Default()
	}
	s := &Source{count: o.Count, rate: o.Rate, log: log, workers: min(runtime.GOMAXPROCS(0), numStreams)}
	if o.Seed != nil {
		s.seed = *o.Seed
	} else {
		s.seed = uint64(time.Now().UnixNano())
		log.Info("generate: no seed set; using the clock", "seed", s.seed)
	}
	return s, nil
}

// batchesPerSecond is how often a paced source emits at most: at low rates
// batches are small, so that flows are spread over time.
const batchesPerSecond = 50

// Flows come from numStreams generators of the same cluster: flow i from
// stream (i/chunk) % numStreams. The output depends only on the seed, while
// up to numStreams goroutines can generate in parallel.
const (
	numStreams = 4
	chunk      = pipeline.DefaultBatchSize
)

type streams [numStreams]*Generator

func newStreams(seed uint64) *streams {
	var s streams
	for i := range s {
		s[i] = newStream(seed, i)
	}
	return &s
}

// Run emits count flows (or until ctx ends), paced to rate.
func (s *Source) Run(ctx context.Context, out pipeline.Output) error {
	st := newStreams(s.seed)
	if s.rate > 0 || s.workers <= 1 || (s.count > 0 && s.count <= chunk) {
		return s.runSerial(ctx, out, st)
	}
	return s.runParallel(ctx, out, st)
}

// runSerial generates on the calling goroutine.
func (s *Source) runSerial(ctx context.Context, out pipeline.Output, st *streams) error {
	size := chunk
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
		t := max(time.Now().UnixNano(), last+1)
		b := pipeline.NewBatch()
		for i := range n {
			idx := made + uint64(i)
			st[(idx/chunk)%numStreams].Fill(b.Next(), t+int64(i)*int64(step))
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

// runParallel generates chunks on s.workers goroutines (worker w makes the
// chunks c with c % workers == w, so each stream stays on one goroutine)
// and emits them in order, setting their times as it goes.
func (s *Source) runParallel(ctx context.Context, out pipeline.Output, st *streams) error {
	w := s.workers
	for numStreams%w != 0 { // each stream must stay on one goroutine
		w--
	}
	var chunks uint64 // 0: endless
	if s.count > 0 {
		chunks = (s.count + chunk - 1) / chunk
	}
	wctx, cancel := context.WithCancel(ctx)
	chans := make([]chan *pipeline.Batch, w)
	var wg sync.WaitGroup
	for k := range w {
		ch := make(chan *pipeline.Batch, 2)
		chans[k] = ch
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer close(ch)
			for c := uint64(k); chunks == 0 || c < chunks; c += uint64(w) {
				n := uint64(chunk)
				if s.count > 0 {
					n = min(n, s.count-c*chunk)
				}
				g := st[c%numStreams]
				b := pipeline.NewBatch()
				for range n {
					g.Fill(b.Next(), 0) // the emitter sets the time
				}
				select {
				case ch <- b:
				case <-wctx.Done():
					b.Release()
					return
				}
			}
		}()
	}
	defer func() {
		cancel()
		for _, ch := range chans {
			for b := range ch {
				b.Release()
			}
		}
		wg.Wait()
	}()
	var last int64
	for c := uint64(0); ; c++ {
		var b *pipeline.Batch
		select {
		case b = <-chans[c%uint64(w)]:
		case <-ctx.Done():
			return nil
		}
		if b == nil {
			return nil // every chunk is emitted
		}
		t := max(time.Now().UnixNano(), last+1)
		for i := range b.Events {
			ts := b.Events[i].Time
			ts.Seconds, ts.Nanos = (t+int64(i))/1e9, int32((t+int64(i))%1e9)
		}
		last = t + int64(b.Len()-1)
		if err := out.Emit(ctx, b); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("generate: emit: %w", err)
		}
	}
}
