// Package kafka is the `kafka` sink: it publishes events to Apache Kafka
// with github.com/segmentio/kafka-go, at least once.
//
// Its keys: `flowbus components kafka`, or docs/components.md.
//
// Batching: the sink never lingers. Each pipeline batch is encoded into one
// buffer, split by topic and partition, and every partition's records go out
// at once in one produce request (kafka-go's Client.Produce, not its Writer,
// whose per-partition BatchTimeout would hold a batch that cannot fill). The
// requests for different partitions run concurrently, so a Write costs one
// broker round trip.
//
// Delivery: with required_acks all (the default) a record counts as
// delivered when the broker acknowledged it. Records whose request failed,
// or whose partition reported an error, are retried with exponential backoff
// (their partition recomputed from fresh metadata) up to max_attempts; then
// Write reports them as failed and the runtime turns them into a LostEvent.
// kafka-go has no idempotent producer: a retry after a lost acknowledgement
// can duplicate a record (at-least-once). With required_acks none, delivery
// is fire-and-forget.
//
// Keys: `connection` is the same for both directions of a connection (the
// protocol and the two address:port endpoints in a fixed order), so a
// connection's flows land in one partition in order; `source_pod` is
// namespace/pod of the source (its IP when it is not a pod). Partitions of
// keyed records use murmur2 like the Java client and librdkafka's
// murmur2_random; unkeyed records are spread round-robin.
//
// Readiness: Start fails when no broker answers within batch_timeout (or
// rejects the TLS or SASL settings). While running, /readyz reports the
// sink unready after a produce or metadata request could not reach the
// brokers, and, when idle, after a connection probe every 5s fails.
//
// Every record carries the flowbus headers (internal/sinkutil: schema,
// content type, node, sample rate) and the event's time as its timestamp.
// Secrets (the SASL password) come from files, never from the config
// itself, and are never logged.
package kafka

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/segmentio/kafka-go"
	metadataAPI "github.com/segmentio/kafka-go/protocol/metadata"
	"github.com/segmentio/kafka-go/sasl"
	"github.com/segmentio/kafka-go/sasl/plain"
	"github.com/segmentio/kafka-go/sasl/scram"
	"gopkg.in/yaml.v3"

	"github.com/flowbus/flowbus/codec"
	"github.com/flowbus/flowbus/internal/sinkutil"
	"github.com/flowbus/flowbus/internal/template"
	"github.com/flowbus/flowbus/pipeline"
	"github.com/flowbus/flowbus/pipeline/config"
)

func init() {
	pipeline.RegisterSink(pipeline.Spec{
		Type:        "kafka",
		Summary:     "publishes events to Apache Kafka, at least once, one produce request per partition per batch",
		Description: `Each pipeline batch is encoded, split by topic and partition, and every partition's records go out at once in one produce request, concurrently across partitions: the sink never lingers. With required_acks all a record counts as delivered when the broker acknowledged it; failed records are retried with backoff up to max_attempts, then reported lost. A retry after a lost acknowledgement can duplicate a record (at least once). Keys: connection is the same for both directions of a connection, so its flows land in one partition in order; source_pod is namespace/pod of the source. Keyed records are partitioned with murmur2 like the Java client. Every record carries the flowbus headers and the event's time. When no broker accepts a connection at start, the sink starts unready and connects in the background, holding its batches meanwhile (run --require-healthy makes it fail instead); while running, /readyz reports the sink unready when the brokers cannot be reached, or while its LostEvents cannot be delivered (a lost_topic that does not exist). Topics must be valid Kafka names; rendered ones are sanitised. Secrets come from files.`,
		Example: `type: kafka
inputs: [flows]
encoding: protobuf
brokers: [kafka-0:9092, kafka-1:9092]
topic: hubble.flows.{{ verdict }}
lost_topic: hubble.lost
key: connection
compression: lz4
tls: {ca_file: /etc/flowbus/kafka-ca.pem}
sasl: {mechanism: scram-sha-512, username: flowbus, password_file: /run/secrets/kafka}
`,
	}, New)
}

