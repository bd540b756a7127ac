package nats

import (
	"context"
	"fmt"
	"time"

	"github.com/flowbus/flowbus/internal/sinkutil"
	"github.com/flowbus/flowbus/pipeline"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"
)

type pending struct {
	idx int
	fut jetstream.PubAckFuture
}

// Write delivers b; see the package comment.
func (s *Sink) Write(ctx context.Context, b *pipeline.Batch) (failed int, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.waitConnected(ctx) {
		// Never connected: everything is given up (ctx ended, or the sink
		// closed at shutdown).
		s.m.Failed.Add(float64(b.Counted()))
		return b.Len(), ctx.Err()
	}
	start := time.Now()
	defer func() { s.m.Latency.Observe(time.Since(start).Seconds()) }()

	failed = s.prepare(b)
	todo := make([]int, 0, len(s.items))
	for i := range s.items {
		if s.items[i].ok {
			todo = append(todo, i)
		}
	}
	gave, err := s.retry.Deliver(ctx, todo, s.counted, func(ctx context.Context, todo []int, _ int) ([]int, error) {
		if s.jsc != nil {
			return s.publishJS(ctx, todo)
		}
		return s.publishCore(ctx, todo)
	})
	return failed + gave, err
}

func (s *Sink) counted(i int) bool { return s.items[i].counted }

// publishJS publishes the items once, at most max_pending unacknowledged
// at a time, and returns those that were not acknowledged.
func (s *Sink) publishJS(ctx context.Context, todo []int) (retry []int, lastErr error) {
	futs := s.futs[:0]
	head := 0
	resolve := func() bool {
		p := futs[head]
		head++
		select {
		case pa := <-p.fut.Ok():
			// Stored, or a duplicate of a stored message. A subject that
			// another stream captured is delivered too, but worth a word.
			if s.js.Stream != "" && pa.Stream != s.js.Stream {
				s.otherStream.Do(func() {
					s.log.Warn("nats: messages are stored by another stream than the configured one",
						"subject", s.items[p.idx].msg.Subject, "stream", pa.Stream, "configured", s.js.Stream)
				})
			}
			s.m.Acked.Inc()
		case err := <-p.fut.Err():
			s.log.Debug("nats: publish not acknowledged", "subject", s.items[p.idx].msg.Subject, "err", err)
			lastErr = fmt.Errorf("subject %s: %w", s.items[p.idx].msg.Subject, err)
			retry = append(retry, p.idx)
		case <-ctx.Done():
			retry = append(retry, p.idx)
			return false
		}
		return true
	}
	for n, i := range todo {
		for len(futs)-head >= s.js.MaxPending {
			if !resolve() {
				return s.abandon(futs[head:], todo[n:], retry), ctx.Err()
			}
		}
		s.m.Sent.Inc()
		var opts []jetstream.PublishOpt
		if !s.items[i].counted {
			opts = noLibraryRetry
		}
		fut, err := s.jsc.PublishMsgAsync(&s.items[i].msg, opts...)
		if err != nil {
			s.log.Debug("nats: publish failed", "err", err)
			lastErr = err
			retry = append(retry, i)
			continue
		}
		futs = append(futs, pending{idx: i, fut: fut})
	}
	for head < len(futs) {
		if !resolve() {
			return s.abandon(futs[head:], nil, retry), ctx.Err()
		}
	}
	s.futs = futs[:0]
	return retry, lastErr
}

// noLibraryRetry turns off the JetStream client's own resending of a
// publish that found no stream (2 × 250ms by default) for flowbus's own
// LostEvents: Write's retry driver retries them, and a lost_subject no
// stream captures then costs one round trip per attempt instead of half a
// second of the flows' time. (Flows keep the client's resend, which covers
// a stream changing leader, because passing options costs an allocation
// per publish.)
var noLibraryRetry = []jetstream.PublishOpt{jetstream.WithRetryAttempts(0)}

