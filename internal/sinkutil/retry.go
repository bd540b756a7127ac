package sinkutil

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"
)

// Retry drives the attempts of a broker sink's Write: it sends what is
// pending, waits with exponential backoff, sends what failed again, and
// gives up after MaxAttempts. Both broker sinks use it, so that they count,
// give up and report alike.
//
// Counted events (flows, and LostEvents read from a source) that are given
// up are returned as failed: the runtime reports them in a LostEvent,
// which Deliver logs at warn each time. When the runtime writes the batch
// again instead (a disk buffer, pipeline.Batch.WrittenAgain), nothing is
// lost: Deliver logs that at warn once when such failures start, at debug
// while they go on, and at info once a batch is delivered again. The
// counts (Failed) are the same either way.
//
// flowbus's own LostEvents (Event.Reported) come in batches of their own.
// They are given up like the rest, and the runtime puts their losses back
// to report them again at the next flush, so retrying them never holds the
// flows back for longer than one Write's budget. While they fail (their
// destination is missing, say a topic that does not exist or a subject no
// stream captures) each later LostEvent batch gets a single attempt, the
// sink is unready (LostReady), and the condition is logged once at warn
// when it starts and once at info when it ends; the losses still count in
// the summary's lost.
type Retry struct {
	// Name prefixes log messages ("kafka").
	Name string
	// MaxAttempts is the number of attempts per event (at least 1).
	MaxAttempts int
	// Backoff spaces the attempts.
	Backoff Backoff
	// Done is closed when the sink closes: pending events are then given
	// up at once.
	Done <-chan struct{}
	// Metrics receives Retried, Failed and LostFailed.
	Metrics *Metrics
	// Log receives the give-up and LostEvent messages.
	Log *slog.Logger
	// Reachable, when set, reports whether the broker can be reached. A
	// backoff wait that starts while it cannot polls Reachable every
	// ReachPoll and ends as soon as the broker is back, so delivery resumes
	// within one poll of the broker's return instead of after a backoff
	// that grew during the outage (up to Backoff.Max).
	Reachable func() bool
	// ReachPoll is the polling interval of Reachable; default 50ms.
	ReachPoll time.Duration

	lostErr atomic.Pointer[error]
	// keptFailing is set while batches that the runtime writes again
	// keep failing (logged once, see Deliver).
	keptFailing atomic.Bool
}

// Send makes one attempt at delivering the items pending (indexes into the
// sink's prepared items; attempt counts from 1) and returns the items that
// failed, with the last error seen.
type Send func(ctx context.Context, pending []int, attempt int) (failed []int, err error)

// Deliver sends the items pending until each is acknowledged or given up.
// counted reports whether an item is a counted event (not one of
// flowbus's own LostEvents). again is the batch's WrittenAgain: the
// runtime writes the batch again if items fail, so giving them up loses
// nothing (it changes only what is logged). It returns the number of items
// given up; err is ctx's error when ctx ended first (every unacknowledged
// item is then included in failed).
func (r *Retry) Deliver(ctx context.Context, pending []int, counted func(int) bool, again bool, send Send) (failed int, err error) {
	if len(pending) == 0 {
		return 0, nil
	}
	lostOnly := true
	for _, i := range pending {
		if counted(i) {
			lostOnly = false
			break
		}
	}
	maxAttempts := max(r.MaxAttempts, 1)
	if lostOnly && r.lostErr.Load() != nil {
		// The last LostEvents failed: one attempt, so that a destination
		// that cannot take them costs the flows one round trip per flush.
		maxAttempts = 1
	}
	var lastErr error
	woke := false
	for attempt := 1; ; attempt++ {
		if attempt > 1 {
			r.Metrics.Retried.Add(float64(len(pending)))
			d := r.Backoff.Delay(attempt - 1)
			if woke {
				// The broker just came back and the first attempt still
				// failed (on a connection of before the outage, say): try
				// again after one poll, not after a grown backoff.
				d = min(d, r.poll())
			}
			woke = r.wait(ctx, d)
		}
		if ctx.Err() != nil {
			return len(pending), ctx.Err()
		}
		var err error
		pending, err = send(ctx, pending, attempt)
		if err != nil {
			lastErr = err
		}
		if len(pending) == 0 {
			break
		}
		if ctx.Err() != nil {
			return len(pending), ctx.Err()
		}
		if closed(r.Done) || attempt >= maxAttempts {
			failed = r.giveUp(pending, counted, again, lastErr)
			break
		}
	}
	if !lostOnly && failed == 0 && r.keptFailing.Load() && r.keptFailing.Swap(false) {
		r.Log.Info(r.Name + ": delivering again; the batches the disk buffer kept are written")
	}
	if lostOnly {
		r.lostResult(failed > 0, lastErr)
	}
	return failed, nil
}

// wait sleeps d, or until ctx ends or the sink closes, or, when the
// broker was unreachable as the wait began, until it is reachable again;
// it reports whether it ended because the broker came back.
func (r *Retry) wait(ctx context.Context, d time.Duration) (woke bool) {
	if r.Reachable == nil || r.Reachable() {
		Sleep(r.Done, d, ctx.Done())
		return false
	}
	end := time.Now().Add(d)
	for {
		left := time.Until(end)
		if left <= 0 || !Sleep(r.Done, min(left, r.poll()), ctx.Done()) {
			return false
		}
		if r.Reachable() {
			return true
		}
	}
}

func (r *Retry) poll() time.Duration {
	if r.ReachPoll > 0 {
		return r.ReachPoll
	}
	return 50 * time.Millisecond
}

// giveUp counts the items pending as given up; again is the batch's
// WrittenAgain.
func (r *Retry) giveUp(pending []int, counted func(int) bool, again bool, err error) int {
	gave, lost := 0, 0
	for _, i := range pending {
		if counted(i) {
			gave++
		} else {
			lost++
		}
	}
	if gave > 0 {
		r.Metrics.Failed.Add(float64(gave))
		switch {
		case !again:
			r.Log.Warn(r.Name+": giving up on messages; they are reported in a LostEvent",
				"messages", gave, "max_attempts", r.MaxAttempts, "err", err)
		case !r.keptFailing.Swap(true):
			r.Log.Warn(r.Name+": write failed; the disk buffer keeps the batch and writes it again (logged once until a batch is delivered)",
				"messages", gave, "max_attempts", r.MaxAttempts, "err", err)
		default:
			r.Log.Debug(r.Name+": write failed; the disk buffer keeps the batch and writes it again",
				"messages", gave, "err", err)
		}
	}
	if lost > 0 {
		r.Metrics.LostFailed.Add(float64(lost))
	}
	return len(pending)
}

// lostResult records whether a batch of LostEvents failed.
func (r *Retry) lostResult(failed bool, err error) {
	if !failed {
		if r.lostErr.Swap(nil) != nil {
			r.Log.Info(r.Name + ": LostEvents are delivered again")
		}
		return
	}
	if err == nil {
		err = errors.New("not acknowledged")
	}
	e := fmt.Errorf("%s: cannot deliver LostEvents (their losses are reported again at the next flush): %w", r.Name, err)
	if r.lostErr.Swap(&e) == nil {
		r.Log.Warn(r.Name+": cannot deliver LostEvents; flows keep being delivered, the losses stay counted and are reported again at the next flush; the sink is unready until one is delivered",
			"err", err)
	}
}

// LostReady returns an error while the sink's LostEvents cannot be
// delivered.
func (r *Retry) LostReady() error {
	if p := r.lostErr.Load(); p != nil {
		return *p
	}
	return nil
}

func closed(c <-chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}
