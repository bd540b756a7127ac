//go:build linux

package ebpf

import (
	"context"
	"log/slog"
	"net"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	"gopkg.in/yaml.v3"

	"github.com/flowbus/flowbus/bpf/bpftest"
	flowpb "github.com/flowbus/flowbus/flow"
	"github.com/flowbus/flowbus/pipeline"
)

// countingOutput counts what the source emits and releases the batches.
type countingOutput struct {
	events, lost atomic.Uint64
}

func (c *countingOutput) Emit(ctx context.Context, b *pipeline.Batch) error {
	c.events.Add(uint64(b.Len()))
	b.Release()
	return nil
}

func (c *countingOutput) Lost(_ flowpb.LostEventSource, _ int32, n uint64) { c.lost.Add(n) }

// BenchmarkVethUDP sends b.N 64-byte UDP datagrams through a veth pair,
// without the source and with it attached on both directions of the host
// end (capture_length 128, 64 pages per CPU: the perf rings, or a ring
// buffer of the same total size). Paced cases send at 20k or 100k
// packets/s. Metrics: pkts/s through the veth, lost samples, events
// emitted, and the CPU time (user+system) of the thread running the
// source's reader and decoder per event it emitted and per packet sent. On
// a shared 2-vCPU machine the unpaced cases starve the reader; the paced
// ones show the default buffer's headroom.
func BenchmarkVethUDP(b *testing.B) {
	bpftest.RequireRoot(b)
	p := bpftest.NewPair(b)
	for _, c := range []struct {
		name, cfg string
		rate      int // packets/s; 0 = as fast as possible
	}{
		{"baseline", "", 0},
		{"perf,aggregation=none", "aggregation: none\nevent_buffer: perf", 0},
		{"ring,aggregation=none", "aggregation: none\nevent_buffer: ring", 0},
		{"perf,aggregation=none,rate=20k", "aggregation: none\nevent_buffer: perf", 20000},
		{"ring,aggregation=none,rate=20k", "aggregation: none\nevent_buffer: ring", 20000},
		{"perf,aggregation=none,rate=100k", "aggregation: none\nevent_buffer: perf", 100000},
		{"ring,aggregation=none,rate=100k", "aggregation: none\nevent_buffer: ring", 100000},
		{"ring,aggregation=connection", "aggregation: connection\nevent_buffer: ring", 0},
	} {
		b.Run(c.name, func(b *testing.B) {
			udp := listenUDP(b, p, p.PeerIP)
			var (
				out  countingOutput
				stop func() (time.Duration, error)
			)
			if c.cfg != "" {
				stop = runMeasured(b, ifaceYAML(p, c.cfg), &out)
			}
			uc, err := net.DialUDP("udp", nil, udp)
			if err != nil {
				b.Fatal(err)
			}
			defer uc.Close()
			msg := make([]byte, 64)
			b.ResetTimer()
			start := time.Now()
			for i := range b.N {
				if c.rate > 0 && i%100 == 0 {
					// Pace in bursts of 100 packets.
					if d := time.Duration(i) * time.Second / time.Duration(c.rate); time.Since(start) < d {
						time.Sleep(d - time.Since(start))
					}
				}
				if _, err := uc.Write(msg); err != nil {
					b.Fatal(err)
				}
			}
			elapsed := time.Since(start)
			b.StopTimer()
			b.ReportMetric(float64(b.N)/elapsed.Seconds(), "pkts/s")
			if stop == nil {
				return
			}
			if strings.HasPrefix(c.cfg, "aggregation: none") {
				// Every datagram is a sample: wait for all of them.
				deadline := time.Now().Add(10 * time.Second)
				for out.events.Load()+out.lost.Load() < uint64(b.N) && time.Now().Before(deadline) {
					time.Sleep(time.Millisecond)
				}
			}
			cpu, err := stop()
			if err != nil {
				b.Fatal(err)
			}
			ev := out.events.Load()
			b.ReportMetric(float64(out.lost.Load()), "lost")
			b.ReportMetric(float64(ev), "events")
			if ev > 0 {
				b.ReportMetric(float64(cpu.Nanoseconds())/float64(ev), "reader-ns/event")
			}
			b.ReportMetric(float64(cpu.Nanoseconds())/float64(b.N), "reader-ns/pkt")
		})
	}
}

// runMeasured starts the source and runs it on a locked thread; stop
// cancels it and returns the thread's CPU time (user+system).
func runMeasured(b *testing.B, cfg string, out pipeline.Output) func() (time.Duration, error) {
	b.Helper()
	var node yaml.Node
	if err := yaml.Unmarshal([]byte(cfg), &node); err != nil {
		b.Fatal(err)
	}
	s, err := pipeline.Make(&pipeline.Build{Name: "bench", Type: "ebpf", NodeName: "bench", Log: slog.New(slog.DiscardHandler)}, node.Content[0], New)
	if err != nil {
		b.Fatal(err)
	}
	src := s
	if err := src.Start(context.Background()); err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	type result struct {
		cpu time.Duration
		err error
	}
	done := make(chan result, 1)
	started := make(chan struct{})
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		before := threadCPU()
		close(started)
		err := src.Run(ctx, out)
		done <- result{threadCPU() - before, err}
	}()
	<-started
	return func() (time.Duration, error) {
		cancel()
		r := <-done
		return r.cpu, r.err
	}
}

func threadCPU() time.Duration {
	var ru unix.Rusage
	if err := unix.Getrusage(unix.RUSAGE_THREAD, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
