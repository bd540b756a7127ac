// Package kafka is the `kafka` source: a member of a Kafka consumer group
// that reads what flowbus's kafka sink (or any producer of Hubble's
// envelope) wrote, for an aggregation tier. Records are decoded by their
// content-type header (export JSON or protobuf observer.GetFlowsResponse;
// sniffed when absent); LostEvents found in the stream pass on as events
// (the node that lost the flows counted them; they are not counted as lost
// again here). Every batch carries a pipeline.Ack: offsets are committed
// only once every sink downstream delivered (or a transform removed) each
// of the batch's records, so delivery is at least once end to end. A sink
// that gives up nacks the batch: the consumer leaves the group and joins
// again, reading on from the last committed offsets (a redelivery). Its
// keys: `flowbus components kafka`, or docs/components.md.
package kafka

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/flowbus/flowbus/codec"
	"github.com/flowbus/flowbus/internal/sinkutil"
	"github.com/flowbus/flowbus/pipeline"
)

func init() {
	pipeline.RegisterSource(pipeline.Spec{
		Type:    "kafka",
		Summary: "consumes flows from Kafka topics as a consumer group, committing offsets after delivery",
		Description: "Records are decoded by their content-type header (application/json: Hubble export JSON; " +
			"application/x-protobuf: a binary observer.GetFlowsResponse; sniffed when the header is absent), as flowbus's kafka sink writes them. " +
			"A record that does not decode is counted (flowbus_kafka_source_malformed_records_total), logged once and skipped. " +
			"LostEvents in the stream pass on as LostEvents. Offsets are committed only after every sink downstream delivered " +
			"(or a transform removed on purpose) each record of a batch, at most commit_interval later: delivery is at least once, " +
			"and after a crash or a rebalance what was delivered but not yet committed is read again. A sink that gives up on events " +
			"stops the commits: the consumer rejoins its group and reads again from the last committed offsets. " +
			"Consumers with the same group split the partitions between them: run more for more throughput, up to one per partition.",
		Example: "type: kafka\nbrokers: [kafka-0:9092]\ntopics: [hubble.flows]\ngroup: flowbus-aggregator\nstart: earliest\n",
	}, New)
}

// Source is the kafka source.
type Source struct {
	log            *slog.Logger
	topics         Topics
	brokers        []string
	group          string
	commitInterval time.Duration
	topicRefresh   time.Duration
	requireHealthy bool
	client         *kafka.Client
	cfg            kafka.ReaderConfig
	m              *metrics

	dec *codec.Decoder

	mu      sync.Mutex
	session *session // the current reader; kept after Run for Stop
	ready   atomic.Pointer[error]

	malformedLogged atomic.Bool
}

// Start resolves the topics with the brokers. When they cannot be reached
// it fails with Build.RequireHealthy (`run --require-healthy`); otherwise
// the source starts unready and Run keeps trying.
func (s *Source) Start(ctx context.Context) error {
	s.dec = codec.NewDecoder()
	if _, err := s.resolve(ctx); err != nil {
		s.setReady(err)
		if s.requireHealthy {
			return err
		}
		s.log.Warn("kafka: brokers unreachable at start; starting unready and retrying", "err", err)
	}
	return nil
}

// Ready reports why the source is not consuming.
func (s *Source) Ready() error {
	if p := s.ready.Load(); p != nil {
		return *p
	}
	return nil
}

func (s *Source) setReady(err error) {
	if err == nil {
		s.ready.Store(nil)
	} else {
		s.ready.Store(&err)
	}
}

