// Package nats is the `nats` source: it reads what flowbus's nats sink (or
// any producer of Hubble's envelope) published, for an aggregation tier.
// Without `jetstream` it is a core subscription: messages published while
// it is away, or dropped by the client when the pipeline falls behind (a
// slow consumer, reported as lost), are gone: no delivery guarantee. With
// `jetstream` it is a durable pull consumer with explicit acks: a message
// is acked only once every sink downstream delivered (or a transform
// removed) it, and nak'ed when a sink gave up, so the server delivers it
// again (at least once end to end); max_ack_pending bounds what is in
// flight, and so the memory. Messages are decoded by their content-type
// header (export JSON or protobuf observer.GetFlowsResponse; sniffed when
// absent); LostEvents pass on as events. Its keys: `flowbus components
// nats`, or docs/components.md.
package nats

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	natssink "github.com/flowbus/flowbus/sinks/nats"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/flowbus/flowbus/codec"
	flowpb "github.com/flowbus/flowbus/flow"
	"github.com/flowbus/flowbus/internal/sinkutil"
	"github.com/flowbus/flowbus/pipeline"
	"github.com/flowbus/flowbus/pipeline/config"
)

func init() {
	pipeline.RegisterSource(pipeline.Spec{
		Type:    "nats",
		Summary: "consumes flows from NATS subjects, or from a JetStream durable consumer acked after delivery",
		Description: "Messages are decoded by their content-type header (application/json or application/x-protobuf; sniffed when absent), " +
			"as flowbus's nats sink publishes them; one that does not decode is counted, logged once and skipped (terminated in JetStream). " +
			"LostEvents in the stream pass on as LostEvents. Without jetstream the source is a core subscription with no delivery guarantee: " +
			"what is published while it is away is gone, and what the client drops because the pipeline falls behind is reported as lost. " +
			"With jetstream it is a durable pull consumer (created or updated at start): each message is acked once every sink downstream " +
			"delivered it (or a transform removed it on purpose), and nak'ed when a sink gave up, so the server delivers it again " +
			"(at least once); a message not acked within ack_wait is delivered again too. max_ack_pending bounds the messages in flight. " +
			"Several flowbus instances with the same durable share its messages.",
		Example: "type: nats\nurl: nats://nats-0:4222\nsubjects: [hubble.flows.>]\njetstream: {stream: HUBBLE, durable: flowbus-aggregator, max_ack_pending: 20000}\n",
	}, New)
}

// Options are the source's YAML keys.
type Options struct {
	URL           string            `yaml:"url" required:"true" doc:"comma-separated server URLs"`
	Subjects      []string          `yaml:"subjects" doc:"the subjects to subscribe to (wildcards allowed); with jetstream, the consumer's filter (default: the whole stream)"`
	JetStream     *JetStreamOptions `yaml:"jetstream" doc:"consume a JetStream stream with a durable consumer (at least once); default: a core subscription (no guarantee)"`
	natssink.Auth `yaml:",inline"`
}

// JetStreamOptions select the durable consumer.
type JetStreamOptions struct {
	Stream        string          `yaml:"stream" required:"true" doc:"the stream to consume"`
	Durable       string          `yaml:"durable" required:"true" doc:"the durable consumer's name (created, or updated to these settings, at start); instances with the same durable share its messages"`
	MaxAckPending int             `yaml:"max_ack_pending" default:"20000" doc:"the most messages delivered and not yet acked: bounds what is in flight in the pipeline"`
	AckWait       config.Duration `yaml:"ack_wait" default:"30s" doc:"a message not acked in time is delivered again"`
	NakDelay      config.Duration `yaml:"nak_delay" default:"1s" doc:"how long the server waits before delivering again a message a sink gave up on"`
	Start         string          `yaml:"start" default:"all" doc:"where a new durable starts: all (the stream's first message) or new"`
}

// Source is the nats source.
type Source struct {
	log            *slog.Logger
	url            string
	subjects       []string
	js             *JetStreamOptions
	opts           []nats.Option
	requireHealthy bool
	m              *metrics
	dec            *codec.Decoder

	nc   *nats.Conn
	cons jetstream.Consumer

	// acks are the resolved batches whose acks or naks to send, off the
	// pipeline's goroutines (JetStream). It never fills: max_ack_pending
	// bounds the batches in flight.
	acks     chan ackReq
	ackDone  chan struct{}
	ackMu    sync.Mutex
	ackClose bool
	stopped  atomic.Bool

	malformedLogged atomic.Bool
}

