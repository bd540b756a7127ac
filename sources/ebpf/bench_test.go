//go:build linux

package ebpf

import (
	"context"
	"encoding/binary"
	"log/slog"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	"gopkg.in/yaml.v3"

	"github.com/flowbus/flowbus/bpf"
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

// BenchmarkVethUDP sends b.N 64-byte UDP datagrams through a veth pair
// with sendmmsg from two sockets on two threads (one sender alone reaches
// less than 100k/s on a small machine), without the source and with it
// attached on both directions of the host end (capture_length 128, drops
// off, the default buffer size: 64 pages per CPU for the perf rings, a
// ring buffer of at least 4 MiB). Paced cases send at 100k packets/s.
// Metrics: pkts/s through the veth, lost samples, events emitted, and the
// CPU time (user+system) of the thread running the source's reader and
// decoder per event it emitted and per packet sent.
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
		{"perf,aggregation=none,rate=100k", "aggregation: none\nevent_buffer: perf", 100000},
		{"ring,aggregation=none,rate=100k", "aggregation: none\nevent_buffer: ring", 100000},
		{"ring,aggregation=connection", "aggregation: connection\nevent_buffer: ring", 0},
	} {
		b.Run(c.name, func(b *testing.B) {
			udp := sinkUDP(b, p, p.PeerIP)
			var (
				out  countingOutput
				stop func() (time.Duration, error)
			)
			if c.cfg != "" {
				_, stop = runMeasured(b, ifaceYAML(p, c.cfg, "drops: false"), &out)
			}
			b.ResetTimer()
			elapsed, err := blast(udp, b.N, 2, c.rate)
			if err != nil {
				b.Fatal(err)
			}
			b.StopTimer()
			b.ReportMetric(float64(b.N)/elapsed.Seconds(), "pkts/s")
			if stop == nil {
				return
			}
			reportSource(b, c.cfg, &out, stop)
		})
	}
}

