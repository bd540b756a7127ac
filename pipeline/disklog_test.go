package pipeline_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/flowbus/flowbus/internal/sinkutil"
	"github.com/flowbus/flowbus/pipeline"
)

// retryingSink stands for a broker sink built on sinkutil.Retry, as the
// kafka and nats sinks are: while brokerDown it is unready and every
// attempt fails, so Write gives its messages up after its attempts; while
// retryingRejects it is ready but every attempt at a flow fails all the
// same (the broker refuses the messages).
type retryingSink struct {
	retry     *sinkutil.Retry
	log       syncBuffer
	delivered atomic.Int64
	reported  atomic.Uint64 // events lost, as reported in LostEvents
}

var retryingRejects atomic.Bool

var retryingSinks sync.Map

func (s *retryingSink) Ready() error {
	if brokerDown.Load() {
		return errors.New("broker down")
	}
	return nil
}

func (s *retryingSink) Write(ctx context.Context, b *pipeline.Batch) (int, error) {
	pending := make([]int, b.Len())
	for i := range pending {
		pending[i] = i
	}
	counted := func(i int) bool { return !b.Events[i].Reported }
	return s.retry.Deliver(ctx, pending, counted, b.WrittenAgain(), func(_ context.Context, pending []int, _ int) ([]int, error) {
		if brokerDown.Load() {
			return pending, errors.New("connection refused")
		}
		var rejected []int
		for _, i := range pending {
			switch {
			case !counted(i):
				s.reported.Add(b.Events[i].Lost.NumEventsLost)
			case retryingRejects.Load():
				rejected = append(rejected, i)
			default:
				s.delivered.Add(1)
			}
		}
		if len(rejected) > 0 {
			return rejected, errors.New("message too large")
		}
		return nil, nil
	})
}

func (s *retryingSink) Close(context.Context) error { return nil }

func init() {
	pipeline.RegisterSink(pipeline.Spec{Type: "test-retrying", Summary: "test sink on sinkutil.Retry with an outage switch"}, func(b *pipeline.Build, _ *struct{}) (*retryingSink, error) {
		m, err := sinkutil.NewMetrics(nil)
		if err != nil {
			return nil, err
		}
		s := &retryingSink{}
		s.retry = &sinkutil.Retry{
			Name: "test", MaxAttempts: 2,
			Backoff: sinkutil.Backoff{Min: time.Millisecond, Max: 2 * time.Millisecond},
			Metrics: m,
			Log:     slog.New(slog.NewTextHandler(&s.log, &slog.HandlerOptions{Level: slog.LevelDebug})),
		}
		retryingSinks.Store(b.Name, s)
		return s, nil
	})
}

// While the broker is away, a sink behind a disk buffer gives its batches
// up after its attempts, but the buffer keeps them and writes them again:
// the sink must not announce a loss, and says once that the buffer keeps
// the batches; everything is delivered once the broker is back.
func TestDiskBufferOutageLog(t *testing.T) {
	dir := t.TempDir()
	brokerDown.Store(true)
	defer brokerDown.Store(false)
	p := load(t, retryingConfig(dir, "bus", 2000, "log-gen-done", "log-outage-over"))
	done := make(chan *pipeline.Summary)
	go func() { done <- run(t, p, context.Background()) }()
	<-gate("log-gen-done").ch
	time.Sleep(200 * time.Millisecond) // several failed writes
	brokerDown.Store(false)
	k := retryingNamed("bus")
	for k.delivered.Load() < 2000 {
		time.Sleep(10 * time.Millisecond)
	}
	gate("log-outage-over").open()
	s := <-done
	if s.Total.Received != 2000 || s.Total.Delivered != 2000 || s.Total.Lost != 0 {
		t.Fatalf("summary %v", s.Total)
	}
	log := k.log.String()
	if strings.Contains(log, "LostEvent") {
		t.Errorf("a sink behind a disk buffer announced a loss:\n%s", log)
	}
	if n := strings.Count(log, `level=WARN msg="test: write failed; the disk buffer keeps the batch and writes it again`); n != 1 {
		t.Errorf("%d warnings that the disk buffer keeps the batch, want 1:\n%s", n, log)
	}
	if strings.Count(log, `level=DEBUG msg="test: write failed; the disk buffer keeps the batch`) == 0 {
		t.Errorf("no debug line for the later failures:\n%s", log)
	}
	if n := strings.Count(log, `level=INFO msg="test: delivering again`); n != 1 {
		t.Errorf("%d lines that delivery resumed, want 1:\n%s", n, log)
	}
}

// A batch that a ready sink keeps failing is given up as lost after a few
// writes even from a disk buffer: the last write is not written again, and
// the sink announces the loss then, and only then.
func TestDiskBufferRejectedLog(t *testing.T) {
	retryingRejects.Store(true)
	defer retryingRejects.Store(false)
	p := load(t, retryingConfig(t.TempDir(), "rejecting", 100, "", ""))
	s := run(t, p, context.Background())
	if s.Total.Received != 100 || s.Total.Delivered != 0 || s.Total.Lost != 100 {
		t.Fatalf("summary %v", s.Total)
	}
	k := retryingNamed("rejecting")
	if n := k.reported.Load(); n != 100 {
		t.Errorf("LostEvents report %d lost, want 100", n)
	}
	log := k.log.String()
	if n := strings.Count(log, `msg="test: write failed; the disk buffer keeps the batch`); n != 2 {
		t.Errorf("%d lines that the disk buffer keeps the batch, want 2 (the writes before the last):\n%s", n, log)
	}
	if n := strings.Count(log, `level=WARN msg="test: giving up on messages; they are reported in a LostEvent"`); n != 1 {
		t.Errorf("%d warnings of a loss, want 1 (the last write):\n%s", n, log)
	}
}

func retryingNamed(name string) *retryingSink {
	v, _ := retryingSinks.Load(name)
	return v.(*retryingSink)
}

// retryingConfig runs count flows from a generator into a test-retrying
// sink named name behind a disk buffer in dir; done and hold are the
// generator's gates.
func retryingConfig(dir, name string, count int, done, hold string) string {
	return fmt.Sprintf(`
metrics: {listen: ""}
lost_event_interval: 20ms
shutdown_timeout: 5s
sources:
  gen: {type: test-count, count: %d, batch: 100, done: %q, hold: %q}
sinks:
  %s:
    type: test-retrying
    inputs: [gen]
    buffer: {type: disk, path: %q, max_bytes: 64MiB}
`, count, done, hold, name, dir)
}
