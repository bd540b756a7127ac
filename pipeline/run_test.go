package pipeline_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	flowpb "github.com/flowbus/flowbus/flow"
	"github.com/flowbus/flowbus/pipeline"
)

func load(t testing.TB, src string) *pipeline.Pipeline {
	t.Helper()
	resetTestComponents()
	path := filepath.Join(t.TempDir(), "pipeline.yaml")
	if err := os.WriteFile(path, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	p, err := pipeline.Load(path, pipeline.Options{})
	if err != nil {
		t.Fatalf("load:\n%v", err)
	}
	return p
}

func run(t testing.TB, p *pipeline.Pipeline, ctx context.Context) *pipeline.Summary {
	t.Helper()
	s, err := p.Run(ctx)
	if err != nil {
		t.Fatalf("run: %v", err)
	}
	for _, k := range s.Sinks {
		if !k.Reconciles() {
			t.Errorf("sink %s does not reconcile: %v", k.Sink, k.Counts)
		}
	}
	if !s.Total.Reconciles() {
		t.Errorf("total does not reconcile: %v", s.Total)
	}
	return s
}

// A sink slower than its source behind a drop_newest buffer: what it
// misses is reported in its stream, and LostEvents + delivered = received.
func TestDropNewestReportsLosses(t *testing.T) {
	p := load(t, `
metrics: {listen: ""}
lost_event_interval: 10ms
sources:
  gen: {type: test-count, count: 20000, batch: 100, done: drop-src-done}
sinks:
  slow:
    type: test-rec
    inputs: [gen]
    wait: drop-src-done
    buffer: {events: 1000, when_full: drop_newest}
`)
	s := run(t, p, context.Background())
	k := sinkNamed("slow")
	got := s.Total
	if got.Received != 20000 {
		t.Errorf("received = %d, want 20000", got.Received)
	}
	if got.Lost == 0 || got.Delivered == 0 {
		t.Fatalf("want both losses and deliveries: %v", got)
	}
	if uint64(k.flows) != got.Delivered {
		t.Errorf("sink saw %d flows, summary says delivered=%d", k.flows, got.Delivered)
	}
	if rl := k.reportedLost(); rl+uint64(k.flows) != 20000 || rl != got.Lost {
		t.Errorf("reported lost %d + delivered %d != received 20000 (summary lost %d)", rl, k.flows, got.Lost)
	}
	for _, l := range k.lost {
		if l.Source != flowpb.LostEventSource_OBSERVER_EVENTS_QUEUE || l.Cpu != nil || l.First == nil || l.Last == nil {
			t.Errorf("bad LostEvent %v", l)
		}
	}
	if !k.closed.Load() {
		t.Error("sink not closed")
	}
}

// With when_full: block the source is held back and nothing is lost.
func TestBlockLosesNothing(t *testing.T) {
	p := load(t, `
metrics: {listen: ""}
sources:
  gen: {type: test-count, count: 20000, batch: 100}
sinks:
  slow:
    type: test-rec
    inputs: [gen]
    delay: 100us
    buffer: {events: 500, when_full: block}
`)
	s := run(t, p, context.Background())
	k := sinkNamed("slow")
	if s.Total.Lost != 0 || s.Total.Delivered != 20000 || k.flows != 20000 || len(k.lost) != 0 {
		t.Errorf("summary %v, sink flows %d, LostEvents %d", s.Total, k.flows, len(k.lost))
	}
}

// Cancelling the run (SIGTERM) stops the source and drains every buffer:
// everything the source emitted is delivered.
func TestCancelDrains(t *testing.T) {
	p := load(t, `
metrics: {listen: ""}
sources:
  gen: {type: test-count, batch: 64}
transforms:
  odd: {type: test-odd, inputs: [gen]}
sinks:
  a: {type: test-rec, inputs: [odd], delay: 50us, buffer: {events: 4096}}
  b: {type: test-rec, inputs: [gen, odd]}
`)
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		for sinkNamed("a").flowsNow() < 5000 {
			time.Sleep(time.Millisecond)
		}
		cancel()
	}()
	s := run(t, p, ctx)
	if s.Total.Lost != 0 {
		t.Errorf("lost %d events on a graceful stop: %v", s.Total.Lost, s)
	}
	if len(s.Sinks) != 2 {
		t.Fatalf("want 2 sink lines, got %v", s)
	}
	a, b := s.Sinks[0], s.Sinks[1]
	if a.Received != b.Received/2 || a.Filtered == 0 || a.Delivered+a.Filtered != a.Received {
		t.Errorf("a=%v b=%v", a.Counts, b.Counts)
	}
	if uint64(sinkNamed("b").flows) != b.Delivered {
		t.Errorf("b saw %d flows, delivered=%d", sinkNamed("b").flows, b.Delivered)
	}
	lines := s.Lines()
	if len(lines) != 3 || !strings.HasPrefix(lines[1], "flowbus: sink=a received=") {
		t.Errorf("lines: %q", lines)
	}
}

