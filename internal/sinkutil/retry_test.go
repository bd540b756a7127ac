package sinkutil

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

func newRetry(t *testing.T, attempts int) *Retry {
	t.Helper()
	m, err := NewMetrics(nil)
	if err != nil {
		t.Fatal(err)
	}
	return &Retry{
		Name: "test", MaxAttempts: attempts,
		Backoff: Backoff{Min: time.Millisecond, Max: 2 * time.Millisecond},
		Done:    make(chan struct{}), Metrics: m,
		Log: slog.New(slog.NewTextHandler(io.Discard, nil)),
	}
}

// failing returns a Send that fails the items in bad for the first n
// attempts, and counts the attempts.
func failing(n int, calls *int) Send {
	return func(_ context.Context, pending []int, attempt int) ([]int, error) {
		*calls++
		if attempt <= n {
			return pending, errors.New("refused")
		}
		return nil, nil
	}
}

func TestRetryDeliver(t *testing.T) {
	all := func(int) bool { return true }
	none := func(int) bool { return false }
	tests := []struct {
		name       string
		attempts   int
		failFirst  int
		counted    func(int) bool
		wantFailed int
		wantCalls  int
	}{
		{"first attempt", 3, 0, all, 0, 1},
		{"second attempt", 3, 1, all, 0, 2},
		{"given up", 3, 5, all, 4, 3},
		{"LostEvents given up too", 3, 5, none, 4, 3},
		{"zero attempts means one", 0, 5, all, 4, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := newRetry(t, tt.attempts)
			calls := 0
			failed, err := r.Deliver(context.Background(), []int{0, 1, 2, 3}, tt.counted, false, failing(tt.failFirst, &calls))
			if failed != tt.wantFailed || err != nil || calls != tt.wantCalls {
				t.Errorf("failed=%d err=%v calls=%d, want failed=%d calls=%d", failed, err, calls, tt.wantFailed, tt.wantCalls)
			}
		})
	}
}

// TestRetryLostEventsFailing: once a LostEvent batch failed, the sink is
// unready and the next LostEvent batch gets a single attempt; flows keep
// their full budget; a delivered LostEvent batch ends the condition.
func TestRetryLostEventsFailing(t *testing.T) {
	r := newRetry(t, 3)
	lost := func(int) bool { return false }
	calls := 0
	if failed, _ := r.Deliver(context.Background(), []int{0}, lost, false, failing(100, &calls)); failed != 1 || calls != 3 {
		t.Fatalf("failed=%d calls=%d, want 1 and 3", failed, calls)
	}
	if r.LostReady() == nil {
		t.Fatal("LostReady nil after failed LostEvents")
	}
	calls = 0
	if failed, _ := r.Deliver(context.Background(), []int{0}, lost, false, failing(100, &calls)); failed != 1 || calls != 1 {
		t.Fatalf("while failing: failed=%d calls=%d, want 1 and 1", failed, calls)
	}
	calls = 0
	if failed, _ := r.Deliver(context.Background(), []int{0, 1}, func(int) bool { return true }, false, failing(2, &calls)); failed != 0 || calls != 3 {
		t.Fatalf("flows: failed=%d calls=%d, want 0 and 3", failed, calls)
	}
	if r.LostReady() == nil {
		t.Fatal("delivered flows ended the LostEvent condition")
	}
	calls = 0
	if failed, _ := r.Deliver(context.Background(), []int{0}, lost, false, failing(0, &calls)); failed != 0 {
		t.Fatalf("delivered LostEvent: failed=%d", failed)
	}
	if err := r.LostReady(); err != nil {
		t.Fatalf("LostReady after a delivered LostEvent: %v", err)
	}
}

