package pipeline_test

import (
	"context"
	"testing"
	"time"

	"github.com/flowbus/flowbus/pipeline"
)

// Every batch's Ack is called exactly once, whatever the shape of the graph
// below the source: one sink, sinks sharing the batch, transforms getting
// clones, a filter that removes every event, a sink that resolves later.
func TestAckOncePerBatch(t *testing.T) {
	for _, tc := range []struct {
		name, yaml string
		batches    int
		want       func(i int) bool // the expected result of batch i
	}{
		{"one sink", `
sources:
  gen: {type: test-count, count: 1000, batch: 100, ack: gen}
sinks:
  out: {type: test-rec, inputs: [gen]}
`, 10, func(int) bool { return true }},
		{"sinks share the batch, one gives up on every 3rd", `
sources:
  gen: {type: test-count, count: 1000, batch: 100, ack: gen}
sinks:
  a: {type: test-rec, inputs: [gen]}
  b: {type: test-rec, inputs: [gen], fail_every: 3}
`, 10, func(i int) bool { return (i+1)%3 != 0 }},
		{"two transforms get clones, sinks join again", `
sources:
  gen: {type: test-count, count: 1000, batch: 100, ack: gen}
transforms:
  f1: {type: test-odd, inputs: [gen]}
  f2: {type: test-odd, inputs: [gen]}
sinks:
  a: {type: test-rec, inputs: [f1, f2, gen]}
  b: {type: test-rec, inputs: [f2], fail_every: 4}
`, 10, func(i int) bool { return (i+1)%4 != 0 }},
		{"a filter removes every event", `
sources:
  gen: {type: test-count, count: 1000, batch: 100, ack: gen, odds: true}
transforms:
  odd: {type: test-odd, inputs: [gen]}
sinks:
  out: {type: test-rec, inputs: [odd], fail_every: 1}
`, 10, func(int) bool { return true }},
		{"a sink resolves after Write", `
sources:
  gen: {type: test-count, count: 1000, batch: 100, ack: gen}
sinks:
  a: {type: test-rec, inputs: [gen], later: true}
  b: {type: test-rec, inputs: [gen]}
`, 10, func(int) bool { return true }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := load(t, "metrics: {listen: \"\"}\n"+tc.yaml)
			run(t, p, context.Background())
			time.Sleep(20 * time.Millisecond) // the sink that resolves later
			for i, ok := range ackResults(t, "gen", tc.batches) {
				if ok != tc.want(i) {
					t.Errorf("batch %d: ack ok=%v, want %v", i, ok, tc.want(i))
				}
			}
		})
	}
}

// A buffer that refuses a batch (when_full: drop_newest) nacks it; the
// batches the sink wrote are acked.
func TestAckDropNewestNacks(t *testing.T) {
	p := load(t, `
metrics: {listen: ""}
sources:
  gen: {type: test-count, count: 20000, batch: 100, ack: gen, done: src-done}
sinks:
  slow:
    type: test-rec
    inputs: [gen]
    wait: src-done
    buffer: {events: 1000, when_full: drop_newest}
`)
	s := run(t, p, context.Background())
	var okN, nackN uint64
	for _, ok := range ackResults(t, "gen", 200) {
		if ok {
			okN += 100
		} else {
			nackN += 100
		}
	}
	if okN != s.Total.Delivered || nackN != s.Total.Lost || nackN == 0 {
		t.Errorf("acked %d and nacked %d events; the summary delivered %d and lost %d", okN, nackN, s.Total.Delivered, s.Total.Lost)
	}
}

// Emit after the source's context ended nacks the batch.
func TestAckEmitAfterCancelNacks(t *testing.T) {
	p := load(t, `
metrics: {listen: ""}
sources:
  gen: {type: test-count, count: 0, batch: 10, ack: gen}
sinks:
  out: {type: test-rec, inputs: [gen]}
`)
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(50*time.Millisecond, cancel)
	run(t, p, ctx)
	n := 0
	acks.Range(func(any, any) bool { n++; return true })
	res := ackResults(t, "gen", n)
	if res[n-1] {
		t.Errorf("the batch emitted after the cancellation was acked ok")
	}
	for i, ok := range res[:n-1] {
		if !ok {
			t.Errorf("batch %d was nacked", i)
		}
	}
}

func TestAckNilIsFree(t *testing.T) {
	var a *pipeline.Ack
	if a.Hold() != nil {
		t.Fatal("Hold on nil returned an Ack")
	}
	a.Done(false)
	b := pipeline.NewBatch()
	if b.Ack() != nil {
		t.Fatal("a new batch has an Ack")
	}
	b.SetAck(pipeline.NewAck(func(bool) {}))
	b.Release()
	if b2 := pipeline.NewBatch(); b2.Ack() != nil {
		t.Fatal("a pooled batch kept its Ack")
	}
}

func TestAckResolvedTooOftenPanics(t *testing.T) {
	a := pipeline.NewAck(func(bool) {})
	a.Done(true)
	defer func() {
		if recover() == nil {
			t.Fatal("a second Done did not panic")
		}
	}()
	a.Done(true)
}

// Batches of a memory buffer are lent with late delivery allowed; the
// batches of reported LostEvents never are (the runtime reports their
// losses again when Write fails them).
func TestLateDeliveryMemoryBuffers(t *testing.T) {
	p := load(t, `
metrics: {listen: ""}
lost_event_interval: 5ms
sources:
  gen: {type: test-count, count: 5000, batch: 100}
sinks:
  a: {type: test-rec, inputs: [gen], fail_every: 5, delay: 1ms}
`)
	s := run(t, p, context.Background())
	a := sinkNamed("a")
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.lateData != 50 || a.syncData != 0 || a.lateReported != 0 || len(a.lost) == 0 {
		t.Fatalf("batches of flows: %d late, %d not; %d batches of %d LostEvents late; want 50, 0 and 0",
			a.lateData, a.syncData, a.lateReported, len(a.lost))
	}
	if !s.Total.Reconciles() || s.Total.Lost == 0 {
		t.Errorf("summary %v: want losses, reconciled", s.Total)
	}
}

// A late loss reported before the runtime counted the batch delivered (a
// sink's resolver that gave up at once) still moves every event from
// delivered to lost.
func TestLateLossBeforeWriteReturns(t *testing.T) {
	p := load(t, `
metrics: {listen: ""}
sources:
  gen: {type: test-count, count: 1000, batch: 100}
sinks:
  a: {type: test-rec, inputs: [gen], lose_early: true}
`)
	s := run(t, p, context.Background())
	if s.Total.Delivered != 0 || s.Total.Lost != 1000 || !s.Total.Reconciles() {
		t.Fatalf("summary %v: want 1000 lost, none delivered", s.Total)
	}
}