// Options are the sink's YAML keys.
type Options struct {
	Brokers          []string        `yaml:"brokers" required:"true" doc:"bootstrap brokers as host:port"`
	Topic            *yaml.Node      `yaml:"topic" required:"true" type:"template" doc:"the topic, a template of flow fields: hubble.flows.{{ verdict }}"`
	LostTopic        *yaml.Node      `yaml:"lost_topic" type:"template" doc:"the topic of LostEvents; default: topic, with every placeholder rendering lost"`
	Key              *yaml.Node      `yaml:"key" type:"string or template" default:"none" doc:"the record key: connection (both directions alike), source_pod, none, a template ({{ source.namespace }}) or a bare field path"`
	Compression      string          `yaml:"compression" default:"none" doc:"none, gzip, snappy, lz4 or zstd"`
	RequiredAcks     string          `yaml:"required_acks" default:"all" doc:"all (delivered when every in-sync replica has it), one, or none (fire and forget)"`
	BatchSize        int             `yaml:"batch_size" default:"10000" doc:"the most records in one produce request per partition"`
	BatchBytes       int             `yaml:"batch_bytes" default:"1000000" doc:"the most uncompressed bytes in one produce request; keep it below the brokers' message.max.bytes"`
	BatchTimeout     config.Duration `yaml:"batch_timeout" default:"10s" doc:"the longest wait for one produce request's answer (and for the brokers at start)"`
	MaxAttempts      int             `yaml:"max_attempts" default:"5" doc:"attempts per record before it is reported lost"`
	Backoff          BackoffOptions  `yaml:"backoff" doc:"the wait between attempts: doubled per attempt from min to max, with jitter"`
	AutoCreateTopics *bool           `yaml:"auto_create_topics" default:"true" doc:"ask the brokers to create missing topics"`
	ClientID         string          `yaml:"client_id" default:"flowbus" doc:"the Kafka client id"`
	TLS              *sinkutil.TLS   `yaml:"tls" doc:"connect with TLS; default: plaintext"`
	SASL             *SASLOptions    `yaml:"sasl" doc:"authenticate with SASL"`
}

// BackoffOptions bound the wait between attempts.
type BackoffOptions struct {
	Min config.Duration `yaml:"min" default:"100ms" doc:"the first wait"`
	Max config.Duration `yaml:"max" default:"5s" doc:"the longest wait"`
}

// SASLOptions configure SASL authentication. Secrets come from files: the
// password is read from password_file, never written in the config.
type SASLOptions struct {
	Mechanism    string `yaml:"mechanism" required:"true" doc:"plain, scram-sha-256 or scram-sha-512"`
	Username     string `yaml:"username" required:"true" doc:"the SASL user"`
	PasswordFile string `yaml:"password_file" required:"true" doc:"the file holding the password (relative to the config file's directory); trailing newlines are ignored"`
	// Password is not accepted: it is decoded only to say so at its
	// position.
	Password inlineSecret `yaml:"password" hidden:"true"`
}

// inlineSecret rejects a secret written in the config.
type inlineSecret struct{}

// UnmarshalConfig implements config.Unmarshaler: it always fails.
func (inlineSecret) UnmarshalConfig(n *yaml.Node) error {
	return config.Errorf(n, "kafka: sasl.password is not accepted: secrets come from files; put the password in a file and set sasl.password_file")
}

// metadataMaxAge is how long a topic's partition count is trusted.
const metadataMaxAge = 30 * time.Second

type keyKind int

const (
	keyNone keyKind = iota
	keyConnection
	keySourcePod
	keyTemplate
)

