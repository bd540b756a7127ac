package pipeline_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/flowbus/flowbus/pipeline"
)

// syncBuffer is a log destination safe for concurrent writers.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// reloadHarness runs a Reloader on a config file the test rewrites.
type reloadHarness struct {
	t      *testing.T
	path   string
	r      *pipeline.Reloader
	logs   *syncBuffer
	reload chan struct{}
	cancel context.CancelFunc
	done   chan struct{}
	s      *pipeline.Summary
	err    error
}

func startReloader(t *testing.T, src string) *reloadHarness {
	t.Helper()
	h := &reloadHarness{t: t, path: filepath.Join(t.TempDir(), "pipeline.yaml"), logs: &syncBuffer{}, reload: make(chan struct{}, 1), done: make(chan struct{})}
	h.write(src)
	h.r = &pipeline.Reloader{
		Load: func(o pipeline.Options) (*pipeline.Pipeline, error) { return pipeline.Load(h.path, o) },
		Log:  slog.New(slog.NewTextHandler(h.logs, nil)),
	}
	first, err := h.r.Build()
	if err != nil {
		t.Fatalf("build: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	h.cancel = cancel
	go func() {
		defer close(h.done)
		h.s, h.err = h.r.Run(ctx, first, h.reload)
	}()
	eventually(t, "the HTTP endpoint", func() bool { return h.r.Addr() != "" })
	return h
}

func (h *reloadHarness) write(src string) {
	h.t.Helper()
	if err := os.WriteFile(h.path, []byte(src), 0o644); err != nil {
		h.t.Fatal(err)
	}
}

// eventually waits until cond holds.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(20 * time.Second); !cond(); time.Sleep(2 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

// stop ends the Reloader's run and checks that its summary reconciles.
func (h *reloadHarness) stop() *pipeline.Summary {
	h.t.Helper()
	h.cancel()
	<-h.done
	if h.err != nil {
		h.t.Fatalf("run: %v\nlogs:\n%s", h.err, h.logs)
	}
	for _, k := range h.s.Sinks {
		if !k.Reconciles() {
			h.t.Errorf("sink %s does not reconcile: %v", k.Sink, k.Counts)
		}
	}
	if !h.s.Total.Reconciles() {
		h.t.Errorf("total does not reconcile: %v", h.s.Total)
	}
	return h.s
}

func (h *reloadHarness) get(path string) (int, string) {
	h.t.Helper()
	resp, err := http.Get("http://" + h.r.Addr() + path)
	if err != nil {
		h.t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

const genConfig = `
metrics: {listen: "127.0.0.1:0"}
sources:
  gen%[1]d: {type: test-count, batch: 10}
sinks:
  s%[1]d: {type: test-rec, inputs: [gen%[1]d], delay: 100us, buffer: {events: 5000}}
`

// A valid new configuration replaces the running pipeline after the old
// one drained: both generations' sinks got every event their sources
// emitted, the summary sums both, and the HTTP endpoint stayed on the same
// address throughout.
func TestReloadReplacesPipeline(t *testing.T) {
	forget("s1", "s2")
	h := startReloader(t, fmt.Sprintf(genConfig, 1))
	eventually(t, "gen1 flowing", func() bool { return sinkNamed("s1").flowsNow() > 500 })
	addr := h.r.Addr()
	if code, _ := h.get("/readyz"); code != 200 {
		t.Errorf("/readyz before the reload: %d", code)
	}
	h.write(fmt.Sprintf(genConfig, 2))
	h.reload <- struct{}{}
	eventually(t, "gen2 flowing", func() bool {
		s, ok := builtSinksLoad("s2")
		return ok && s.flowsNow() > 500
	})
	if !sinkNamed("s1").closed.Load() {
		t.Errorf("the old sink was not closed before the new pipeline ran")
	}
	if h.r.Addr() != addr {
		t.Errorf("the endpoint moved from %s to %s", addr, h.r.Addr())
	}
	_, metrics := h.get("/metrics")
	for _, want := range []string{
		`flowbus_reloads_total{result="ok"} 1`,
		`flowbus_reloads_total{result="failed"} 0`,
		`flowbus_component_events_out_total{component="gen2",kind="source",type="test-count"}`,
	} {
		if !strings.Contains(metrics, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	if strings.Contains(metrics, `component="gen1"`) {
		t.Errorf("/metrics still shows the old generation")
	}
	s := h.stop()
	if s.Reloads != 1 || s.ReloadsFailed != 0 || len(s.Sinks) != 2 {
		t.Fatalf("summary %+v", s)
	}
	for _, k := range s.Sinks {
		if k.Lost != 0 || k.Delivered != k.Received || uint64(sinkNamed(k.Sink).flowsNow()) != k.Delivered {
			t.Errorf("sink %s: %v, it recorded %d flows", k.Sink, k.Counts, sinkNamed(k.Sink).flowsNow())
		}
	}
	lines := s.Lines()
	if !strings.HasSuffix(lines[0], " lost=0 reloads=1") {
		t.Errorf("summary line %q", lines[0])
	}
}

// forget drops the test sinks and gates of these names that an earlier
// run (go test -count) left behind.
func forget(names ...string) {
	for _, n := range names {
		builtSinks.Delete(n)
		gates.Delete(n)
	}
}

func builtSinksLoad(name string) (*recSink, bool) {
	s, ok := builtSinks.Load(name)
	if !ok {
		return nil, false
	}
	return s.(*recSink), true
}

// An invalid configuration is rejected with its positioned errors; the
// running pipeline continues.
func TestReloadRejectsInvalidConfig(t *testing.T) {
	forget("s3")
	h := startReloader(t, fmt.Sprintf(genConfig, 3))
	eventually(t, "gen3 flowing", func() bool { return sinkNamed("s3").flowsNow() > 100 })
	h.write(`sources:
  gen4: {type: test-count, colour: blue}
sinks:
  s4: {type: test-rec, inputs: [gen4, nowhere]}
`)
	h.reload <- struct{}{}
	eventually(t, "the rejection", func() bool { return strings.Contains(h.logs.String(), "invalid configuration") })
	before := sinkNamed("s3").flowsNow()
	eventually(t, "gen3 still flowing", func() bool { return sinkNamed("s3").flowsNow() > before+100 })
	for _, want := range []*regexp.Regexp{
		regexp.MustCompile(regexp.QuoteMeta(h.path) + `:2:28: source \\"gen4\\" \(test-count\): unknown key \\"colour\\"`),
		regexp.MustCompile(regexp.QuoteMeta(h.path) + `:4:39: sink \\"s4\\": unknown input \\"nowhere\\"`),
	} {
		if !want.MatchString(h.logs.String()) {
			t.Errorf("logs lack %s:\n%s", want, h.logs)
		}
	}
	if code, _ := h.get("/readyz"); code != 200 {
		t.Errorf("/readyz after a rejected reload: %d", code)
	}
	if _, m := h.get("/metrics"); !strings.Contains(m, `flowbus_reloads_total{result="failed"} 1`) {
		t.Errorf("/metrics lacks the failed reload")
	}
	s := h.stop()
	if s.Reloads != 0 || s.ReloadsFailed != 1 || len(s.Sinks) != 1 || s.Total.Lost != 0 {
		t.Errorf("summary %+v", s)
	}
	if !strings.HasSuffix(s.Lines()[0], " lost=0 reloads=0 reloads_failed=1") {
		t.Errorf("summary line %q", s.Lines()[0])
	}
}

// A new pipeline that cannot start is a failed reload: the previous
// configuration runs again, and nothing accepted is lost.
func TestReloadStartFailureGoesBack(t *testing.T) {
	forget("s5")
	h := startReloader(t, fmt.Sprintf(genConfig, 5))
	eventually(t, "gen5 flowing", func() bool { return sinkNamed("s5").flowsNow() > 100 })
	first := sinkNamed("s5")
	h.write(`
metrics: {listen: "127.0.0.1:0"}
sources:
  gen6: {type: test-count, batch: 10}
sinks:
  s6: {type: test-life, inputs: [gen6], start_error: broker unreachable}
`)
	h.reload <- struct{}{}
	eventually(t, "the old configuration running again", func() bool {
		s := sinkNamed("s5")
		return s != first && s.flowsNow() > 100
	})
	if !strings.Contains(h.logs.String(), `could not start`) {
		t.Errorf("logs:\n%s", h.logs)
	}
	s := h.stop()
	if s.Reloads != 0 || s.ReloadsFailed != 1 || len(s.Sinks) != 1 || s.Total.Lost != 0 {
		t.Errorf("summary %+v", s)
	}
	if want := uint64(first.flowsNow() + sinkNamed("s5").flowsNow()); s.Total.Delivered != want {
		t.Errorf("delivered %d, the two s5 sinks recorded %d", s.Total.Delivered, want)
	}
}

// A first pipeline that cannot start is Run's error, without a summary.
func TestReloaderFirstStartFailure(t *testing.T) {
	path := filepath.Join(t.TempDir(), "pipeline.yaml")
	os.WriteFile(path, []byte(`
metrics: {listen: ""}
sources: {gen7: {type: test-count, count: 10}}
sinks: {s7: {type: test-life, inputs: [gen7], start_error: no way}}
`), 0o644)
	r := &pipeline.Reloader{Load: func(o pipeline.Options) (*pipeline.Pipeline, error) { return pipeline.Load(path, o) }}
	p, err := r.Build()
	if err != nil {
		t.Fatal(err)
	}
	s, err := r.Run(context.Background(), p, nil)
	if s != nil || err == nil || !strings.Contains(err.Error(), "no way") {
		t.Errorf("got %v, %v", s, err)
	}
}

// A finite pipeline ends the Reloader's run by itself.
func TestReloaderFinitePipeline(t *testing.T) {
	path := filepath.Join(t.TempDir(), "pipeline.yaml")
	os.WriteFile(path, []byte(`
metrics: {listen: ""}
sources: {gen8: {type: test-count, count: 1000}}
sinks: {s8: {type: test-rec, inputs: [gen8]}}
`), 0o644)
	r := &pipeline.Reloader{Load: func(o pipeline.Options) (*pipeline.Pipeline, error) { return pipeline.Load(path, o) }}
	p, err := r.Build()
	if err != nil {
		t.Fatal(err)
	}
	s, err := r.Run(context.Background(), p, make(chan struct{}))
	if err != nil || s.Total != (pipeline.Counts{Received: 1000, Delivered: 1000}) || s.Reloads != 0 {
		t.Errorf("got %+v, %v", s, err)
	}
	if got := s.Lines()[0]; got != "flowbus: received=1000 delivered=1000 filtered=0 sampled=0 rate_limited=0 lost=0" {
		t.Errorf("summary line %q", got)
	}
}

// SIGTERM while a reload drains the old pipeline: the drain completes,
// the new pipeline never starts, and the summary is the old one's.
func TestReloadStoppedWhileDraining(t *testing.T) {
	forget("s9", "s10", "reload-drain")
	h := startReloader(t, `
metrics: {listen: "127.0.0.1:0"}
sources:
  gen9: {type: test-count, batch: 10, count: 3000}
sinks:
  s9: {type: test-rec, inputs: [gen9], wait: reload-drain, buffer: {events: 5000}}
`)
	eventually(t, "gen9 emitted", func() bool {
		_, m := h.get("/metrics")
		return strings.Contains(m, `flowbus_component_events_out_total{component="gen9",kind="source",type="test-count"} 3000`)
	})
	h.write(fmt.Sprintf(genConfig, 10))
	h.reload <- struct{}{}
	eventually(t, "the reload draining", func() bool { return strings.Contains(h.logs.String(), "reloading: stopping the sources") })
	if code, body := h.get("/readyz"); code != 503 || !strings.Contains(body, "reloading") {
		t.Errorf("/readyz while reloading: %d %q", code, body)
	}
	h.cancel()
	gate("reload-drain").open()
	s := h.stop()
	if _, built := builtSinksLoad("s10"); built {
		if sinkNamed("s10").flowsNow() != 0 {
			t.Errorf("the new pipeline ran")
		}
	}
	if s.Reloads != 0 || s.Total != (pipeline.Counts{Received: 3000, Delivered: 3000}) {
		t.Errorf("summary %+v", s)
	}
}
