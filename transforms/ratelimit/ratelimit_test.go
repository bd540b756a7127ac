package ratelimit

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"gopkg.in/yaml.v3"

	flowpb "github.com/flowbus/flowbus/flow"
	"github.com/flowbus/flowbus/flow/fieldpath"
	"github.com/flowbus/flowbus/pipeline"
)

func mustYAML(t testing.TB, src string) *yaml.Node {
	t.Helper()
	var doc yaml.Node
	if err := yaml.Unmarshal([]byte(src), &doc); err != nil {
		t.Fatal(err)
	}
	return doc.Content[0]
}

// clock is a manual clock for the limiter.
type clock struct{ t time.Time }

func (c *clock) now() time.Time          { return c.t }
func (c *clock) advance(d time.Duration) { c.t = c.t.Add(d) }

func newClock() *clock { return &clock{t: time.Date(2026, 11, 24, 12, 0, 0, 0, time.UTC)} }

func flowIn(ns string) *flowpb.Flow {
	f := &flowpb.Flow{Verdict: flowpb.Verdict_FORWARDED}
	if ns != "" {
		f.Source = &flowpb.Endpoint{Namespace: ns}
	}
	return f
}

// run sends n flows with the given namespaces (round robin) in one batch
// and returns how many passed per namespace.
func run(l *Limiter, n int, nss ...string) map[string]int {
	if len(nss) == 0 {
		nss = []string{"a"}
	}
	b := pipeline.NewBatch()
	defer b.Release()
	for i := range n {
		b.Next().Flow = flowIn(nss[i%len(nss)])
	}
	l.Process(b)
	got := map[string]int{}
	for i := range b.Events {
		got[b.Events[i].Flow.GetSource().GetNamespace()]++
	}
	return got
}

var same = flowIn("a")

// runSame sends n copies of one flow in a batch and returns how many passed.
func runSame(l *Limiter, n int) int {
	b := pipeline.NewBatch()
	defer b.Release()
	for range n {
		b.Next().Flow = same
	}
	l.Process(b)
	return b.Len()
}

func TestTokenBucket(t *testing.T) {
	c := newClock()
	l := New(Config{EventsPerSecond: 100, Burst: 10, Now: c.now})
	steps := []struct {
		advance time.Duration
		send    int
		want    int
	}{
		{0, 50, 10},                    // a full bucket: burst
		{0, 5, 0},                      // empty
		{50 * time.Millisecond, 50, 5}, // 100/s × 50 ms
		{15 * time.Millisecond, 50, 1}, // 1.5 tokens: one passes, 0.5 stays
		{5 * time.Millisecond, 50, 1},  // 0.5 + 0.5
		{time.Hour, 50, 10},            // refill stops at burst
		{-time.Second, 50, 0},          // a clock going back adds nothing
		{2 * time.Second, 3, 3},        // under the rate everything passes
	}
	for i, s := range steps {
		c.advance(s.advance)
		if got := run(l, s.send)["a"]; got != s.want {
			t.Errorf("step %d: %d of %d passed, want %d", i, got, s.send, s.want)
		}
	}
}

// TestRateHolds offers three times the rate in irregular batches over a
// simulated minute: what passes never exceeds burst + rate × elapsed, and
// (when a step's refill cannot overflow the bucket) falls short of it by
// less than one burst.
func TestRateHolds(t *testing.T) {
	for _, tc := range []struct {
		eps   float64
		burst int
	}{{1000, 100}, {50, 1}, {2.5, 5}, {10000, 1000}} {
		c := newClock()
		l := New(Config{EventsPerSecond: tc.eps, Burst: tc.burst, Now: c.now})
		r := rand.New(rand.NewPCG(3, 4))
		passed := 0
		var elapsed time.Duration
		for elapsed < time.Minute {
			d := time.Duration(r.IntN(20)+1) * time.Millisecond
			c.advance(d)
			elapsed += d
			n := int(3*tc.eps*d.Seconds()) + 1 + r.IntN(3)
			passed += runSame(l, n)
			limit := float64(tc.burst) + tc.eps*elapsed.Seconds()
			if float64(passed) > limit {
				t.Fatalf("eps %v burst %d: %d passed after %v, limit %.1f", tc.eps, tc.burst, passed, elapsed, limit)
			}
		}
		limit := float64(tc.burst) + tc.eps*elapsed.Seconds()
		if tc.eps*0.020 < float64(tc.burst) && float64(passed) < limit-float64(tc.burst)-1 {
			t.Errorf("eps %v burst %d: only %d passed in %v, want about %.0f", tc.eps, tc.burst, passed, elapsed, limit)
		}
	}
}

