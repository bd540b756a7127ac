package kafka

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/flowbus/flowbus/internal/sinkutil"
	"github.com/flowbus/flowbus/pipeline"
	"github.com/segmentio/kafka-go"
)

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
	pending := make([]int, 0, len(s.items))
	for i := range s.items {
		if s.items[i].value != nil {
			pending = append(pending, i)
		}
	}
	gave, err := s.retry.Deliver(ctx, pending, s.counted, b.WrittenAgain(), func(ctx context.Context, pending []int, attempt int) ([]int, error) {
		return s.attempt(ctx, pending, attempt > 1)
	})
	return failed + gave, err
}

func (s *Sink) counted(i int) bool { return s.items[i].counted }

// prepare encodes every event of b into the arena and fills s.items. It
// returns the number of events that could not be encoded.
func (s *Sink) prepare(b *pipeline.Batch) (failed int) {
	n := len(b.Events)
	if cap(s.items) < n {
		s.items = make([]item, n)
		s.hdrs = make([]kafka.Header, 5*n)
	}
	s.items = s.items[:n]
	s.hdrs = s.hdrs[:5*n]
	arena := s.arena[:0]
	var scratch [256]byte
	for i := range b.Events {
		e := &b.Events[i]
		it := &s.items[i]
		*it = item{counted: !e.Reported, keyOff: -1, rateOff: -1, seqOff: -1}

		tm := s.topic
		if e.Lost != nil && s.lostTopic != nil {
			tm = s.lostTopic
		}
		name := tm.Append(scratch[:0], e)
		topic, ok := s.names[string(name)]
		if !ok {
			topic = string(name)
			s.names[topic] = topic
		}
		it.topic = topic

		var ok2 bool
		ko := len(arena)
		switch s.keyKind {
		case keyConnection:
			arena, ok2 = sinkutil.AppendConnectionKey(arena, e.Flow)
		case keySourcePod:
			arena, ok2 = sinkutil.AppendSourcePod(arena, e.Flow)
		case keyTemplate:
			arena, ok2 = s.keyTmpl.Append(arena, e), e.Flow != nil
		}
		if ok2 {
			it.keyOff, it.keyEnd = ko, len(arena)
		} else {
			arena = arena[:ko]
		}

		ro := len(arena)
		if arena, ok2 = sinkutil.AppendSampleRate(arena, e); ok2 {
			it.rateOff, it.rateEnd = ro, len(arena)
		}
		so := len(arena)
		if arena, ok2 = sinkutil.AppendSeq(arena, s.seqPrefix, b, i); ok2 {
			it.seqOff, it.seqEnd = so, len(arena)
		}

		vo := len(arena)
		var err error
		arena, err = s.enc.Append(arena, e)
		if err != nil {
			arena = arena[:vo]
			it.valOff = -1
			failed++
			s.m.Failed.Inc()
			s.encErr.Do(func() { s.log.Error("kafka: cannot encode event; it is reported lost", "err", err) })
			continue
		}
		it.valOff, it.valEnd = vo, len(arena)
		if e.Time != nil {
			it.time = e.Time.AsTime()
		}

		node := sinkutil.NodeOf(e, s.nodeName)
		nb, ok := s.nodes[node]
		if !ok {
			// The key is kept for the sink's life: a copy, as the event's
			// strings may share storage its batch reuses.
			nb = []byte(node)
			s.nodes[strings.Clone(node)] = nb
		}
		h := s.hdrs[5*i : 5*i : 5*i+5]
		h = append(h,
			kafka.Header{Key: sinkutil.HeaderContentType, Value: s.ctype},
			kafka.Header{Key: sinkutil.HeaderSchema, Value: schemaValue},
			kafka.Header{Key: sinkutil.HeaderNode, Value: nb})
		it.headers = h
	}
	s.arena = arena
	// The arena no longer grows: turn offsets into slices.
	for i := range s.items {
		it := &s.items[i]
		if it.valOff < 0 {
			continue
		}
		it.value = arena[it.valOff:it.valEnd:it.valEnd]
		if it.keyOff >= 0 {
			it.key = arena[it.keyOff:it.keyEnd:it.keyEnd]
		}
		if it.rateOff >= 0 {
			it.headers = append(it.headers, kafka.Header{Key: sinkutil.HeaderSampleRate, Value: arena[it.rateOff:it.rateEnd:it.rateEnd]})
		}
		if it.seqOff >= 0 {
			it.headers = append(it.headers, kafka.Header{Key: sinkutil.HeaderSeq, Value: arena[it.seqOff:it.seqEnd:it.seqEnd]})
		}
	}
	return failed
}