// Sink is the kafka sink. Write is called from one goroutine at a time.
type Sink struct {
	log      *slog.Logger
	nodeName string
	enc      codec.Encoder
	ctype    []byte

	topic, lostTopic *template.Template
	keyKind          keyKind
	keyTmpl          *template.Template

	client      *kafka.Client
	transport   *kafka.Transport
	addr        net.Addr
	brokers     []string
	acks        kafka.RequiredAcks
	compression kafka.Compression
	batchSize   int
	batchBytes  int
	timeout     time.Duration
	maxAttempts int
	backoff     sinkutil.Backoff
	autoCreate  bool
	m           *sinkutil.Metrics
	retry       *sinkutil.Retry

	ready      atomic.Pointer[error]
	lastWrite  atomic.Int64 // unix nanoseconds of the last produce attempt
	probeEvery time.Duration
	done       chan struct{}
	up         chan struct{} // closed once the brokers answered
	closing    sync.Once
	// requireHealthy makes Start fail when the brokers do not answer.
	requireHealthy bool
	encErr         sync.Once

	metaMu sync.Mutex
	meta   map[string]topicMeta

	mu    sync.Mutex        // serialises Write; guards what follows
	names map[string]string // interned topics
	nodes map[string][]byte // interned node names
	rr    int
	arena []byte
	items []item
	hdrs  []kafka.Header
}

type topicMeta struct {
	partitions int
	err        error
	at         time.Time
}

type item struct {
	topic      string
	key, value []byte
	headers    []kafka.Header
	time       time.Time
	partition  int
	counted    bool
	// offsets into the arena while it may still grow
	keyOff, keyEnd, valOff, valEnd, rateOff, rateEnd int
}

var (
	schemaValue = []byte(sinkutil.SchemaName)
)

// New builds a kafka sink from its options; it connects in Start.
func New(b *pipeline.Build, o *Options) (*Sink, error) {
	s := &Sink{
		log:            b.Log,
		nodeName:       b.NodeName,
		batchSize:      o.BatchSize,
		batchBytes:     o.BatchBytes,
		timeout:        o.BatchTimeout.D(),
		maxAttempts:    o.MaxAttempts,
		backoff:        sinkutil.Backoff{Min: o.Backoff.Min.D(), Max: o.Backoff.Max.D()},
		autoCreate:     *o.AutoCreateTopics,
		done:           make(chan struct{}),
		up:             make(chan struct{}),
		requireHealthy: b.RequireHealthy,
		probeEvery:     probeInterval,
		meta:           map[string]topicMeta{},
		names:          map[string]string{},
		nodes:          map[string][]byte{},
	}
	if s.log == nil {
		s.log = slog.Default()
	}
	var errs config.Errors
	add := func(err error) {
		errs = append(errs, config.Positioned(err, b.At(""))...)
	}
	if len(o.Brokers) == 0 {
		add(b.Errorf("brokers", "kafka: brokers is empty: list host:port addresses"))
	}
	for _, br := range o.Brokers {
		if _, _, err := net.SplitHostPort(br); err != nil {
			add(b.Errorf("brokers", "kafka: broker %q: want host:port", br))
		}
	}
	var err error
	if s.topic, err = template.ParseNode(o.Topic, template.Kafka); err != nil {
		add(err)
	}
	if o.LostTopic != nil {
		if s.lostTopic, err = template.ParseNode(o.LostTopic, template.Kafka); err != nil {
			add(err)
		}
	}
	if err := s.parseKey(o.Key); err != nil {
		add(err)
	}
	switch o.Compression {
	case "", "none":
	case "gzip":
		s.compression = kafka.Gzip
	case "snappy":
		s.compression = kafka.Snappy
	case "lz4":
		s.compression = kafka.Lz4
	case "zstd":
		s.compression = kafka.Zstd
	default:
		add(b.Errorf("compression", "kafka: compression %q: want none, gzip, snappy, lz4 or zstd", o.Compression))
	}
	switch o.RequiredAcks {
	case "", "all":
		s.acks = kafka.RequireAll
	case "one":
		s.acks = kafka.RequireOne
	case "none":
		s.acks = kafka.RequireNone
	default:
		add(b.Errorf("required_acks", "kafka: required_acks %q: want all, one or none", o.RequiredAcks))
	}
	for _, c := range []struct {
		key string
		v   int
	}{{"batch_size", s.batchSize}, {"batch_bytes", s.batchBytes}, {"max_attempts", s.maxAttempts}} {
		if c.v < 1 {
			add(b.Errorf(c.key, "kafka: %s must be at least 1", c.key))
		}
	}
	if s.timeout <= 0 {
		add(b.Errorf("batch_timeout", "kafka: batch_timeout must be positive"))
	}
	if s.backoff.Max < s.backoff.Min {
		add(b.Errorf("backoff", "kafka: backoff max %s is below min %s", s.backoff.Max, s.backoff.Min))
	}
	if s.enc, err = codec.New(b.Encoding); err != nil {
		add(b.Errorf("", "kafka: %v", err))
	} else {
		s.ctype = []byte(s.enc.ContentType())
	}
	tr := &kafka.Transport{
		ClientID:    o.ClientID,
		DialTimeout: 5 * time.Second,
		MetadataTTL: 5 * time.Second,
	}
	if o.TLS != nil {
		if tr.TLS, err = o.TLS.Config(b.Dir); err != nil {
			add(b.Errorf("tls", "kafka: %v", err))
		}
	}
	if o.SASL != nil {
		if tr.SASL, err = o.SASL.mechanism(b.Dir); err != nil {
			add(b.Errorf("sasl", "kafka: sasl: %v", err))
		}
	}
	if len(errs) > 0 {
		return nil, errs
	}
	s.transport = tr
	s.brokers = o.Brokers
	s.addr = kafka.TCP(o.Brokers...)
	s.client = &kafka.Client{Addr: s.addr, Timeout: s.timeout, Transport: tr}
	if s.m, err = sinkutil.NewMetrics(b.Metrics); err != nil {
		return nil, err
	}
	s.retry = &sinkutil.Retry{Name: "kafka", MaxAttempts: s.maxAttempts, Backoff: s.backoff, Done: s.done, Metrics: s.m, Log: s.log, Reachable: s.reachable}
	notYet := errors.New("kafka: not connected yet")
	s.ready.Store(&notYet)
	return s, nil
}

