package hubble_test

import (
	"context"
	"fmt"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	flowpb "github.com/flowbus/flowbus/flow"
	"github.com/flowbus/flowbus/internal/observerserver"
	"github.com/flowbus/flowbus/internal/sinktest"
	"github.com/flowbus/flowbus/pipeline"
	"github.com/flowbus/flowbus/pipeline/config"
	_ "github.com/flowbus/flowbus/sinks/discard"
	"github.com/flowbus/flowbus/sources/hubble"
)

// countOut is a pipeline.Output that counts and releases, the source's
// cost alone (the discard sink's, without the runtime).
type countOut struct{ flows, lost atomic.Uint64 }

func (o *countOut) Emit(_ context.Context, b *pipeline.Batch) error {
	o.flows.Add(uint64(b.Len()))
	b.Release()
	return nil
}

func (o *countOut) Lost(_ flowpb.LostEventSource, _ int32, n uint64) { o.lost.Add(n) }

func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkStream streams enriched flows from a local server (unix socket,
// same process) through the source: flows/s, CPU per flow (server
// included) and allocations per flow (server included).
func BenchmarkStream(b *testing.B) {
	const distinct = 4096
	fs := testFlows(b, distinct, 7, base)
	srv := observerserver.New(observerserver.Options{Capacity: 1<<16 - 1})
	sock := socketPath(b)
	serve(b, srv, unixListener(b, sock), nil)

	src, err := pipeline.Make(sinktest.Build("hubble", ""), sinktest.Node(b, fmt.Sprintf("address: unix://%s\nsince: %s", sock, since(base))), hubble.New)
	if err != nil {
		b.Fatal(err)
	}
	out := &countOut{}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- src.Run(ctx, out) }()
	defer func() {
		cancel()
		<-done
		_ = src.Stop(context.Background())
	}()

	b.ReportAllocs()
	b.ResetTimer()
	cpu0, t0 := cpuTime(), time.Now()
	// Keep the ring ahead of the reader without overrunning it.
	for i := 0; i < b.N; i++ {
		for uint64(i)-out.flows.Load() > 32768 {
			time.Sleep(100 * time.Microsecond)
		}
		srv.PutFlow(fs[i%distinct])
	}
	for out.flows.Load() < uint64(b.N) {
		time.Sleep(100 * time.Microsecond)
	}
	wall, cpu := time.Since(t0), cpuTime()-cpu0
	b.StopTimer()
	if out.lost.Load() != 0 {
		b.Fatalf("%d lost", out.lost.Load())
	}
	b.ReportMetric(float64(b.N)/wall.Seconds(), "flows/s")
	b.ReportMetric(float64(cpu.Nanoseconds())/float64(b.N), "cpu-ns/flow")
}

// BenchmarkStreamDiscard is BenchmarkStream through a whole pipeline: the
// hubble source into the discard sink, with the runtime's buffer between.
func BenchmarkStreamDiscard(b *testing.B) {
	const distinct = 4096
	fs := testFlows(b, distinct, 7, base)
	srv := observerserver.New(observerserver.Options{Capacity: 1<<16 - 1})
	sock := socketPath(b)
	serve(b, srv, unixListener(b, sock), nil)
	c, err := config.Parse([]byte(fmt.Sprintf(`metrics: {listen: ""}
sources: {hub: {type: hubble, address: "unix://%s", since: "%s"}}
sinks: {null: {type: discard, inputs: [hub]}}
`, sock, since(base))), func(string) (string, bool) { return "", false })
	if err != nil {
		b.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	p, err := pipeline.New(c, pipeline.Options{Registry: reg})
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _, _ = p.Run(ctx) }()
	defer func() { cancel(); <-done }()
	delivered := func() uint64 { return uint64(sinktest.Metric(reg, "flowbus_discard_events_total")) }

	b.ReportAllocs()
	b.ResetTimer()
	cpu0, t0 := cpuTime(), time.Now()
	got := uint64(0)
	for i := 0; i < b.N; i++ {
		if i%4096 == 0 {
			for got = delivered(); uint64(i)-got > 32768; got = delivered() {
				time.Sleep(time.Millisecond)
			}
		}
		srv.PutFlow(fs[i%distinct])
	}
	for delivered() < uint64(b.N) {
		time.Sleep(time.Millisecond)
	}
	wall, cpu := time.Since(t0), cpuTime()-cpu0
	b.StopTimer()
	b.ReportMetric(float64(b.N)/wall.Seconds(), "flows/s")
	b.ReportMetric(float64(cpu.Nanoseconds())/float64(b.N), "cpu-ns/flow")
}