func TestKeyedBuckets(t *testing.T) {
	c := newClock()
	key := fieldpath.MustParse("source.namespace")
	l := New(Config{EventsPerSecond: 10, Burst: 3, Key: &key, Now: c.now})
	got := run(l, 40, "a", "b", "", "c")
	for _, ns := range []string{"a", "b", "", "c"} {
		if got[ns] != 3 {
			t.Errorf("namespace %q: %d passed, want its own burst of 3 (%v)", ns, got[ns], got)
		}
	}
	if l.Keys() != 4 {
		t.Errorf("Keys() = %d, want 4", l.Keys())
	}
	c.advance(100 * time.Millisecond)
	if got := run(l, 20, "a", "b"); got["a"] != 1 || got["b"] != 1 {
		t.Errorf("after 100ms at 10/s: %v, want 1 each", got)
	}
}

func TestMaxKeys(t *testing.T) {
	c := newClock()
	key := fieldpath.MustParse("source.namespace")
	l := New(Config{EventsPerSecond: 1, Burst: 2, Key: &key, MaxKeys: 2, Now: c.now})
	run(l, 4, "a", "b") // a and b use up their buckets
	run(l, 2, "a")      // a is now the most recent
	if got := run(l, 2, "c"); got["c"] != 2 {
		t.Errorf("new key c: %v passed", got)
	}
	if l.Keys() != 2 {
		t.Errorf("Keys() = %d, want the bound 2", l.Keys())
	}
	// b was least recently used and is forgotten; a is still limited.
	if got := run(l, 4, "a", "b"); got["a"] != 0 || got["b"] != 2 {
		t.Errorf("after eviction: %v, want a limited and b fresh", got)
	}
	var m dto.Metric
	if err := l.evictions.Write(&m); err != nil {
		t.Fatal(err)
	}
	if n := m.GetCounter().GetValue(); n != 2 { // b for c, then a for b
		t.Errorf("evictions = %v, want 2", n)
	}
	// Many keys through a small bound: the map and chain stay consistent.
	for i := range 1000 {
		run(l, 1, fmt.Sprint(i%7))
		if len(l.index) != l.Keys() || l.Keys() > 2 {
			t.Fatalf("index %d, buckets %d", len(l.index), l.Keys())
		}
	}
}

func TestLostEventsPass(t *testing.T) {
	c := newClock()
	l := New(Config{EventsPerSecond: 1, Burst: 1, Now: c.now})
	b := pipeline.NewBatch()
	defer b.Release()
	for i := range 10 {
		e := b.Next()
		if i%2 == 0 {
			e.Lost = &flowpb.LostEvent{NumEventsLost: uint64(i)}
		} else {
			e.Flow = flowIn("a")
		}
	}
	l.Process(b)
	lost, flows := 0, 0
	for i := range b.Events {
		if b.Events[i].Lost != nil {
			lost++
		} else {
			flows++
		}
	}
	if lost != 5 || flows != 1 {
		t.Errorf("kept %d lost events and %d flows, want 5 and 1", lost, flows)
	}
}

func TestFromConfig(t *testing.T) {
	l, err := pipeline.Make(nil, mustYAML(t, "events_per_second: 2.5\nkey: l4.TCP.destination_port\nmax_keys: 7"), FromOptions)
	if err != nil {
		t.Fatal(err)
	}
	if l.burst != 3 || l.maxKeys != 7 || l.key.String() != "l4.TCP.destination_port" || l.rate != 2.5/1e9 {
		t.Errorf("limiter %+v", l)
	}
	l, err = pipeline.Make(nil, mustYAML(t, "events_per_second: 100\nburst: 1"), FromOptions)
	if err != nil {
		t.Fatal(err)
	}
	if l.burst != 1 || l.maxKeys != 1 || l.key != nil {
		t.Errorf("limiter %+v", l)
	}
}