// resolve returns the topics to consume, sorted: the names, or the
// brokers' topics the regex matches (an error when none does).
func (s *Source) resolve(ctx context.Context) ([]string, error) {
	if s.topics.Regex == nil {
		return s.topics.Names, nil
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	md, err := s.client.Metadata(ctx, &kafka.MetadataRequest{})
	if err != nil {
		return nil, fmt.Errorf("kafka: brokers %v: metadata: %w", s.brokers, err)
	}
	var out []string
	for _, t := range md.Topics {
		if t.Error == nil && s.topics.Regex.MatchString(t.Name) {
			out = append(out, t.Name)
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("kafka: no topic matches %s", s.topics.Regex)
	}
	sort.Strings(out)
	return out, nil
}

// Run consumes until ctx ends. The reader stays open after Run returns, so
// that the acknowledgements of the batches still in the pipeline commit
// their offsets; Stop makes the last commit and leaves the group.
func (s *Source) Run(ctx context.Context, out pipeline.Output) error {
	nacks := 0
	for attempt := 0; ; attempt++ {
		topics, err := s.resolve(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			s.setReady(err)
			s.log.Warn("kafka: cannot resolve the topics; retrying", "err", err)
			if !pipeline.Sleep(ctx, sinkutil.Backoff{Min: 500 * time.Millisecond, Max: 10 * time.Second}.Delay(attempt)) {
				return nil
			}
			continue
		}
		attempt = 0
		s.setReady(nil)
		cfg := s.cfg
		cfg.GroupTopics = topics
		ss := newSession(s, kafka.NewReader(cfg), topics)
		s.mu.Lock()
		s.session = ss
		s.mu.Unlock()
		why := ss.consume(ctx, out)
		if why == stopStopped {
			return nil
		}
		// A nack or a changed topic list: commit what is acknowledged,
		// leave the group and join again, reading on from the committed
		// offsets.
		if why == stopNacked {
			s.m.rejoins.Inc()
			nacks++
			s.log.Warn("kafka: a sink gave up on events: rejoining the group to read again from the last committed offsets", "group", s.group)
		} else {
			s.log.Info("kafka: the topics matching the regex changed; rejoining the group", "topics", topics)
		}
		s.mu.Lock()
		s.session = nil
		s.mu.Unlock()
		closeCtx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		ss.close(closeCtx)
		cancel()
		// A sink that keeps giving up (its broker away) would make every
		// rejoin fail again: wait longer each time.
		if why == stopNacked && !pipeline.Sleep(ctx, rejoinBackoff.Delay(nacks)) {
			return nil
		}
	}
}

// rejoinBackoff is the wait before rejoining after a nack.
var rejoinBackoff = sinkutil.Backoff{Min: 100 * time.Millisecond, Max: 30 * time.Second}

// Stop commits the offsets acknowledged during the drain and leaves the
// group.
func (s *Source) Stop(ctx context.Context) error {
	s.mu.Lock()
	ss := s.session
	s.session = nil
	s.mu.Unlock()
	if ss == nil {
		return nil
	}
	return ss.close(ctx)
}

type stopReason int

const (
	stopStopped stopReason = iota // ctx ended
	stopNacked                    // a batch was nacked
	stopTopics                    // the regex matches other topics now
)

// session is one membership of the group: a reader and the offsets its
// batches acknowledge. Acknowledgements of an earlier session are ignored
// (its reader is closed; the group hands its partitions out again).
type session struct {
	s      *Source
	r      *kafka.Reader
	topics []string

	mu     sync.Mutex
	parts  map[topicPartition]*partition
	commit map[topicPartition]int64 // acknowledged, not yet committed: the last offset
	closed bool

	kick          chan struct{} // an acknowledgement made offsets committable
	nacked        chan struct{} // closed at the first nack
	nackOnce      sync.Once
	done          chan struct{} // closes the committer
	committerDone chan struct{}
	closeOnce     sync.Once
	closeErr      error

	// ct is the last content-type header seen (consume's goroutine only):
	// records of a topic nearly always carry the same, which then costs no
	// allocation.
	ct string
}

type topicPartition struct {
	topic     string
	partition int
}

// partition holds the batches in flight from one partition, in emission
// order: offsets are committed up to the end of the first batch not yet
// acknowledged.
type partition struct {
	fifo []*pending
}

type pending struct {
	last int64 // the batch's last offset in this partition
	done bool
}

func newSession(s *Source, r *kafka.Reader, topics []string) *session {
	ss := &session{
		s: s, r: r, topics: topics,
		parts:         map[topicPartition]*partition{},
		commit:        map[topicPartition]int64{},
		kick:          make(chan struct{}, 1),
		nacked:        make(chan struct{}),
		done:          make(chan struct{}),
		committerDone: make(chan struct{}),
	}
	go ss.committer()
	return ss
}

// span is one partition's part of a batch.
type span struct {
	tp   topicPartition
	last int64
	p    *pending
}

// batchLinger is how long a batch that is not full waits for more
// records once its first arrived: kafka-go's reader hands records over one
// at a time and cannot tell whether more are queued, so a batch fills
// until it is full or this time passed.
const batchLinger = 5 * time.Millisecond

// consume fetches records into batches and emits them until ctx ends, a
// batch is nacked, or the regex matches other topics. It fetches from the
// reader itself, record by record into the batch being filled: no
// hand-over to another goroutine per record.
func (ss *session) consume(ctx context.Context, out pipeline.Output) stopReason {
	s := ss.s
	fctx, cancel := context.WithCancel(ctx)
	defer cancel()
	// A nack ends the fetch in progress.
	go func() {
		select {
		case <-ss.nacked:
			cancel()
		case <-fctx.Done():
		}
	}()
	nextRefresh := time.Now().Add(s.topicRefresh)
	var spans []span
	for attempt := 0; ; {
		select {
		case <-ss.nacked:
			return stopNacked
		default:
		}
		if ctx.Err() != nil {
			return stopStopped
		}
		if s.topics.Regex != nil && !time.Now().Before(nextRefresh) {
			nextRefresh = time.Now().Add(s.topicRefresh)
			if topics, err := s.resolve(ctx); err == nil && !slices.Equal(topics, ss.topics) {
				return stopTopics
			}
		}
		// The first record: waited for as long as it takes (with a regex,
		// until the next refresh).
		wctx, wcancel := fctx, context.CancelFunc(func() {})
		if s.topics.Regex != nil {
			wctx, wcancel = context.WithDeadline(fctx, nextRefresh)
		}
		m, err := ss.r.FetchMessage(wctx)
		wcancel()
		if err != nil {
			if wctx.Err() != nil {
				continue // stopped, nacked or time to refresh: checked above
			}
			attempt++
			ss.fetchFailed(fctx, err, attempt)
			continue
		}
		if attempt > 0 {
			attempt = 0
			s.setReady(nil)
		}
		b := pipeline.NewBatch()
		spans = spans[:0]
		spans = ss.add(b, &m, spans)
		// The rest of the batch: what arrives within batchLinger.
		lctx, lcancel := context.WithTimeout(fctx, batchLinger)
		var fillErr error
		for b.Len() < pipeline.DefaultBatchSize && b.InputBytes() < pipeline.DefaultBatchBytes {
			m, err := ss.r.FetchMessage(lctx)
			if err != nil {
				if lctx.Err() == nil {
					fillErr = err
				}
				break
			}
			spans = ss.add(b, &m, spans)
		}
		lcancel()
		ss.track(b, spans)
		if err := out.Emit(ctx, b); err != nil {
			return stopStopped
		}
		if fillErr != nil {
			attempt++
			ss.fetchFailed(fctx, fillErr, attempt)
		}
	}
}

// fetchFailed reports a failed fetch (the source goes unready) and waits
// before the next, or until ctx ends.
func (ss *session) fetchFailed(ctx context.Context, err error, attempt int) {
	s := ss.s
	s.setReady(fmt.Errorf("kafka: fetch: %w", err))
	s.log.Warn("kafka: fetch failed; retrying", "err", err)
	pipeline.Sleep(ctx, sinkutil.Backoff{Min: 100 * time.Millisecond, Max: 5 * time.Second}.Delay(attempt))
}

// add decodes m into b and records its offset in spans.
func (ss *session) add(b *pipeline.Batch, m *kafka.Message, spans []span) []span {
	s := ss.s
	tp := topicPartition{m.Topic, m.Partition}
	found := false
	for i := range spans {
		if spans[i].tp == tp {
			spans[i].last = max(spans[i].last, m.Offset)
			found = true
			break
		}
	}
	if !found {
		spans = append(spans, span{tp: tp, last: m.Offset})
	}
	s.m.records.Inc()
	var ct string
	for _, h := range m.Headers {
		if h.Key == sinkutil.HeaderContentType {
			if string(h.Value) != ss.ct {
				ss.ct = string(h.Value)
			}
			ct = ss.ct
			break
		}
	}
	ev := b.Next()
	kind, err := s.dec.DecodeOwned(ct, m.Value, ev) // kafka-go allocates each record's value
	switch {
	case err != nil:
		b.Truncate(b.Len() - 1)
		s.m.malformed.Inc()
		if !s.malformedLogged.Swap(true) {
			s.log.Warn("kafka: a record does not decode; skipping it (further ones are only counted in flowbus_kafka_source_malformed_records_total)",
				"topic", m.Topic, "partition", m.Partition, "offset", m.Offset, "content_type", ct, "err", err)
		}
	case kind == codec.KindOther:
		b.Truncate(b.Len() - 1)
		s.m.skipped.Inc()
	default:
		b.AddInputBytes(len(m.Value))
	}
	return spans
}

// track attaches the batch's Ack, which commits its spans' offsets once
// every earlier batch of the same partitions is acknowledged too.
func (ss *session) track(b *pipeline.Batch, spans []span) {
	own := make([]span, len(spans))
	ss.mu.Lock()
	for i, sp := range spans {
		p := ss.parts[sp.tp]
		if p == nil {
			p = &partition{}
			ss.parts[sp.tp] = p
		}
		sp.p = &pending{last: sp.last}
		p.fifo = append(p.fifo, sp.p)
		own[i] = sp
	}
	ss.mu.Unlock()
	b.SetAck(pipeline.NewAck(func(ok bool) { ss.ack(own, ok) }))
}

// ack resolves one batch. It runs on a pipeline goroutine: it only updates
// the offsets and wakes the committer.
func (ss *session) ack(spans []span, ok bool) {
	if !ok {
		ss.s.m.nacked.Inc()
		ss.nackOnce.Do(func() { close(ss.nacked) })
		return
	}
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if ss.closed {
		return
	}
	more := false
	for _, sp := range spans {
		sp.p.done = true
		p := ss.parts[sp.tp]
		n := 0
		for n < len(p.fifo) && p.fifo[n].done {
			ss.commit[sp.tp] = p.fifo[n].last
			more = true
			n++
		}
		if n > 0 {
			p.fifo = slices.Delete(p.fifo, 0, n)
		}
	}
	if more {
		select {
		case ss.kick <- struct{}{}:
		default:
		}
	}
}

// committer commits what is acknowledged, at most once per
// commit_interval, until the session closes.
func (ss *session) committer() {
	defer close(ss.committerDone)
	for {
		select {
		case <-ss.kick:
		case <-ss.done:
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		ss.commitNow(ctx)
		cancel()
		select {
		case <-time.After(ss.s.commitInterval):
		case <-ss.done:
			return
		}
	}
}

// commitNow commits the acknowledged offsets; on failure they stay to be
// committed next time (unless newer ones replaced them).
func (ss *session) commitNow(ctx context.Context) error {
	ss.mu.Lock()
	if len(ss.commit) == 0 {
		ss.mu.Unlock()
		return nil
	}
	taken := ss.commit
	ss.commit = make(map[topicPartition]int64, len(taken))
	ss.mu.Unlock()
	msgs := make([]kafka.Message, 0, len(taken))
	for tp, off := range taken {
		// kafka-go commits a message's offset + 1: where to read on.
		msgs = append(msgs, kafka.Message{Topic: tp.topic, Partition: tp.partition, Offset: off})
	}
	err := ss.r.CommitMessages(ctx, msgs...)
	if err == nil {
		ss.s.m.commits.Inc()
		return nil
	}
	ss.s.m.commitErrors.Inc()
	ss.s.log.Warn("kafka: committing offsets failed; retrying at the next commit (records after the last commit may be read again)", "group", ss.s.group, "err", err)
	ss.mu.Lock()
	for tp, off := range taken {
		if _, newer := ss.commit[tp]; !newer {
			ss.commit[tp] = off
		}
	}
	ss.mu.Unlock()
	return fmt.Errorf("kafka: commit: %w", err)
}

// close commits what is acknowledged and leaves the group; later
// acknowledgements of this session are ignored.
func (ss *session) close(ctx context.Context) error {
	ss.closeOnce.Do(func() {
		close(ss.done)
		<-ss.committerDone
		err := ss.commitNow(ctx)
		ss.mu.Lock()
		ss.closed = true
		ss.mu.Unlock()
		ss.closeErr = errors.Join(err, ss.r.Close())
	})
	return ss.closeErr
}