func (s *Sink) parseKey(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return config.Errorf(n, "kafka: key: want connection, source_pod, none, or a template")
	}
	switch v := n.Value; {
	case v == "" || v == "none":
		s.keyKind = keyNone
	case v == "connection":
		s.keyKind = keyConnection
	case v == "source_pod":
		s.keyKind = keySourcePod
	default:
		t := *n
		if !strings.Contains(v, "{{") {
			// A bare field path is shorthand for one placeholder.
			t.Value = "{{ " + v + " }}"
			t.Style = yaml.DoubleQuotedStyle // no column arithmetic on the rewritten text
		}
		tm, err := template.ParseNode(&t, template.Text)
		if err != nil {
			return err
		}
		s.keyKind, s.keyTmpl = keyTemplate, tm
	}
	return nil
}

func (o *SASLOptions) mechanism(dir string) (sasl.Mechanism, error) {
	if o.Username == "" {
		return nil, fmt.Errorf("username is empty")
	}
	pass, err := sinkutil.ReadSecret("password_file", dir, o.PasswordFile)
	if err != nil {
		return nil, err
	}
	switch strings.ToLower(o.Mechanism) {
	case "plain":
		return plain.Mechanism{Username: o.Username, Password: pass}, nil
	case "scram-sha-256":
		return scram.Mechanism(scram.SHA256, o.Username, pass)
	case "scram-sha-512":
		return scram.Mechanism(scram.SHA512, o.Username, pass)
	}
	return nil, fmt.Errorf("mechanism %q: want plain, scram-sha-256 or scram-sha-512", o.Mechanism)
}