type tp struct {
	topic     string
	partition int
}

// attempt sends the pending items once and returns those that failed,
// with the last error.
func (s *Sink) attempt(ctx context.Context, pending []int, refresh bool) ([]int, error) {
	groups := map[tp][]int{}
	var failed []int
	var missing map[string]bool // topics whose metadata failed in this attempt
	var metaErr error
	for _, i := range pending {
		it := &s.items[i]
		if missing[it.topic] {
			failed = append(failed, i)
			continue
		}
		parts, err := s.partitions(ctx, it.topic, refresh)
		if err != nil {
			metaErr = err
			if missing == nil {
				missing = map[string]bool{}
			}
			missing[it.topic] = true
			s.log.Debug("kafka: no metadata for topic", "topic", it.topic, "err", err)
			failed = append(failed, i)
			continue
		}
		if it.key != nil {
			it.partition = murmur2Partition(it.key, parts)
		} else {
			// Sticky: the unkeyed records of one attempt go to one
			// partition, the next attempt's to the next one. One full
			// produce request costs the client and the broker far less
			// than a small request per partition.
			it.partition = s.rr % parts
		}
		k := tp{it.topic, it.partition}
		groups[k] = append(groups[k], i)
	}
	s.rr++
	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		netErrs int
		lastErr error
	)
	for k, idx := range groups {
		for len(idx) > 0 {
			chunk := idx[:s.chunk(idx)]
			idx = idx[len(chunk):]
			wg.Add(1)
			go func() {
				defer wg.Done()
				bad, transportErr, err := s.produce(ctx, k, chunk)
				mu.Lock()
				defer mu.Unlock()
				failed = append(failed, bad...)
				if transportErr {
					netErrs++
				}
				if err != nil {
					lastErr = err
				}
			}()
		}
	}
	wg.Wait()
	if lastErr != nil {
		s.log.Debug("kafka: produce attempt failed", "failed", len(failed), "err", lastErr)
		if netErrs > 0 {
			e := fmt.Errorf("kafka: brokers %s unreachable: %w", s.addr, lastErr)
			s.ready.Store(&e)
		}
	}
	if netErrs == 0 && len(groups) > 0 {
		s.ready.Store(nil)
	}
	if lastErr == nil {
		lastErr = metaErr
	}
	return failed, lastErr
}

// chunk returns how many of the items idx go into one produce request: at
// most batch_size records and batch_bytes bytes (at least one record).
func (s *Sink) chunk(idx []int) int {
	size := 0
	for n, i := range idx {
		it := &s.items[i]
		rec := len(it.key) + len(it.value) + recordOverhead
		for _, h := range it.headers {
			rec += len(h.Key) + len(h.Value) + 2
		}
		if n > 0 && (n >= s.batchSize || size+rec > s.batchBytes) {
			return n
		}
		size += rec
	}
	return len(idx)
}

// recordOverhead bounds the per-record framing of a v2 record batch.
const recordOverhead = 24

// produce sends the items idx to one partition. It returns the items that
// failed, whether the request itself failed, and the error.
func (s *Sink) produce(ctx context.Context, k tp, idx []int) (bad []int, transport bool, err error) {
	s.m.Sent.Add(float64(len(idx)))
	s.lastWrite.Store(time.Now().UnixNano())
	rctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	res, err := s.client.Produce(rctx, &kafka.ProduceRequest{
		Topic:        k.topic,
		Partition:    k.partition,
		RequiredAcks: s.acks,
		Compression:  s.compression,
		Records:      &records{items: s.items, idx: idx},
	})
	if err != nil {
		s.invalidate(k.topic)
		return idx, true, err
	}
	if res == nil { // required_acks none: no answer to wait for
		s.m.Acked.Add(float64(len(idx)))
		return nil, false, nil
	}
	if res.Error != nil {
		s.invalidate(k.topic)
		return idx, false, fmt.Errorf("topic %s partition %d: %w", k.topic, k.partition, res.Error)
	}
	for j, rerr := range res.RecordErrors {
		if j >= 0 && j < len(idx) && rerr != nil {
			bad = append(bad, idx[j])
			err = rerr
		}
	}
	s.m.Acked.Add(float64(len(idx) - len(bad)))
	return bad, false, err
}
