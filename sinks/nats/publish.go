package nats

import (
	"context"
	"fmt"
	"strings"
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

// flight is the storage of one batch's messages: the encoded events, the
// messages and, while they are published, their futures. The synchronous
// path reuses one; every batch in flight has its own until it resolves.
type flight struct {
	items []item
	arena []byte
	futs  []pending
	// abandoned is set when publishes were left unresolved (ctx ended):
	// the client may still read the messages, so the storage is not reused.
	abandoned bool

	// For a batch in flight (see writeLate):
	ctx      context.Context
	ack      *pipeline.Ack
	todo     []int // the items published, or to retry
	unsent   []int // the items whose first publish failed
	firstErr error
	reserved int // its share of max_pending
}

func (f *flight) counted(i int) bool { return f.items[i].counted }

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

	if s.jsc != nil && b.LateDelivery() && b.Len() > 0 && b.Len() <= s.js.MaxPending &&
		!closed(s.done) && b.Counted() == b.Len() {
		return s.writeLate(ctx, b)
	}
	// Synchronous: the batches in flight resolve first, so that the
	// retry driver serves one batch at a time.
	if err := s.settle(ctx, 0); err != nil {
		s.m.Failed.Add(float64(b.Counted()))
		return b.Len(), err
	}
	if s.cur.abandoned {
		s.cur = &flight{}
	}
	fl := s.cur
	failed = s.prepare(fl, b)
	todo := make([]int, 0, len(fl.items))
	for i := range fl.items {
		if fl.items[i].ok {
			todo = append(todo, i)
		}
	}
	gave, err := s.retry.Deliver(ctx, todo, fl.counted, b.WrittenAgain(), func(ctx context.Context, todo []int, _ int) ([]int, error) {
		if s.jsc != nil {
			return s.publishJS(ctx, fl, todo)
		}
		return s.publishCore(ctx, fl, todo)
	})
	return failed + gave, err
}

// writeLate publishes the messages of b and returns without waiting for
// their PubAcks: up to max_pending messages of several batches are in
// flight, and the resolver goroutine awaits each batch's PubAcks in order,
// retries what failed (Write's attempts, backoff and giving up) and then
// resolves the batch: its holder of the source's Ack, and the counted
// events given up, which move from delivered to lost (LateLoser). Only
// events that could not be encoded are failed at once.
func (s *Sink) writeLate(ctx context.Context, b *pipeline.Batch) (failed int, err error) {
	n := b.Len()
	if err := s.settle(ctx, n); err != nil {
		s.m.Failed.Add(float64(b.Counted()))
		return n, err
	}
	fl := s.takeFlight()
	fl.ctx, fl.reserved = ctx, n
	failed = s.prepare(fl, b)
	fl.todo, fl.unsent, fl.futs, fl.firstErr = fl.todo[:0], fl.unsent[:0], fl.futs[:0], nil
	for i := range fl.items {
		if !fl.items[i].ok {
			continue
		}
		fl.todo = append(fl.todo, i)
		s.m.Sent.Inc()
		fut, err := s.jsc.PublishMsgAsync(&fl.items[i].msg)
		if err != nil {
			s.log.Debug("nats: publish failed", "err", err)
			fl.firstErr = err
			fl.unsent = append(fl.unsent, i)
			continue
		}
		fl.futs = append(fl.futs, pending{idx: i, fut: fut})
	}
	fl.ack = b.Ack().Hold()
	ch := s.flights
	s.resolving.Do(func() { go s.resolve(ch) })
	ch <- fl // never blocks: each flight holds at least one of max_pending
	return failed, nil
}