func TestConfigErrors(t *testing.T) {
	tests := []struct{ conf, want string }{
		{"burst: 3", `1:1: missing required key "events_per_second"`},
		{"events_per_second: 0", "1:20: events_per_second must be a positive number"},
		{"events_per_second: -1", "1:20: "},
		{"events_per_second: .inf", "1:20: "},
		{"events_per_second: fast", "1:20: "},
		{"events_per_second: 10\nburst: 0", "2:8: burst must be at least 1"},
		{"events_per_second: 10\nkey: source.pod", `2:6: field path "source.pod"`},
		{"events_per_second: 10\nkey: source", "2:6: field path \"source\": source is a message"},
		{"events_per_second: 10\nkey: [a]", "2:6: expected a field path"},
		{"events_per_second: 10\nmax_keys: 5", "2:11: max_keys needs a key"},
		{"events_per_second: 10\nkey: verdict\nmax_keys: 0", "3:11: max_keys must be at least 1"},
		{"events_per_second: 10\nbogus: 1", "2:1: "},
	}
	for _, tt := range tests {
		_, err := pipeline.Make(nil, mustYAML(t, tt.conf), FromOptions)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%q: error %v, want containing %q", tt.conf, err, tt.want)
		}
	}
	// Timestamps and wrappers are values.
	for _, ok := range []string{"time", "is_reply", "l4.TCP.flags.SYN", "source.labels"} {
		if _, err := pipeline.Make(nil, mustYAML(t, "events_per_second: 1\nkey: "+ok), FromOptions); err != nil {
			t.Errorf("key %s: %v", ok, err)
		}
	}
}

func TestRegistered(t *testing.T) {
	for _, typ := range pipeline.Types("transforms") {
		if typ == "ratelimit" {
			return
		}
	}
	t.Error("ratelimit is not registered")
}

func batchOf(b *pipeline.Batch, fs []*flowpb.Flow) {
	b.Truncate(0)
	for _, f := range fs {
		b.Next().Flow = f
	}
}

func keyedFlows(n, keys int) []*flowpb.Flow {
	fs := make([]*flowpb.Flow, n)
	for i := range fs {
		fs[i] = flowIn(fmt.Sprintf("namespace-%d", i%keys))
	}
	return fs
}

func TestProcessAllocs(t *testing.T) {
	c := newClock()
	key := fieldpath.MustParse("source.namespace")
	l := New(Config{EventsPerSecond: 1000, Burst: 10, Key: &key, Now: c.now})
	fs := keyedFlows(512, 100)
	b := pipeline.NewBatch()
	defer b.Release()
	batchOf(b, fs)
	l.Process(b) // creates the buckets
	allocs := testing.AllocsPerRun(50, func() {
		c.advance(time.Millisecond)
		batchOf(b, fs)
		l.Process(b)
	})
	if allocs != 0 {
		t.Errorf("Process allocates %.1f times per batch, want 0", allocs)
	}
}

func benchmarkLimiter(b *testing.B, key string, keys int) {
	c := newClock()
	cfg := Config{EventsPerSecond: 1e6, Burst: 1000, Now: c.now}
	if key != "" {
		p := fieldpath.MustParse(key)
		cfg.Key = &p
	}
	l := New(cfg)
	fs := keyedFlows(512, keys)
	batch := pipeline.NewBatch()
	defer batch.Release()
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i += len(fs) {
		c.advance(time.Millisecond)
		batchOf(batch, fs)
		l.Process(batch)
	}
}

// The benchmarks run batches of 512 flows; b.N counts flows.
func BenchmarkSingleBucket(b *testing.B) { benchmarkLimiter(b, "", 1) }
func BenchmarkKeyed100(b *testing.B)     { benchmarkLimiter(b, "source.namespace", 100) }

func TestFactoryMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	tr, err := pipeline.Make(&pipeline.Build{Name: "rl", Type: "ratelimit", Metrics: reg}, mustYAML(t, "events_per_second: 1\nburst: 1\nkey: source.namespace"), FromOptions)
	if err != nil {
		t.Fatal(err)
	}
	run(tr, 3, "a", "b", "c")
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, mf := range mfs {
		m := mf.GetMetric()[0]
		got[mf.GetName()] = m.GetGauge().GetValue() + m.GetCounter().GetValue()
	}
	if got["flowbus_ratelimit_keys"] != 3 || got["flowbus_ratelimit_evictions_total"] != 0 {
		t.Errorf("metrics %v", got)
	}
}
