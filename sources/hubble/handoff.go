package hubble

import (
	"context"
	"sync"
	"unsafe"

	"github.com/flowbus/flowbus/pipeline"
)

// handoff passes the responses of one stream from the goroutine that
// receives them to the one that decodes them. The reader copies each
// message into the storage of the batch it is filling (Batch.Alloc), so
// that the message's bytes are the batch's, reused with it; the decoder
// takes the whole batch of messages whenever it is free. A message costs a
// lock and a wake-up at most, not a channel's send and receive.
type handoff struct {
	max int // messages in a batch at most; also pipeline.DefaultBatchBytes

	mu    sync.Mutex
	b     *pipeline.Batch // being filled; nil when nothing is waiting
	msgs  []string        // the messages in b's storage
	spare []string        // the decoder's last msgs, for the next batch
	bytes int
	err   error // why the reader stopped, once it has
	// ready wakes the decoder: something to take. room wakes the
	// reader: the decoder took a full batch.
	ready, room chan struct{}
	done        chan struct{} // closed when read returns
}

func newHandoff(max int) *handoff {
	return &handoff{
		max:   max,
		ready: make(chan struct{}, 1),
		room:  make(chan struct{}, 1),
		done:  make(chan struct{}),
	}
}

func wake(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

// full reports whether the batch being filled is full. h.mu held.
func (h *handoff) full() bool {
	return len(h.msgs) >= h.max || h.bytes >= pipeline.DefaultBatchBytes
}

// read receives c's messages into h until the stream or ctx ends. The
// frames are read on this goroutine, and each message is copied from the
// frame it arrived in into the storage of the batch it goes to.
func (h *handoff) read(ctx context.Context, c *call) {
	defer close(h.done)
	err := c.recv(func(m []byte) error {
		h.mu.Lock()
		if h.b == nil {
			h.b = pipeline.NewBatch()
		}
		msg := copyInto(h.b, m)
		h.msgs = append(h.msgs, msg)
		h.bytes += len(msg)
		full := h.full()
		h.mu.Unlock()
		wake(h.ready)
		for full {
			// A full batch waits: reading no further holds the server
			// back once the window it was given is used up.
			select {
			case <-h.room:
			case <-ctx.Done():
				return ctx.Err()
			}
			h.mu.Lock()
			full = h.full()
			h.mu.Unlock()
		}
		return nil
	})
	h.mu.Lock()
	h.err = err
	h.mu.Unlock()
	wake(h.ready)
}

// copyInto copies a message into storage that b owns (Batch.Alloc) and
// returns the copy, which the flows decoded from it share their strings
// with: the copy is reused with the batch, so the source allocates nothing
// per message.
func copyInto(b *pipeline.Batch, m []byte) string {
	if len(m) == 0 {
		return ""
	}
	buf := b.Alloc(len(m))
	copy(buf, m)
	return unsafe.String(&buf[0], len(m))
}

// take waits for messages and returns them with the batch whose storage
// holds them, for the caller to decode into and emit. err is the reader's
// error once it has stopped and every message before it was taken.
func (h *handoff) take(ctx context.Context) (b *pipeline.Batch, msgs []string, err error) {
	for {
		h.mu.Lock()
		if h.b != nil {
			b, msgs = h.b, h.msgs
			h.b, h.msgs, h.spare, h.bytes = nil, h.spare[:0], msgs, 0
			h.mu.Unlock()
			wake(h.room)
			return b, msgs, nil
		}
		err = h.err
		h.mu.Unlock()
		if err != nil {
			return nil, nil, err
		}
		select {
		case <-h.ready:
		case <-ctx.Done():
			return nil, nil, ctx.Err()
		}
	}
}

// close waits for the reader to stop (its stream's context must be
// cancelled) and releases what it received and nobody took.
func (h *handoff) close() {
	<-h.done
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.b != nil {
		h.b.Release()
		h.b, h.msgs = nil, nil
	}
}