// Losses reported by a source reach every downstream sink with the CPU,
// past a transform, and count as received and lost.
func TestSourceLostFansOut(t *testing.T) {
	p := load(t, `
metrics: {listen: ""}
sources:
  gen: {type: test-count, count: 1000, batch: 10, lost_every: 10}
transforms:
  odd: {type: test-odd, inputs: [gen]}
sinks:
  x: {type: test-rec, inputs: [odd]}
  y: {type: test-rec, inputs: [gen]}
`)
	s := run(t, p, context.Background())
	for _, name := range []string{"x", "y"} {
		k := sinkNamed(name)
		if k.reportedLost() != 30 {
			t.Errorf("%s: reported lost %d, want 30", name, k.reportedLost())
		}
		for _, l := range k.lost {
			if l.Source != flowpb.LostEventSource_PERF_EVENT_RING_BUFFER || l.Cpu.GetValue() != 1 {
				t.Errorf("%s: bad LostEvent %v", name, l)
			}
		}
	}
	if x := s.Sinks[0]; x.Received != 1030 || x.Filtered != 500 || x.Delivered != 500 || x.Lost != 30 {
		t.Errorf("x = %v", x.Counts)
	}
}

// A sink that gives up on events reports them in its own stream.
func TestSinkFailuresReported(t *testing.T) {
	p := load(t, `
metrics: {listen: ""}
sources:
  gen: {type: test-count, count: 1000, batch: 10}
sinks:
  f: {type: test-rec, inputs: [gen], fail_every: 4}
`)
	s := run(t, p, context.Background())
	k := sinkNamed("f")
	if s.Total.Lost == 0 || k.reportedLost() != s.Total.Lost || uint64(k.flows)+s.Total.Lost != 1000 {
		t.Errorf("summary %v, sink flows %d reported lost %d", s.Total, k.flows, k.reportedLost())
	}
}

// LostEvents the sink gives up on are reported again at the next flush:
// every loss reaches the stream once, with its CPU, and the summary's lost
// counts each loss once.
func TestLostEventsRetried(t *testing.T) {
	p := load(t, `
metrics: {listen: ""}
lost_event_interval: 2ms
sources:
  gen: {type: test-count, count: 3000, batch: 10, lost_every: 1}
sinks:
  f: {type: test-rec, inputs: [gen], delay: 1ms, fail_lost: 3, buffer: {when_full: block}}
`)
	s := run(t, p, context.Background())
	k := sinkNamed("f")
	k.mu.Lock()
	failedBatches := k.lostFailed
	var perf uint64
	for _, l := range k.lost {
		if l.Source != flowpb.LostEventSource_PERF_EVENT_RING_BUFFER {
			t.Errorf("unexpected LostEvent %v", l)
			continue
		}
		perf += l.NumEventsLost
		if l.GetCpu().GetValue() != 1 || l.Cpu == nil {
			t.Errorf("LostEvent without its CPU: %v", l)
		}
		if l.First.AsTime().After(l.Last.AsTime()) {
			t.Errorf("LostEvent first after last: %v", l)
		}
	}
	k.mu.Unlock()
	if failedBatches != 3 {
		t.Errorf("sink failed %d LostEvent batches, want 3", failedBatches)
	}
	const sourceLost = 300 * 3
	if perf != sourceLost || s.Total.Lost != sourceLost || k.flows != 3000 {
		t.Errorf("reported %d lost, summary %v, flows %d; want %d lost", perf, s.Total, k.flows, sourceLost)
	}
}

