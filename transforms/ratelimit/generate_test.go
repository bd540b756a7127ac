package ratelimit

import (
	"testing"
	"time"

	"github.com/flowbus/flowbus/flow/fieldpath"
	"github.com/flowbus/flowbus/pipeline"
	"github.com/flowbus/flowbus/sources/generate"
)

// TestGeneratedFlows limits generated flows per source namespace, 512 flows
// every 10 ms of a simulated clock, and checks every namespace's bucket
// over the run.
func TestGeneratedFlows(t *testing.T) {
	const eps, burst = 200, 20
	c := newClock()
	key := fieldpath.MustParse("source.namespace")
	l := New(Config{EventsPerSecond: eps, Burst: burst, Key: &key, Now: c.now})
	g := generate.NewGenerator(3)
	passed := map[string]int{}
	offered := map[string]int{}
	b := pipeline.NewBatch()
	defer b.Release()
	var elapsed time.Duration
	for range 200 {
		c.advance(10 * time.Millisecond)
		elapsed += 10 * time.Millisecond
		b.Truncate(0)
		for range 512 {
			g.Fill(b.Next(), c.t.UnixNano())
		}
		for i := range b.Events {
			offered[b.Events[i].Flow.GetSource().GetNamespace()]++
		}
		l.Process(b)
		for i := range b.Events {
			passed[b.Events[i].Flow.GetSource().GetNamespace()]++
		}
	}
	limit := burst + eps*elapsed.Seconds()
	for ns, n := range passed {
		if float64(n) > limit {
			t.Errorf("namespace %q: %d passed in %v, limit %.0f", ns, n, elapsed, limit)
		}
		if offered[ns] > int(2*limit) && float64(n) < limit-burst-1 {
			t.Errorf("namespace %q: only %d of %d passed, want about %.0f", ns, n, offered[ns], limit)
		}
	}
	if len(passed) < 3 {
		t.Errorf("only %d namespaces: %v", len(passed), passed)
	}
	t.Logf("offered %v\npassed %v", offered, passed)
}

// BenchmarkGenerated limits batches of 512 generated flows per source
// namespace; b.N counts flows, generation is not timed.
func BenchmarkGenerated(b *testing.B) {
	c := newClock()
	key := fieldpath.MustParse("source.namespace")
	l := New(Config{EventsPerSecond: 1e5, Burst: 1000, Key: &key, Now: c.now})
	g := generate.NewGenerator(1)
	batch := pipeline.NewBatch()
	defer batch.Release()
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i += 512 {
		b.StopTimer()
		c.advance(time.Millisecond)
		batch.Truncate(0)
		for range 512 {
			g.Fill(batch.Next(), c.t.UnixNano())
		}
		b.StartTimer()
		l.Process(batch)
	}
}