// pullExpiry is how long one JetStream pull request lasts.
const pullExpiry = 2 * time.Second

type ackReq struct {
	msgs []jetstream.Msg
	ok   bool
}

// New builds a nats source from its options; it connects in Start.
func New(b *pipeline.Build, o *Options) (*Source, error) {
	var errs config.Errors
	add := func(err error) { errs = append(errs, config.Positioned(err, b.At(""))...) }
	if o.URL == "" {
		add(b.Errorf("url", "nats: url is empty"))
	}
	if o.JetStream == nil && len(o.Subjects) == 0 {
		add(b.Errorf("subjects", "nats: subjects is empty: a core subscription needs subjects"))
	}
	for _, sub := range o.Subjects {
		if sub == "" {
			add(b.Errorf("subjects", "nats: subjects: an empty subject"))
		}
	}
	if js := o.JetStream; js != nil {
		if js.MaxAckPending < 1 {
			add(b.Errorf("jetstream.max_ack_pending", "nats: jetstream.max_ack_pending must be at least 1"))
		}
		if js.AckWait.D() <= 0 {
			add(b.Errorf("jetstream.ack_wait", "nats: jetstream.ack_wait must be positive"))
		}
		if js.NakDelay.D() < 0 {
			add(b.Errorf("jetstream.nak_delay", "nats: jetstream.nak_delay must not be negative"))
		}
		if js.Start != "all" && js.Start != "new" {
			add(b.Errorf("jetstream.start", "nats: jetstream.start %q: want all or new", js.Start))
		}
	}
	s := &Source{log: b.Log, url: o.URL, subjects: o.Subjects, js: o.JetStream, requireHealthy: b.RequireHealthy}
	if s.log == nil {
		s.log = slog.Default()
	}
	s.opts = []nats.Option{
		nats.Name("flowbus/" + b.NodeName + "/" + b.Name),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(250 * time.Millisecond),
		nats.Timeout(5 * time.Second),
		nats.RetryOnFailedConnect(!b.RequireHealthy),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				s.log.Warn("nats: disconnected", "err", err)
			}
		}),
		nats.ReconnectHandler(func(c *nats.Conn) { s.log.Info("nats: reconnected", "server", c.ConnectedUrlRedacted()) }),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			if !errors.Is(err, nats.ErrSlowConsumer) {
				s.log.Warn("nats: async error", "err", err)
			}
		}),
	}
	opts, authErrs := o.Auth.ClientOptions(b)
	s.opts = append(s.opts, opts...)
	for _, err := range authErrs {
		add(err)
	}
	if len(errs) > 0 {
		return nil, errs
	}
	var err error
	if s.m, err = newMetrics(b.Metrics); err != nil {
		return nil, fmt.Errorf("nats: metrics: %w", err)
	}
	return s, nil
}

// Start connects and, with jetstream, creates or updates the durable
// consumer. A server that cannot be reached fails Start only with
// Build.RequireHealthy; otherwise the client keeps connecting and the
// source is unready meanwhile (a JetStream consumer is then set up in
// Run).
func (s *Source) Start(ctx context.Context) error {
	s.dec = codec.NewDecoder()
	nc, err := nats.Connect(s.url, s.opts...)
	if err != nil {
		return fmt.Errorf("nats: connect: %w", err)
	}
	s.nc = nc
	if s.js != nil && nc.IsConnected() {
		if err := s.setupConsumer(ctx); err != nil {
			nc.Close()
			return err
		}
	}
	return nil
}

