package pipeline

import (
	"sync/atomic"
)

// Ack is the end-to-end acknowledgement of one batch from a source that
// can replay what it emitted (a Kafka consumer group, a JetStream durable
// consumer). The source attaches it to the batch with Batch.SetAck before
// Emit; the runtime calls its function exactly once, when every copy of the
// batch's events has been resolved:
//
//   - ok (true) when every sink downstream delivered each event, or a
//     transform removed it on purpose (filtered, sampled, rate-limited);
//   - not ok (false) when any sink gave up on one of its events, a buffer
//     refused the batch (when_full: drop_newest, or the shutdown deadline),
//     a component panicked on it, or Emit refused it (the source's context
//     ended): the source must not commit it, so that the broker redelivers.
//
// The rule that makes it exactly once: an Ack counts holders, not events.
// The batch the source emits is one holder. Where the runtime passes a
// batch to several consumers (a fan-out: sinks sharing the batch, or
// transforms getting clones), every consumer's copy is a holder of its own.
// Each holder resolves exactly once: a sink when its Write returns (not ok
// when it failed any event), a transform's copy when the transform removed
// every event (ok) or by being passed on (the holder moves downstream), a
// buffer when it refuses the batch (not ok). A sink that keeps events past
// Write (splitting a batch across its own batches, or delivering later)
// takes a holder of its own with Batch.Ack().Hold before Write returns and
// resolves it with Done when the last of those events is delivered or
// given up. A sink that delivered the events and only keeps them to read
// later (a ring) takes a Lease on the batch instead, which holds no Ack.
//
// The function runs on the goroutine that resolved the last holder (usually
// a sink's): it must be quick and must not block on the pipeline.
// Batches without an Ack (every kernel source) cost the runtime one nil
// check per hand-over.
type Ack struct {
	holders atomic.Int32
	failed  atomic.Bool
	fn      func(ok bool)
}

// NewAck returns an Ack with one holder (the batch it is attached to) that
// calls fn once, when the last holder resolves.
func NewAck(fn func(ok bool)) *Ack {
	a := &Ack{fn: fn}
	a.holders.Store(1)
	return a
}

// Hold adds a holder and returns a, for a component that resolves some of
// the batch's events later; nil (no Ack) returns nil. Every Hold needs one
// Done.
func (a *Ack) Hold() *Ack {
	if a != nil {
		a.holders.Add(1)
	}
	return a
}

// Done resolves one holder: ok when its events were delivered or removed
// on purpose, false when any of them was lost. The last Done calls the
// Ack's function. Done on nil does nothing.
func (a *Ack) Done(ok bool) {
	if a == nil {
		return
	}
	if !ok {
		a.failed.Store(true)
	}
	switch n := a.holders.Add(-1); {
	case n == 0:
		a.fn(!a.failed.Load())
	case n < 0:
		panic("pipeline: Ack resolved more often than held")
	}
}

// add adds n holders (a fan-out to n+1 consumers).
func (a *Ack) add(n int) {
	if a != nil && n > 0 {
		a.holders.Add(int32(n))
	}
}

// SetAck attaches a to b; b's events then resolve a (see Ack). A source
// calls it before Emit, at most once per batch.
func (b *Batch) SetAck(a *Ack) { b.ack = a }

// Ack returns the acknowledgement attached to b, nil when it has none.
func (b *Batch) Ack() *Ack { return b.ack }