// Start checks that the brokers answer (and accept the TLS and SASL
// settings) before the pipeline runs. A broker that accepts connections
// but refuses the sink's settings fails Start. When no broker accepts a
// connection, Start fails with Build.RequireHealthy (`run
// --require-healthy`); otherwise the sink starts unready and keeps
// connecting in the background with backoff, and Write waits for the
// connection.
func (s *Sink) Start(ctx context.Context) error {
	err := s.connect(ctx)
	if err == nil {
		s.connected()
		return nil
	}
	s.ready.Store(&err)
	if s.requireHealthy || s.dial(s.timeout) == nil {
		return err
	}
	s.log.Warn("kafka: brokers unreachable at start; starting unready and retrying in the background", "err", err)
	go s.reconnect()
	return nil
}

// connect asks the brokers for metadata once.
func (s *Sink) connect(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	if _, err := s.transport.RoundTrip(ctx, s.addr, &metadataAPI.Request{}); err != nil {
		// kafka-go's connection pool keeps a failed first metadata answer
		// until its next refresh (up to 5s): drop the pool, so that the
		// next attempt asks the brokers again.
		s.transport.CloseIdleConnections()
		return fmt.Errorf("kafka: brokers %s: %w", s.addr, err)
	}
	return nil
}

// connected marks the sink connected: ready, Write no longer waits, and
// the idle probe runs.
func (s *Sink) connected() {
	s.ready.Store(nil)
	s.lastWrite.Store(time.Now().UnixNano())
	close(s.up)
	go s.probe()
}

// reconnect connects in the background after a failed Start, with backoff,
// until it succeeds or the sink closes.
func (s *Sink) reconnect() {
	for attempt := 1; ; attempt++ {
		if !sinkutil.Sleep(s.done, s.backoff.Delay(attempt), nil) {
			return
		}
		ctx, cancel := context.WithCancel(context.Background())
		go func() {
			select {
			case <-s.done:
				cancel()
			case <-ctx.Done():
			}
		}()
		err := s.connect(ctx)
		cancel()
		if err == nil {
			s.log.Info("kafka: connected to the brokers", "brokers", s.addr.String(), "attempts", attempt+1)
			s.connected()
			return
		}
		if closed(s.done) {
			return
		}
		s.ready.Store(&err)
		s.log.Debug("kafka: brokers still unreachable", "err", err)
	}
}

// waitConnected waits until the sink is connected; false when ctx ended or
// the sink closed first.
func (s *Sink) waitConnected(ctx context.Context) bool {
	select {
	case <-s.up:
		return true
	default:
	}
	select {
	case <-s.up:
		return true
	case <-ctx.Done():
	case <-s.done:
	}
	return false
}

func closed(c <-chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}

// probeInterval is how often an idle sink checks that a broker accepts
// connections, so that /readyz notices an outage without traffic.
var probeInterval = 5 * time.Second

// probe dials the brokers while no Write has talked to them for a while.
func (s *Sink) probe() {
	t := time.NewTicker(s.probeEvery)
	defer t.Stop()
	for {
		select {
		case <-s.done:
			return
		case <-t.C:
		}
		if time.Since(time.Unix(0, s.lastWrite.Load())) < s.probeEvery {
			continue
		}
		if err := s.dial(2 * time.Second); err != nil {
			e := fmt.Errorf("kafka: brokers %s unreachable: %w", s.addr, err)
			s.ready.Store(&e)
		} else {
			s.ready.Store(nil)
		}
	}
}

// dial checks that one of the brokers accepts a TCP connection.
func (s *Sink) dial(timeout time.Duration) error {
	var lastErr error
	for _, a := range s.brokers {
		c, err := net.DialTimeout("tcp", a, timeout)
		if err == nil {
			c.Close()
			return nil
		}
		lastErr = err
	}
	return lastErr
}

// reachable tells the retry driver whether a broker accepts connections,
// so that a backoff ends as soon as the broker is back.
func (s *Sink) reachable() bool { return s.dial(200*time.Millisecond) == nil }

// Ready reports an error while the brokers cannot be reached, or while
// the sink's LostEvents cannot be delivered.
func (s *Sink) Ready() error {
	if p := s.ready.Load(); p != nil {
		return *p
	}
	return s.retry.LostReady()
}