func (s *Source) setupConsumer(ctx context.Context) error {
	jsc, err := jetstream.New(s.nc)
	if err != nil {
		return fmt.Errorf("nats: jetstream: %w", err)
	}
	cfg := jetstream.ConsumerConfig{
		Durable:        s.js.Durable,
		AckPolicy:      jetstream.AckExplicitPolicy,
		AckWait:        s.js.AckWait.D(),
		MaxAckPending:  s.js.MaxAckPending,
		FilterSubjects: s.subjects,
		DeliverPolicy:  jetstream.DeliverAllPolicy,
	}
	if s.js.Start == "new" {
		cfg.DeliverPolicy = jetstream.DeliverNewPolicy
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	cons, err := jsc.CreateOrUpdateConsumer(ctx, s.js.Stream, cfg)
	if err != nil {
		return fmt.Errorf("nats: jetstream: durable %q on stream %q: %w", s.js.Durable, s.js.Stream, err)
	}
	s.cons = cons
	return nil
}

// Ready reports an error while the connection is down.
func (s *Source) Ready() error {
	if s.nc == nil || !s.nc.IsConnected() {
		return errors.New("nats: not connected")
	}
	return nil
}

// Run consumes until ctx ends. With jetstream the acks of the batches
// still in the pipeline are sent until Stop.
func (s *Source) Run(ctx context.Context, out pipeline.Output) error {
	msgs := make(chan *nats.Msg, pipeline.DefaultBatchSize)
	var jmsgs chan jetstream.Msg
	if s.js != nil {
		for attempt := 1; s.cons == nil; attempt++ {
			if s.nc.IsConnected() {
				if err := s.setupConsumer(ctx); err != nil {
					s.log.Warn("nats: cannot set up the durable consumer; retrying", "err", err)
				}
			}
			if s.cons == nil && !pipeline.Sleep(ctx, sinkutil.Backoff{Min: 250 * time.Millisecond, Max: 10 * time.Second}.Delay(attempt)) {
				return nil
			}
		}
		s.acks = make(chan ackReq, s.js.MaxAckPending+1)
		s.ackDone = make(chan struct{})
		go s.acker()
		jmsgs = make(chan jetstream.Msg, pipeline.DefaultBatchSize)
		cc, err := s.cons.Consume(func(m jetstream.Msg) {
			select {
			case jmsgs <- m:
			case <-ctx.Done():
			}
		}, jetstream.PullMaxMessages(min(s.js.MaxAckPending, 2*pipeline.DefaultBatchSize)),
			// Short-lived pull requests with frequent heartbeats: a pull
			// request the server no longer serves ends within pullExpiry,
			// and one the client wrongly believes outstanding is noticed
			// after two missed heartbeats; either way the client asks
			// again. The client's defaults (30s, 15s) let such a request
			// stall the consumer for half a minute.
			jetstream.PullExpiry(pullExpiry),
			jetstream.PullHeartbeat(pullExpiry/2),
			jetstream.ConsumeErrHandler(func(_ jetstream.ConsumeContext, err error) {
				if !errors.Is(err, jetstream.ErrNoHeartbeat) || ctx.Err() == nil {
					s.log.Debug("nats: jetstream consume", "err", err)
				}
			}))
		if err != nil {
			return fmt.Errorf("nats: jetstream consume: %w", err)
		}
		defer cc.Stop()
	} else {
		for _, subj := range s.subjects {
			sub, err := s.nc.Subscribe(subj, func(m *nats.Msg) {
				select {
				case msgs <- m:
				case <-ctx.Done():
				}
			})
			if err != nil {
				return fmt.Errorf("nats: subscribe %s: %w", subj, err)
			}
			defer sub.Unsubscribe()
			go s.watchDropped(ctx, sub, out)
		}
	}
	var held []jetstream.Msg
	for {
		b := pipeline.NewBatch()
		held = nil
		// The first message blocks; the rest of the batch is what is
		// already there.
		select {
		case <-ctx.Done():
			b.Release()
			return nil
		case m := <-msgs:
			s.add(b, m.Header.Get(sinkutil.HeaderContentType), m.Data, nil)
		case m := <-jmsgs:
			held = s.addJS(b, m, held)
		}
	fill:
		for b.Len() < pipeline.DefaultBatchSize && b.InputBytes() < pipeline.DefaultBatchBytes {
			select {
			case m := <-msgs:
				s.add(b, m.Header.Get(sinkutil.HeaderContentType), m.Data, nil)
			case m := <-jmsgs:
				held = s.addJS(b, m, held)
			default:
				break fill
			}
		}
		if s.js != nil {
			batch := held
			b.SetAck(pipeline.NewAck(func(ok bool) { s.resolved(batch, ok) }))
		}
		if err := out.Emit(ctx, b); err != nil {
			return nil
		}
	}
}

func (s *Source) addJS(b *pipeline.Batch, m jetstream.Msg, held []jetstream.Msg) []jetstream.Msg {
	if s.add(b, m.Headers().Get(sinkutil.HeaderContentType), m.Data(), m) {
		held = append(held, m)
	}
	return held
}

// add decodes one message into b; false when it did not decode (a
// JetStream message is then terminated: it would never decode).
func (s *Source) add(b *pipeline.Batch, ct string, data []byte, jm jetstream.Msg) bool {
	s.m.messages.Inc()
	ev := b.Next()
	kind, err := s.dec.DecodeOwned(ct, data, ev) // nats.go copies each message's payload
	switch {
	case err != nil:
		b.Truncate(b.Len() - 1)
		s.m.malformed.Inc()
		if !s.malformedLogged.Swap(true) {
			attrs := []any{"content_type", ct, "err", err}
			if jm != nil {
				if md, err := jm.Metadata(); err == nil {
					attrs = append(attrs, "stream", md.Stream, "stream_seq", md.Sequence.Stream)
				}
			}
			s.log.Warn("nats: a message does not decode; skipping it (further ones are only counted in flowbus_nats_source_malformed_messages_total)", attrs...)
		}
		if jm != nil {
			jm.Term()
		}
		return false
	case kind == codec.KindOther:
		b.Truncate(b.Len() - 1)
		s.m.skipped.Inc()
		return true // acked with the batch
	}
	b.AddInputBytes(len(data))
	return true
}

// resolved queues the acks (or naks) of a batch's messages.
func (s *Source) resolved(msgs []jetstream.Msg, ok bool) {
	s.ackMu.Lock()
	defer s.ackMu.Unlock()
	if !s.ackClose {
		s.acks <- ackReq{msgs, ok}
	}
}

// acker sends the acks and naks of resolved batches, off the pipeline's
// goroutines, until Stop.
func (s *Source) acker() {
	defer close(s.ackDone)
	for r := range s.acks {
		for _, m := range r.msgs {
			var err error
			if r.ok {
				err = m.Ack()
			} else {
				err = m.NakWithDelay(s.js.NakDelay.D())
			}
			if err != nil {
				s.m.ackErrors.Inc()
			}
		}
		if r.ok {
			s.m.acked.Add(float64(len(r.msgs)))
		} else {
			s.m.naked.Add(float64(len(r.msgs)))
		}
	}
}

// watchDropped reports the messages the client dropped for a core
// subscription that fell behind (a slow consumer) as lost.
func (s *Source) watchDropped(ctx context.Context, sub *nats.Subscription, out pipeline.Output) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	var last int
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		n, err := sub.Dropped()
		if err != nil || n <= last {
			continue
		}
		s.log.Warn("nats: the client dropped messages: the pipeline falls behind the subscription (core NATS has no flow control)", "subject", sub.Subject, "dropped", n-last)
		out.Lost(flowpb.LostEventSource_OBSERVER_EVENTS_QUEUE, -1, uint64(n-last))
		last = n
	}
}