func TestRetryContextAndClose(t *testing.T) {
	r := newRetry(t, 1000)
	r.Backoff = Backoff{Min: time.Hour, Max: time.Hour}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	calls := 0
	failed, err := r.Deliver(ctx, []int{0, 1}, func(int) bool { return true }, false, failing(1000, &calls))
	if failed != 2 || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("ctx ended: failed=%d err=%v", failed, err)
	}
	done := make(chan struct{})
	r.Done = done
	go func() { time.Sleep(10 * time.Millisecond); close(done) }()
	failed, err = r.Deliver(context.Background(), []int{0, 1}, func(int) bool { return true }, false, failing(1000, &calls))
	if failed != 2 || err != nil {
		t.Fatalf("closed: failed=%d err=%v", failed, err)
	}
}

// TestRetryWakesWhenReachable: a backoff that began with the broker
// unreachable ends once Reachable reports it back.
func TestRetryWakesWhenReachable(t *testing.T) {
	r := newRetry(t, 2)
	r.Backoff = Backoff{Min: time.Hour, Max: time.Hour}
	r.ReachPoll = time.Millisecond
	polls := 0
	r.Reachable = func() bool { polls++; return polls > 3 }
	calls := 0
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if failed, err := r.Deliver(ctx, []int{0}, func(int) bool { return true }, false, failing(1, &calls)); failed != 0 || err != nil || calls != 2 {
		t.Fatalf("failed=%d err=%v calls=%d, want the second attempt right after the broker is back", failed, err, calls)
	}
}

// TestRetryAfterWakeRetriesSoon: when the first attempt after the broker
// came back still fails (a connection of before the outage), the next one
// follows one poll later, not a grown backoff later.
func TestRetryAfterWakeRetriesSoon(t *testing.T) {
	r := newRetry(t, 3)
	r.Backoff = Backoff{Min: time.Hour, Max: time.Hour}
	r.ReachPoll = time.Millisecond
	polls := 0
	r.Reachable = func() bool { polls++; return polls > 3 }
	calls := 0
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if failed, err := r.Deliver(ctx, []int{0}, func(int) bool { return true }, false, failing(2, &calls)); failed != 0 || err != nil || calls != 3 {
		t.Fatalf("failed=%d err=%v calls=%d, want the third attempt a poll after the second", failed, err, calls)
	}
}

// A batch that the runtime writes again (a disk buffer) loses nothing when
// it is given up: the log says so once per outage instead of announcing a
// LostEvent at each batch, and the counts are those of a loss.
func TestRetryWrittenAgainLog(t *testing.T) {
	r := newRetry(t, 2)
	var buf bytes.Buffer
	r.Log = slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	all := func(int) bool { return true }
	calls := 0
	for range 3 {
		if failed, err := r.Deliver(context.Background(), []int{0, 1}, all, true, failing(100, &calls)); failed != 2 || err != nil {
			t.Fatalf("failed %d, err %v", failed, err)
		}
	}
	if got := testutil.ToFloat64(r.Metrics.Failed); got != 6 {
		t.Errorf("Failed %v, want 6 (the counts do not depend on WrittenAgain)", got)
	}
	if _, err := r.Deliver(context.Background(), []int{0, 1}, all, true, failing(0, &calls)); err != nil {
		t.Fatal(err)
	}
	// The next outage is logged again, and a batch that is not written
	// again is announced as lost.
	r.Deliver(context.Background(), []int{0}, all, true, failing(100, &calls))
	r.Deliver(context.Background(), []int{0}, all, false, failing(100, &calls))
	var got []string
	for _, line := range strings.Split(strings.TrimSpace(buf.String()), "\n") {
		level, _, _ := strings.Cut(line[strings.Index(line, "level=")+len("level="):], " ")
		msg := line[strings.Index(line, "msg=")+len("msg="):]
		msg, _, _ = strings.Cut(strings.Trim(msg, `"`), ";")
		got = append(got, level+" "+msg)
	}
	want := []string{
		"WARN test: write failed",
		"DEBUG test: write failed",
		"DEBUG test: write failed",
		"INFO test: delivering again",
		"WARN test: write failed",
		"WARN test: giving up on messages",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("log:\n%s\nwant:\n%s\nfull:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"), buf.String())
	}
	if strings.Contains(strings.Split(buf.String(), "\n")[0], "LostEvent") {
		t.Errorf("a batch written again is announced as lost: %s", buf.String())
	}
}