// LostEvents still undeliverable at the final flush are logged; the
// summary counts them lost all the same and still reconciles.
func TestLostEventsUndeliverable(t *testing.T) {
	p := load(t, `
metrics: {listen: ""}
sources:
  gen: {type: test-count, count: 100, batch: 10, lost_every: 1}
sinks:
  f: {type: test-rec, inputs: [gen], fail_lost: 1000000, buffer: {when_full: block}}
`)
	s := run(t, p, context.Background())
	k := sinkNamed("f")
	if k.reportedLost() != 0 || k.lostFailed == 0 || s.Total.Lost != 30 || k.flows != 100 {
		t.Errorf("summary %v, flows %d, reported %d, failed batches %d", s.Total, k.flows, k.reportedLost(), k.lostFailed)
	}
}

// /metrics, /healthz and /readyz answer while the pipeline runs.
func TestHTTPEndpoints(t *testing.T) {
	p := load(t, `
metrics: {listen: "127.0.0.1:0"}
sources:
  gen: {type: test-count, batch: 10}
sinks:
  m: {type: test-rec, inputs: [gen], delay: 1ms}
`)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan *pipeline.Summary)
	go func() { s, _ := p.Run(ctx); done <- s }()
	deadline := time.Now().Add(10 * time.Second)
	get := func(path string) (int, string) {
		for {
			if addr := p.Addr(); addr != "" {
				resp, err := http.Get("http://" + addr + path)
				if err == nil {
					body, _ := io.ReadAll(resp.Body)
					resp.Body.Close()
					if path != "/readyz" || resp.StatusCode == 200 || time.Now().After(deadline) {
						return resp.StatusCode, string(body)
					}
				}
			}
			if time.Now().After(deadline) {
				t.Fatalf("no answer on %s", path)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	if code, _ := get("/readyz"); code != 200 {
		t.Errorf("/readyz = %d", code)
	}
	if code, _ := get("/healthz"); code != 200 {
		t.Errorf("/healthz = %d", code)
	}
	code, body := get("/metrics")
	for _, want := range []string{
		`flowbus_component_events_out_total{component="gen",kind="source",type="test-count"}`,
		`flowbus_buffer_capacity_events{component="m",kind="sink",type="test-rec"} 8192`,
		`flowbus_sink_events_lost_total{component="m",kind="sink",type="test-rec"} 0`,
	} {
		if code != 200 || !strings.Contains(body, want) {
			t.Errorf("/metrics (%d) lacks %s", code, want)
		}
	}
	cancel()
	if s := <-done; s == nil || s.Total.Lost != 0 {
		t.Errorf("summary %v", s)
	}
}

// A sink that never gets anything through: at the shutdown timeout, what is
// queued is given up, counted as lost, and the counts still reconcile.
func TestShutdownTimeoutGivesUp(t *testing.T) {
	p := load(t, `
metrics: {listen: ""}
shutdown_timeout: 200ms
sources:
  gen: {type: test-count, batch: 100}
transforms:
  odd: {type: test-odd, inputs: [gen]}
sinks:
  stuck: {type: test-rec, inputs: [odd], wait: never-opened, buffer: {events: 1000}}
`)
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		for p.Summary().Total.Received < 2000 {
			time.Sleep(time.Millisecond)
		}
		cancel()
	}()
	start := time.Now()
	s := run(t, p, ctx)
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("took %v", d)
	}
	if s.Total.Delivered != 0 || s.Total.Lost == 0 || s.Total.Filtered == 0 {
		t.Errorf("summary %v", s.Total)
	}
}

// A failing Start stops the pipeline before any source runs, and the sinks
// started before it are closed.
func TestStartFailure(t *testing.T) {
	p := load(t, `
metrics: {listen: ""}
sources:
  gen: {type: test-count, count: 10}
sinks:
  ok: {type: test-life, inputs: [gen]}
  bad: {type: test-life, inputs: [gen], start_error: broker unreachable}
`)
	s, err := p.Run(context.Background())
	if err == nil || !strings.Contains(err.Error(), `sink "bad": start: broker unreachable`) || s != nil {
		t.Fatalf("got %v, %v", s, err)
	}
	okSink, _ := lifeSinks.Load("ok")
	if ls := okSink.(*lifeSink); !ls.started.Load() || !ls.closed.Load() {
		t.Errorf("the started sink was not closed")
	}
}