// Stop sends the acks of the batches resolved during the drain and closes
// the connection.
func (s *Source) Stop(ctx context.Context) error {
	if s.stopped.Swap(true) {
		return nil
	}
	if s.acks != nil {
		s.ackMu.Lock()
		s.ackClose = true
		close(s.acks)
		s.ackMu.Unlock()
		select {
		case <-s.ackDone:
		case <-ctx.Done():
		}
	}
	if s.nc == nil {
		return nil
	}
	var err error
	if s.nc.IsConnected() {
		err = s.nc.FlushTimeout(5 * time.Second)
	}
	s.nc.Close()
	if err != nil {
		return fmt.Errorf("nats: flush the last acks: %w", err)
	}
	return nil
}

type metrics struct {
	messages, malformed, skipped prometheus.Counter
	acked, naked, ackErrors      prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	c := func(name, help string) prometheus.Counter {
		return prometheus.NewCounter(prometheus.CounterOpts{Name: "flowbus_nats_source_" + name, Help: help})
	}
	m := &metrics{
		messages:  c("messages_total", "Messages received."),
		malformed: c("malformed_messages_total", "Messages that did not decode, skipped (terminated in JetStream)."),
		skipped:   c("skipped_messages_total", "Valid envelopes holding neither a flow nor a LostEvent, skipped."),
		acked:     c("acked_messages_total", "JetStream messages acked after delivery."),
		naked:     c("naked_messages_total", "JetStream messages nak'ed because a sink gave up on them (delivered again)."),
		ackErrors: c("ack_errors_total", "JetStream acks or naks that could not be sent (the server delivers those messages again after ack_wait)."),
	}
	if reg == nil {
		return m, nil
	}
	for _, col := range []prometheus.Collector{m.messages, m.malformed, m.skipped, m.acked, m.naked, m.ackErrors} {
		if err := reg.Register(col); err != nil {
			return nil, err
		}
	}
	return m, nil
}