// settle waits until n more messages fit in max_pending beside those in
// flight (none in flight for n = 0), and reserves them.
func (s *Sink) settle(ctx context.Context, n int) error {
	for {
		s.fmu.Lock()
		if s.inflight == 0 || (n > 0 && s.inflight+n <= s.js.MaxPending) {
			s.inflight += n
			s.fmu.Unlock()
			return nil
		}
		s.fmu.Unlock()
		select {
		case <-s.freed:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// takeFlight returns storage for a batch in flight.
func (s *Sink) takeFlight() *flight {
	s.fmu.Lock()
	defer s.fmu.Unlock()
	if k := len(s.spare); k > 0 {
		fl := s.spare[k-1]
		s.spare = s.spare[:k-1]
		return fl
	}
	return &flight{}
}

// resolve resolves the batches in flight, in order, until Close closes
// flights.
func (s *Sink) resolve(flights <-chan *flight) {
	defer close(s.resolved)
	for fl := range flights {
		gave, err := s.retry.Deliver(fl.ctx, fl.todo, fl.counted, false, func(ctx context.Context, todo []int, attempt int) ([]int, error) {
			if attempt == 1 { // published by writeLate: await its PubAcks
				return s.await(ctx, fl)
			}
			return s.publishJS(ctx, fl, todo)
		})
		// Every event of a batch in flight is counted (writeLate takes no
		// LostEvents of flowbus's own).
		if err != nil {
			// ctx ended (the shutdown deadline): the retry driver gives up
			// what is unacknowledged without counting it.
			s.m.Failed.Add(float64(gave))
		}
		if gave > 0 && s.lateLoss != nil {
			s.lateLoss(gave)
		}
		fl.ack.Done(gave == 0 && err == nil)
		fl.ack, fl.ctx = nil, nil
		s.fmu.Lock()
		s.inflight -= fl.reserved
		if !fl.abandoned {
			s.spare = append(s.spare, fl)
		}
		s.fmu.Unlock()
		select {
		case s.freed <- struct{}{}:
		default:
		}
	}
}

// await collects the PubAcks of the first publish of a batch in flight and
// returns the items to publish again.
func (s *Sink) await(ctx context.Context, fl *flight) (retry []int, lastErr error) {
	retry = append(retry, fl.unsent...)
	lastErr = fl.firstErr
	for k, p := range fl.futs {
		ok, err := s.wait(ctx, fl, p)
		if ctx.Err() != nil && !ok && err == nil {
			return s.abandon(fl, fl.futs[k:], nil, retry), ctx.Err()
		}
		if err != nil {
			lastErr = err
			retry = append(retry, p.idx)
		}
	}
	fl.futs = fl.futs[:0]
	return retry, lastErr
}

// wait waits for one publish's PubAck: ok when stored, the error when the
// server or the client refused it, neither when ctx ended first.
func (s *Sink) wait(ctx context.Context, fl *flight, p pending) (ok bool, err error) {
	select {
	case pa := <-p.fut.Ok():
		// Stored, or a duplicate of a stored message. A subject that
		// another stream captured is delivered too, but worth a word.
		if s.js.Stream != "" && pa.Stream != s.js.Stream {
			s.otherStream.Do(func() {
				s.log.Warn("nats: messages are stored by another stream than the configured one",
					"subject", fl.items[p.idx].msg.Subject, "stream", pa.Stream, "configured", s.js.Stream)
			})
		}
		s.m.Acked.Inc()
		return true, nil
	case err := <-p.fut.Err():
		s.log.Debug("nats: publish not acknowledged", "subject", fl.items[p.idx].msg.Subject, "err", err)
		return false, fmt.Errorf("subject %s: %w", fl.items[p.idx].msg.Subject, err)
	case <-ctx.Done():
		return false, nil
	}
}

// publishJS publishes the items once, at most max_pending unacknowledged
// at a time, and returns those that were not acknowledged.
func (s *Sink) publishJS(ctx context.Context, fl *flight, todo []int) (retry []int, lastErr error) {
	futs := fl.futs[:0]
	head := 0
	resolve := func() bool {
		p := futs[head]
		head++
		ok, err := s.wait(ctx, fl, p)
		switch {
		case ok:
		case err != nil:
			lastErr = err
			retry = append(retry, p.idx)
		default:
			retry = append(retry, p.idx)
			return false
		}
		return true
	}
	for n, i := range todo {
		for len(futs)-head >= s.js.MaxPending {
			if !resolve() {
				return s.abandon(fl, futs[head:], todo[n:], retry), ctx.Err()
			}
		}
		s.m.Sent.Inc()
		var opts []jetstream.PublishOpt
		if !fl.items[i].counted {
			opts = noLibraryRetry
		}
		fut, err := s.jsc.PublishMsgAsync(&fl.items[i].msg, opts...)
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
			return s.abandon(fl, futs[head:], nil, retry), ctx.Err()
		}
	}
	fl.futs = futs[:0]
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
func (s *Sink) abandon(fl *flight, futs []pending, unsent, retry []int) []int {
	for _, p := range futs {
		retry = append(retry, p.idx)
	}
	fl.futs = nil
	fl.abandoned = true
	return append(retry, unsent...)
}

// publishCore publishes the items once and flushes; it returns the items
// the client refused.
func (s *Sink) publishCore(ctx context.Context, fl *flight, todo []int) (retry []int, lastErr error) {
	sent := 0
	for _, i := range todo {
		s.m.Sent.Inc()
		if err := s.nc.PublishMsg(&fl.items[i].msg); err != nil {
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

// prepare encodes the events of b into fl's arena and builds their
// messages. It returns the number of events that could not be encoded.
func (s *Sink) prepare(fl *flight, b *pipeline.Batch) (failed int) {
	n := len(b.Events)
	if cap(fl.items) < n {
		fl.items = make([]item, n)
	}
	fl.items = fl.items[:n]
	arena := fl.arena[:0]
	var scratch [256]byte
	for i := range b.Events {
		e := &b.Events[i]
		it := &fl.items[i]
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
			// Kept for the sink's life: a copy, as the event's strings
			// may share storage its batch reuses.
			node = strings.Clone(node)
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
				// A copy: the header outlives the batch (late
				// acknowledgements, nats.go's own retries).
				id = strings.Clone(e.Flow.Uuid)
			}
			if id == "" {
				id = nuid.Next()
			}
			it.id[0] = id
			h[jetstream.MsgIDHeader] = it.id[:]
		}
		it.msg = nats.Msg{Subject: subj, Header: h}
	}
	fl.arena = arena
	for i := range fl.items {
		if it := &fl.items[i]; it.ok {
			it.msg.Data = arena[it.off:it.end:it.end]
		}
	}
	return failed
}
