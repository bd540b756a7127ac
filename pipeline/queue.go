package pipeline

import (
	"context"
	"sync"
	"sync/atomic"
)

// item is a queued batch with its count of counted events (see
// Batch.Counted), computed once by the producer, and its size in bytes (see
// Batch.Bytes), computed by push.
type item struct {
	b       *Batch
	counted int
	bytes   int
}

// queue is the bounded buffer in front of a transform or sink. Its capacity
// is counted in events and in bytes (Batch.Bytes): it is full when either
// is reached. It moves whole batches, so a push or pop costs one lock per
// batch, not per event. One goroutine consumes it; any number of producers
// (the node's inputs) push into it.
type queue struct {
	mu       sync.Mutex
	ring     []item // ring buffer of queued batches
	head, n  int
	events   int // events queued (all of them, LostEvents included)
	bytes    int // their Batch.Bytes
	capacity int
	maxBytes int
	drop     bool // when_full: drop_newest
	closed   bool

	producers int           // producers still running; 0 closes the queue
	space     chan struct{} // closed when space frees up; nil without waiters
	wake      chan struct{} // a token wakes the consumer

	// signal asks the consumer to return from pop without data (to flush
	// pending LostEvents).
	signal atomic.Bool
}

func newQueue(capacity, maxBytes int, drop bool) *queue {
	return &queue{
		ring:     make([]item, 16),
		capacity: capacity,
		maxBytes: maxBytes,
		drop:     drop,
		wake:     make(chan struct{}, 1),
	}
}

// push appends it. It blocks while the queue is full (when_full: block)
// until there is room or abort is done. It returns false when it did not
// take the batch: the queue is full and drops (when_full: drop_newest), it
// is closed, or abort ended the wait; the caller then still owns the batch.
// A batch larger than the capacity is taken when the queue is empty.
func (q *queue) push(abort context.Context, it item) bool {
	size := it.b.Len()
	it.bytes = it.b.Bytes()
	q.mu.Lock()
	for {
		if q.closed {
			q.mu.Unlock()
			return false
		}
		if q.events == 0 || q.events+size <= q.capacity && q.bytes+it.bytes <= q.maxBytes {
			break
		}
		if q.drop {
			q.mu.Unlock()
			return false
		}
		if q.space == nil {
			q.space = make(chan struct{})
		}
		ch := q.space
		q.mu.Unlock()
		select {
		case <-ch:
		case <-abort.Done():
			return false
		}
		q.mu.Lock()
	}
	if q.n == len(q.ring) {
		q.grow()
	}
	q.ring[(q.head+q.n)%len(q.ring)] = it
	q.n++
	q.events += size
	q.bytes += it.bytes
	q.mu.Unlock()
	q.notify()
	return true
}

func (q *queue) notify() {
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

func (q *queue) grow() {
	r := make([]item, 2*len(q.ring))
	for i := 0; i < q.n; i++ {
		r[i] = q.ring[(q.head+i)%len(q.ring)]
	}
	q.ring, q.head = r, 0
}

// pop returns the oldest batch. It blocks until there is one; ok is false
// once the queue is closed and empty. It returns an item without a batch
// (and ok true) when poked.
func (q *queue) pop() (it item, ok bool) {
	q.mu.Lock()
	for {
		if q.signal.Swap(false) {
			q.mu.Unlock()
			return item{}, true
		}
		if q.n > 0 {
			it = q.ring[q.head]
			q.ring[q.head] = item{}
			q.head = (q.head + 1) % len(q.ring)
			q.n--
			q.events -= it.b.Len()
			q.bytes -= it.bytes
			if q.space != nil {
				close(q.space)
				q.space = nil
			}
			q.mu.Unlock()
			return it, true
		}
		if q.closed {
			q.mu.Unlock()
			return item{}, false
		}
		q.mu.Unlock()
		<-q.wake
		q.mu.Lock()
	}
}

// poke makes the consumer's pop return (see signal).
func (q *queue) poke() {
	q.signal.Store(true)
	q.notify()
}

// addProducer counts one more producer.
func (q *queue) addProducer() {
	q.mu.Lock()
	q.producers++
	q.mu.Unlock()
}

// producerDone marks one producer finished; the last one closes the queue,
// and the consumer exits once it has drained it.
func (q *queue) producerDone() {
	q.mu.Lock()
	q.producers--
	if q.producers <= 0 {
		q.closeLocked()
	}
	q.mu.Unlock()
}

func (q *queue) closeLocked() {
	if q.closed {
		return
	}
	q.closed = true
	if q.space != nil {
		close(q.space)
		q.space = nil
	}
	q.notify()
}

// length returns the number of queued events.
func (q *queue) length() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.events
}
