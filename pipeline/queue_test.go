package pipeline

import (
	"context"
	"testing"
)

func bigBatch(events, inputBytes int) *Batch {
	b := NewBatch()
	for range events {
		b.Next()
		b.AddInputBytes(inputBytes)
	}
	return b
}

// TestQueueBoundsBytes: a buffer is full at max_bytes even when it holds
// few events (a few 50 MB lines must not be queued by the thousand).
func TestQueueBoundsBytes(t *testing.T) {
	const mb = 1 << 20
	q := newQueue(8192, 64*mb, true)
	ctx := context.Background()
	for i := range 3 {
		if !q.push(ctx, item{b: bigBatch(1, 20*mb), counted: 1}) {
			t.Fatalf("push %d of 20 MB refused", i)
		}
	}
	if q.push(ctx, item{b: bigBatch(1, 20*mb), counted: 1}) {
		t.Fatal("a fourth 20 MB event was queued past max_bytes 64 MiB")
	}
	if want := 3 * (20*mb + EventOverhead); q.bytes != want {
		t.Errorf("bytes = %d, want %d", q.bytes, want)
	}
	// An empty queue takes a batch whatever its size.
	for range 3 {
		it, _ := q.pop()
		it.b.Release()
	}
	if q.bytes != 0 || q.events != 0 {
		t.Errorf("after draining: bytes %d, events %d", q.bytes, q.events)
	}
	if !q.push(ctx, item{b: bigBatch(2, 100*mb), counted: 2}) {
		t.Error("an empty queue refused a batch over max_bytes")
	}

	// when_full: block waits for room.
	q = newQueue(8192, 64*mb, false)
	q.push(ctx, item{b: bigBatch(1, 60*mb), counted: 1})
	done := make(chan bool)
	go func() { done <- q.push(ctx, item{b: bigBatch(1, 10*mb), counted: 1}) }()
	select {
	case <-done:
		t.Fatal("push did not wait for room")
	default:
	}
	it, _ := q.pop()
	it.b.Release()
	if !<-done {
		t.Error("blocked push failed once there was room")
	}
	// Small events are bounded by count first: 8192 × EventOverhead < 64 MiB.
	q = newQueue(8192, 64*mb, true)
	if !q.push(ctx, item{b: bigBatch(8192, 0), counted: 8192}) || q.push(ctx, item{b: bigBatch(1, 0), counted: 1}) {
		t.Error("event bound not applied")
	}
}

func TestBatchBytes(t *testing.T) {
	b := bigBatch(3, 1000)
	defer b.Release()
	if got, want := b.Bytes(), 3*EventOverhead+3000; got != want {
		t.Errorf("Bytes = %d, want %d", got, want)
	}
	c := b.Clone()
	if c.Bytes() != b.Bytes() {
		t.Errorf("clone: %d bytes, original %d", c.Bytes(), b.Bytes())
	}
	c.Truncate(1) // removing events keeps the (conservative) input count
	if c.InputBytes() != 3000 {
		t.Errorf("after Truncate(1): %d", c.InputBytes())
	}
	c.Release()
	if d := NewBatch(); d.InputBytes() != 0 {
		t.Errorf("a pooled batch starts with %d input bytes", d.InputBytes())
		d.Release()
	}
}