// abandon collects what is unresolved when ctx ends. The client may still
// hold the unresolved messages, so their storage is not reused.
func (s *Sink) abandon(futs []pending, unsent, retry []int) []int {
	for _, p := range futs {
		retry = append(retry, p.idx)
	}
	s.futs = nil
	s.abandoned = true
	return append(retry, unsent...)
}

// publishCore publishes the items once and flushes; it returns the items
// the client refused.
func (s *Sink) publishCore(ctx context.Context, todo []int) (retry []int, lastErr error) {
	sent := 0
	for _, i := range todo {
		s.m.Sent.Inc()
		if err := s.nc.PublishMsg(&s.items[i].msg); err != nil {
			s.log.Debug("nats: publish failed", "err", err)
			lastErr = err
			retry = append(retry, i)
			continue
		}
		sent++
	}
	if sent == 0 {
		return retry, lastErr
	}
	fctx, cancel := context.WithTimeout(ctx, s.ackTimeout)
	defer cancel()
	if err := s.nc.FlushWithContext(fctx); err != nil {
		// The messages are in the client's buffers and go out when the
		// connection is back: core NATS is at most once.
		s.log.Debug("nats: flush", "err", err)
		return retry, lastErr
	}
	s.m.Acked.Add(float64(sent))
	return retry, lastErr
}

// prepare encodes the events of b into the arena and builds their messages.
// It returns the number of events that could not be encoded.
func (s *Sink) prepare(b *pipeline.Batch) (failed int) {
	n := len(b.Events)
	if s.abandoned {
		s.items, s.arena, s.abandoned = nil, nil, false
	}
	if cap(s.items) < n {
		s.items = make([]item, n)
	}
	s.items = s.items[:n]
	arena := s.arena[:0]
	var scratch [256]byte
	for i := range b.Events {
		e := &b.Events[i]
		it := &s.items[i]
		hdr := it.hdr
		if hdr == nil {
			hdr = make(nats.Header, 6)
		} else {
			clear(hdr)
		}
		*it = item{counted: !e.Reported, hdr: hdr}

		tm := s.subject
		if e.Lost != nil && s.lostSubject != nil {
			tm = s.lostSubject
		}
		name := tm.Append(scratch[:0], e)
		subj, ok := s.names[string(name)]
		if !ok {
			subj = string(name)
			s.names[subj] = subj
		}

		off := len(arena)
		var err error
		if arena, err = s.enc.Append(arena, e); err != nil {
			arena = arena[:off]
			failed++
			s.m.Failed.Inc()
			s.encErr.Do(func() { s.log.Error("nats: cannot encode event; it is reported lost", "err", err) })
			continue
		}
		it.off, it.end, it.ok = off, len(arena), true

		node := sinkutil.NodeOf(e, s.nodeName)
		nv, ok := s.nodes[node]
		if !ok {
			nv = []string{node}
			s.nodes[node] = nv
		}
		h := it.hdr
		h[sinkutil.HeaderContentType] = s.ctype
		h[sinkutil.HeaderSchema] = s.schema
		h[sinkutil.HeaderNode] = nv
		if e.SampleRate > 1 {
			rv, ok := s.rates[e.SampleRate]
			if !ok {
				rate, _ := sinkutil.AppendSampleRate(nil, e)
				rv = []string{string(rate)}
				s.rates[e.SampleRate] = rv
			}
			h[sinkutil.HeaderSampleRate] = rv
		}
		if v, ok := sinkutil.AppendSeq(scratch[:0], s.seqPrefix, b, i); ok {
			it.seq[0] = string(v)
			h[sinkutil.HeaderSeq] = it.seq[:]
		}
		if s.jsc != nil {
			id := ""
			if e.Flow != nil {
				id = e.Flow.Uuid
			}
			if id == "" {
				id = nuid.Next()
			}
			it.id[0] = id
			h[jetstream.MsgIDHeader] = it.id[:]
		}
		it.msg = nats.Msg{Subject: subj, Header: h}
	}
	s.arena = arena
	for i := range s.items {
		if it := &s.items[i]; it.ok {
			it.msg.Data = arena[it.off:it.end:it.end]
		}
	}
	return failed
}