// Close releases the connections. Write is synchronous, so nothing is
// pending once the runtime calls Close.
func (s *Sink) Close(context.Context) error {
	s.closing.Do(func() { close(s.done) })
	s.mu.Lock()
	defer s.mu.Unlock()
	s.transport.CloseIdleConnections()
	return nil
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
	pending := make([]int, 0, len(s.items))
	for i := range s.items {
		if s.items[i].value != nil {
			pending = append(pending, i)
		}
	}
	gave, err := s.retry.Deliver(ctx, pending, s.counted, func(ctx context.Context, pending []int, attempt int) ([]int, error) {
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
		s.hdrs = make([]kafka.Header, 4*n)
	}
	s.items = s.items[:n]
	s.hdrs = s.hdrs[:4*n]
	arena := s.arena[:0]
	var scratch [256]byte
	for i := range b.Events {
		e := &b.Events[i]
		it := &s.items[i]
		*it = item{counted: !e.Reported, keyOff: -1, rateOff: -1}

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
			nb = []byte(node)
			s.nodes[node] = nb
		}
		h := s.hdrs[4*i : 4*i : 4*i+4]
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
			it.partition = s.rr % parts
			s.rr++
		}
		k := tp{it.topic, it.partition}
		groups[k] = append(groups[k], i)
	}
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

func (s *Sink) invalidate(topic string) {
	s.metaMu.Lock()
	delete(s.meta, topic)
	s.metaMu.Unlock()
}

// partitions returns the partition count of topic from cached metadata,
// refreshing it when it is old, or when refresh is set and it is older
// than a second.
func (s *Sink) partitions(ctx context.Context, topic string, refresh bool) (int, error) {
	s.metaMu.Lock()
	m, ok := s.meta[topic]
	s.metaMu.Unlock()
	age := time.Since(m.at)
	if ok && age < metadataMaxAge && !(refresh && age > time.Second) {
		return m.partitions, m.err
	}
	rctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	r, err := s.transport.RoundTrip(rctx, s.addr, &metadataAPI.Request{
		TopicNames:             []string{topic},
		AllowAutoTopicCreation: s.autoCreate,
	})
	m = topicMeta{at: time.Now()}
	if err != nil {
		m.err = fmt.Errorf("metadata for topic %s: %w", topic, err)
		e := fmt.Errorf("kafka: brokers %s unreachable: %w", s.addr, err)
		s.ready.Store(&e)
		return 0, m.err // not cached: ask again next time
	}
	for _, t := range r.(*metadataAPI.Response).Topics {
		if t.Name != topic {
			continue
		}
		switch {
		case t.ErrorCode != 0:
			m.err = fmt.Errorf("topic %s: %w", topic, kafka.Error(t.ErrorCode))
		case len(t.Partitions) == 0:
			m.err = fmt.Errorf("topic %s has no partitions", topic)
		default:
			m.partitions = len(t.Partitions)
		}
	}
	if m.partitions == 0 && m.err == nil {
		m.err = fmt.Errorf("topic %s: %w", topic, kafka.UnknownTopicOrPartition)
	}
	if m.err != nil {
		return 0, m.err // not cached
	}
	s.metaMu.Lock()
	s.meta[topic] = m
	s.metaMu.Unlock()
	return m.partitions, nil
}

// records feeds items to a produce request without copying them.
type records struct {
	items      []item
	idx        []int
	next       int
	rec        kafka.Record
	key, value bytesReader
}

func (r *records) ReadRecord() (*kafka.Record, error) {
	if r.next >= len(r.idx) {
		return nil, errEOF
	}
	it := &r.items[r.idx[r.next]]
	r.next++
	r.rec = kafka.Record{Time: it.time, Headers: it.headers}
	if it.key != nil {
		r.key.Reset(it.key)
		r.rec.Key = &r.key
	}
	r.value.Reset(it.value)
	r.rec.Value = &r.value
	return &r.rec, nil
}