// reportSource waits, without aggregation, for a sample of every packet,
// stops the source and reports lost, events and the reader's CPU time.
func reportSource(b *testing.B, cfg string, out *countingOutput, stop func() (time.Duration, error)) {
	if strings.HasPrefix(cfg, "aggregation: none") {
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
}

// BenchmarkHookCost measures what the trace programs cost per packet at
// each hook, from the kernel's own statistics of the programs (run count
// and run time, kernel.bpf_stats_enabled): b.N 64-byte UDP datagrams from
// the host end of a veth pair, with two sendmmsg senders, the source
// watching that end (ring buffer, drops off). "unwatched" watches another
// pair: what the tracepoints cost for packets of interfaces flowbus does
// not watch (they run for every packet of every device on the host, in
// every namespace). Metrics per program (ingress, egress: trace_ingress and
// trace_egress for tc, trace_rx and trace_tx for tracepoint): ns per run
// and runs per datagram sent (other traffic on the host runs the
// tracepoints too), and pkts/s through the veth.
func BenchmarkHookCost(b *testing.B) {
	bpftest.RequireRoot(b)
	p := bpftest.NewPair(b)
	other := bpftest.NewPair(b)
	for _, c := range []struct {
		name, hook, aggregation string
		watch                   *bpftest.Pair
	}{
		{"tc,aggregation=none", "tc", "none", p},
		{"tracepoint,aggregation=none", "tracepoint", "none", p},
		{"tc,aggregation=connection", "tc", "connection", p},
		{"tracepoint,aggregation=connection", "tracepoint", "connection", p},
		{"tracepoint,unwatched", "tracepoint", "none", other},
	} {
		b.Run(c.name, func(b *testing.B) {
			udp := sinkUDP(b, p, p.PeerIP)
			var out countingOutput
			cfg := ifaceYAML(c.watch, "aggregation: "+c.aggregation, "drops: false", "event_buffer: ring", "hook: "+c.hook)
			src, stop := runMeasured(b, cfg, &out)
			defer stop()
			stats, err := bpf.EnableStats()
			if err != nil {
				b.Fatal(err)
			}
			defer stats.Close()
			src.mu.Lock()
			objs := src.objs
			src.mu.Unlock()
			before, err := objs.Stats()
			if err != nil {
				b.Fatal(err)
			}
			b.ResetTimer()
			elapsed, err := blast(udp, b.N, 2, 0)
			if err != nil {
				b.Fatal(err)
			}
			b.StopTimer()
			after, err := objs.Stats()
			if err != nil {
				b.Fatal(err)
			}
			b.ReportMetric(float64(b.N)/elapsed.Seconds(), "pkts/s")
			names := map[string]string{"trace_ingress": "ingress", "trace_egress": "egress", "trace_rx": "ingress", "trace_tx": "egress"}
			for name, a := range after {
				runs := a.Runs - before[name].Runs
				if runs == 0 {
					continue
				}
				ns := (a.Runtime - before[name].Runtime).Nanoseconds()
				b.ReportMetric(float64(ns)/float64(runs), names[name]+"-ns/run")
				b.ReportMetric(float64(runs)/float64(b.N), names[name]+"-runs/pkt")
			}
		})
	}
}

// BenchmarkInject feeds the source's reader at rates no sender on a small
// machine reaches: the trace program attached to the veth runs b.N times
// with BPF_PROG_TEST_RUN on a 64-byte UDP frame (in rounds of 1,000, paced
// at the rate asked, or back to back), so the program and its ring or
// perf output run in the kernel as for real packets and the reader
// consumes every sample for real, but without the network stack's cost
// per packet. capture_length 128, aggregation off, the default buffer
// sizes. Metrics as BenchmarkVethUDP's; pkts/s is the rate of program runs.
func BenchmarkInject(b *testing.B) {
	bpftest.RequireRoot(b)
	p := bpftest.NewPair(b)
	frame := udpFrame(p)
	const round = 1000
	for _, c := range []struct {
		name, buffer string
		rate         int
	}{
		{"perf,rate=100k", "perf", 100000},
		{"ring,rate=100k", "ring", 100000},
		{"perf,rate=200k", "perf", 200000},
		{"ring,rate=200k", "ring", 200000},
		{"perf,unpaced", "perf", 0},
		{"ring,unpaced", "ring", 0},
	} {
		b.Run(c.name, func(b *testing.B) {
			var out countingOutput
			cfg := ifaceYAML(p, "aggregation: none", "drops: false", "direction: egress", "event_buffer: "+c.buffer)
			src, stop := runMeasured(b, cfg, &out)
			src.mu.Lock()
			objs := src.objs
			src.mu.Unlock()
			b.ResetTimer()
			start := time.Now()
			for done := 0; done < b.N; {
				if c.rate > 0 {
					if d := time.Duration(done) * time.Second / time.Duration(c.rate); time.Since(start) < d {
						time.Sleep(d - time.Since(start))
					}
				}
				n := min(round, b.N-done)
				if err := objs.RunTrace(bpf.Egress, p.HostIndex, frame, uint32(n)); err != nil {
					b.Fatal(err)
				}
				done += n
			}
			elapsed := time.Since(start)
			b.StopTimer()
			b.ReportMetric(float64(b.N)/elapsed.Seconds(), "pkts/s")
			reportSource(b, "aggregation: none", &out, stop)
		})
	}
}

// udpFrame is an Ethernet frame with a UDP datagram of 64 bytes from the
// host end of the pair to the peer.
func udpFrame(p *bpftest.Pair) []byte {
	f := make([]byte, 14+20+8+64)
	copy(f[0:6], p.PeerMAC)
	copy(f[6:12], p.HostMAC)
	f[12], f[13] = 0x08, 0x00
	ip := f[14:34]
	ip[0], ip[8], ip[9] = 0x45, 64, 17
	binary.BigEndian.PutUint16(ip[2:], uint16(len(f)-14))
	copy(ip[12:16], p.HostIP.To4())
	copy(ip[16:20], p.PeerIP.To4())
	var sum uint32
	for i := 0; i < 20; i += 2 {
		sum += uint32(binary.BigEndian.Uint16(ip[i:]))
	}
	for sum > 0xffff {
		sum = sum>>16 + sum&0xffff
	}
	binary.BigEndian.PutUint16(ip[10:], ^uint16(sum))
	udp := f[34:42]
	binary.BigEndian.PutUint16(udp[0:], 40000)
	binary.BigEndian.PutUint16(udp[2:], 9)
	binary.BigEndian.PutUint16(udp[4:], 8+64)
	return f
}

// runMeasured starts the source and runs it on a locked thread; stop
// cancels it and returns the thread's CPU time (user+system).
func runMeasured(b *testing.B, cfg string, out pipeline.Output) (*Source, func() (time.Duration, error)) {
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
	return src, func() (time.Duration, error) {
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