// Components stop in the reverse of the start order: sinks, then
// transforms, then sources start; sources, then transforms stop, and the
// sinks close last, after the drain.
func TestStopOrder(t *testing.T) {
	p := load(t, `
metrics: {listen: ""}
sources:
  s1: {type: test-life, journal: order}
  s2: {type: test-life, journal: order}
transforms:
  t1: {type: test-life, inputs: [s1, s2], journal: order}
sinks:
  k1: {type: test-life, inputs: [t1], journal: order}
`)
	run(t, p, context.Background())
	want := []string{"start k1", "start t1", "start s1", "start s2", "stop s2", "stop s1", "stop t1", "close k1"}
	if got := journalOf("order"); !slices.Equal(got, want) {
		t.Errorf("lifecycle %q, want %q", got, want)
	}
}

// A component that fails to start stops every component started before
// it, sources and transforms included, in reverse order; it is not stopped
// itself, and nothing after it starts.
func TestFailedStartStopsStarted(t *testing.T) {
	p := load(t, `
metrics: {listen: ""}
sources:
  s1: {type: test-life, journal: failed}
  s2: {type: test-life, journal: failed, start_error: no attach}
  s3: {type: test-life, journal: failed}
transforms:
  t1: {type: test-life, inputs: [s1, s2, s3], journal: failed}
sinks:
  k1: {type: test-life, inputs: [t1], journal: failed}
`)
	s, err := p.Run(context.Background())
	if err == nil || !strings.Contains(err.Error(), `source "s2": start: no attach`) || s != nil {
		t.Fatalf("got %v, %v", s, err)
	}
	want := []string{"start k1", "start t1", "start s1", "start s2", "stop s1", "stop t1", "close k1"}
	if got := journalOf("failed"); !slices.Equal(got, want) {
		t.Errorf("lifecycle %q, want %q", got, want)
	}
}

// /readyz reports unready components with their reasons.
func TestReadyzUnready(t *testing.T) {
	p := load(t, `
metrics: {listen: "127.0.0.1:0"}
sources:
  gen: {type: test-count, batch: 10}
sinks:
  down: {type: test-life, inputs: [gen], unready: "no broker answers"}
`)
	h := p.Handler()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", "/readyz", nil))
	if rec.Code != 503 || !strings.Contains(rec.Body.String(), "not running") {
		t.Errorf("before Run: %d %q", rec.Code, rec.Body.String())
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { p.Run(ctx); close(done) }()
	deadline := time.Now().Add(10 * time.Second)
	for {
		rec = httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest("GET", "/readyz", nil))
		if strings.Contains(rec.Body.String(), "no broker") || time.Now().After(deadline) {
			break
		}
		time.Sleep(time.Millisecond)
	}
	if rec.Code != 503 || rec.Body.String() != "sink \"down\": no broker answers\n" {
		t.Errorf("while running: %d %q", rec.Code, rec.Body.String())
	}
	cancel()
	<-done
}

// A diamond (gen → a, b → s): both transforms get their own copy, the sink
// gets every event twice, and the counts reconcile per path. A failing
// source still drains, and Run reports the error.
func TestDiamondAndSourceFailure(t *testing.T) {
	p := load(t, `
metrics: {listen: ""}
sources:
  gen: {type: test-count, count: 1000, batch: 10, fail: disk on fire}
transforms:
  a: {type: test-odd, inputs: [gen]}
  b: {type: test-odd, inputs: [gen]}
sinks:
  s: {type: test-rec, inputs: [a, b]}
`)
	s, err := p.Run(context.Background())
	if err == nil || !strings.Contains(err.Error(), `source "gen": disk on fire`) {
		t.Errorf("err = %v", err)
	}
	want := pipeline.Counts{Received: 2000, Delivered: 1000, Filtered: 1000}
	if s == nil || s.Total != want || sinkNamed("s").flows != 1000 {
		t.Errorf("summary %v, want %v", s, want)
	}
}

// Every pipeline a test loads starts with closed gates, even when an earlier
// test (or an earlier -count run of the same test) opened a gate of the same
// name: TestDropNewestReportsLosses relies on its sink waiting for the
// source.
func TestLoadClosesEarlierGates(t *testing.T) {
	gate("drop-src-done").open()
	load(t, `
metrics: {listen: ""}
sources:
  gen: {type: test-count, count: 1}
sinks:
  rec: {type: test-rec, inputs: [gen], wait: drop-src-done}
`)
	select {
	case <-gate("drop-src-done").ch:
		t.Fatal("gate drop-src-done is still open from before the load")
	default:
	}
}
