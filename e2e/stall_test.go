package e2e

import (
	"context"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/flowbus/flowbus/pipeline"
	"github.com/flowbus/flowbus/pipeline/config"
)

// TestMemoryBoundedWhenSinkStalls runs the reference Kafka pipeline (generate →
// filter → redact → sample → protobuf → kafka, when_full: block) against a
// broker that stops answering produce requests, and checks that memory
// stops growing once the buffers are full: with block, the buffers hold the
// sources back, so what is held is bounded by the buffers' capacities
// (README "Performance" states the bound).
func TestMemoryBoundedWhenSinkStalls(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a stalled pipeline for a few seconds")
	}
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.Ports(0), kfake.SeedTopics(3, "flows"),
		kfake.BlackholeProduce())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()

	// Stall: every produce request waits until release is closed.
	release := make(chan struct{})
	var releaseOnce sync.Once
	unstall := func() { releaseOnce.Do(func() { close(release) }) }
	defer unstall()
	c.ControlKey(int16(kmsg.Produce), func(kmsg.Request) (kmsg.Response, error, bool) {
		c.KeepControl()
		<-release
		return nil, nil, false // then handle it as usual
	})

	// Unbounded source: only the buffers can stop it. The drain after the
	// stall gets 20s: it needs less than the benchmark's 5s, but several
	// times more in the flowbus_poison build, which overwrites every flow it
	// releases.
	p, err := Build(kafkaPipeline(0, c.ListenAddrs()[0], "shutdown_timeout: 20s\nbuffer: {events: 8192, when_full: block}"), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	var summary *pipeline.Summary
	go func() {
		var err error
		summary, err = p.Run(ctx)
		done <- err
	}()

	// Wait until the buffers are full: nothing more is received.
	var (
		heapMax uint64
		ms      runtime.MemStats
	)
	sample := func() uint64 {
		rss, err := RSS()
		if err != nil {
			t.Fatal(err)
		}
		runtime.ReadMemStats(&ms)
		heapMax = max(heapMax, ms.HeapInuse)
		return rss
	}
	deadline := time.Now().Add(20 * time.Second)
	last, since := p.Summary().Total.Received, time.Now()
	for time.Since(since) < 500*time.Millisecond {
		if time.Now().After(deadline) {
			t.Fatalf("the source was not held back: %d events received", last)
		}
		time.Sleep(50 * time.Millisecond)
		sample()
		if r := p.Summary().Total.Received; r != last {
			last, since = r, time.Now()
		}
	}
	// Stay stalled a while longer: memory must not grow.
	const stall = 1500 * time.Millisecond
	rssFull := sample()
	for start := time.Now(); time.Since(start) < stall; {
		time.Sleep(100 * time.Millisecond)
		sample()
	}
	rssEnd := sample()
	if r := p.Summary().Total.Received; r != last {
		t.Errorf("received %d events while stalled with full buffers, then %d", last, r)
	}

	// The bound: events held in the four buffers (three transforms and the
	// sink), plus one batch in the hands of each goroutine (the generate
	// workers, the transforms, the sink), each event a generated flow and
	// its envelope.
	held := 4*config.DefaultBufferEvents + (runtime.GOMAXPROCS(0)+4)*pipeline.DefaultBatchSize
	const perEvent = 4 << 10 // bytes: an enriched flow's message tree is 1.5-3 KiB
	bound := uint64(held*perEvent) + 64<<20
	t.Logf("stalled with %d events received: heap in use max %d MiB, VmRSS %d MiB when full, %d MiB %v later; bound %d MiB (%d events held × %d B + 64 MiB)",
		last, heapMax>>20, rssFull>>20, rssEnd>>20, stall, bound>>20, held, perEvent)
	if heapMax > bound {
		t.Errorf("heap in use %d MiB exceeds the bound %d MiB", heapMax>>20, bound>>20)
	}
	if rssEnd > rssFull+rssFull/5 {
		t.Errorf("VmRSS still growing while stalled: %d MiB when full, %d MiB %v later", rssFull>>20, rssEnd>>20, stall)
	}

	// Release the broker; SIGTERM drains what was held.
	unstall()
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the pipeline did not drain after the broker recovered")
	}
	if summary.Total.Lost != 0 {
		t.Errorf("lost events with when_full: block: %s", summary)
	}
	t.Log(summary)
}
