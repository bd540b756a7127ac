package nats

import (
	"log/slog"
	"time"

	"github.com/flowbus/flowbus/codec"
	"github.com/flowbus/flowbus/internal/sinkutil"
	"github.com/flowbus/flowbus/internal/template"
	"github.com/flowbus/flowbus/pipeline"
	"github.com/flowbus/flowbus/pipeline/config"
	"github.com/nats-io/nats.go"
	"gopkg.in/yaml.v3"
)

// Options are the sink's YAML keys.
type Options struct {
	URL             string            `yaml:"url" required:"true" doc:"comma-separated server URLs, or embedded for an in-process server"`
	Subject         *yaml.Node        `yaml:"subject" required:"true" type:"template" doc:"the subject, a template of flow fields: hubble.flows.{{ verdict }}"`
	LostSubject     *yaml.Node        `yaml:"lost_subject" type:"template" doc:"the subject of LostEvents; default: subject, with every placeholder rendering lost"`
	JetStream       *JetStreamOptions `yaml:"jetstream" doc:"publish to a JetStream stream (at least once); default: core publish (at most once)"`
	AckTimeout      config.Duration   `yaml:"ack_timeout" default:"5s" doc:"a publish not acknowledged in time is retried"`
	PingInterval    config.Duration   `yaml:"ping_interval" default:"5s" doc:"how often the server is sent a PING: no PONG within ack_timeout makes the sink unready (a frozen server), and the client reconnects after three"`
	MaxAttempts     int               `yaml:"max_attempts" default:"10" doc:"attempts per message before it is reported lost"`
	Backoff         BackoffOptions    `yaml:"backoff" doc:"the wait between attempts: doubled per attempt from min to max, with jitter"`
	ReconnectBuffer int               `yaml:"reconnect_buffer" default:"67108864" doc:"bytes buffered while reconnecting (core publish only)"`
	Auth            `yaml:",inline"`
	Embedded        *EmbeddedOptions `yaml:"embedded" doc:"the in-process server of url: embedded"`
}

// JetStreamOptions select JetStream publishing.
type JetStreamOptions struct {
	Stream          string          `yaml:"stream" doc:"the stream the subjects belong to; PubAcks from another stream are logged"`
	Subjects        []string        `yaml:"subjects" doc:"the stream's subjects when created; default: subject and lost_subject with placeholders as *"`
	Create          bool            `yaml:"create" default:"false" doc:"create or update the stream at start (needs stream); false: the stream must exist"`
	MaxPending      int             `yaml:"max_pending" default:"4000" doc:"the most unacknowledged publishes in flight; with a memory buffer they span several batches, as Write returns before their PubAcks"`
	Storage         string          `yaml:"storage" default:"file" doc:"file or memory, when created"`
	MaxAge          config.Duration `yaml:"max_age" default:"0" doc:"the stream's age limit when created; 0: none"`
	MaxBytes        int64           `yaml:"max_bytes" default:"0" doc:"the stream's size limit in bytes when created; 0: none"`
	DuplicateWindow config.Duration `yaml:"duplicate_window" default:"0" doc:"the Nats-Msg-Id de-duplication window when created; 0: the server's (2m)"`
}

// BackoffOptions bound the wait between attempts.
type BackoffOptions struct {
	Min config.Duration `yaml:"min" default:"100ms" doc:"the first wait"`
	Max config.Duration `yaml:"max" default:"5s" doc:"the longest wait"`
}

// New builds a nats sink from its options; it connects in Start.
func New(b *pipeline.Build, o *Options) (*Sink, error) {
	s := &Sink{
		log:            b.Log,
		name:           b.Name,
		nodeName:       b.NodeName,
		seqPrefix:      sinkutil.SeqPrefix(b.NodeName, b.Name),
		url:            o.URL,
		js:             o.JetStream,
		ackTimeout:     o.AckTimeout.D(),
		maxAttempts:    o.MaxAttempts,
		backoff:        sinkutil.Backoff{Min: o.Backoff.Min.D(), Max: o.Backoff.Max.D()},
		done:           make(chan struct{}),
		up:             make(chan struct{}),
		names:          map[string]string{},
		requireHealthy: b.RequireHealthy,
		nodes:          map[string][]string{},
		rates:          map[uint32][]string{},
		schema:         []string{sinkutil.SchemaName},
		cur:            &flight{},
		resolved:       make(chan struct{}),
		freed:          make(chan struct{}, 1),
	}
	if s.log == nil {
		s.log = slog.Default()
	}
	var errs config.Errors
	add := func(err error) { errs = append(errs, config.Positioned(err, b.At(""))...) }
	var err error
	if o.URL == "" {
		add(b.Errorf("url", "nats: url is empty: want a server URL, or embedded"))
	}
	if s.subject, err = template.ParseNode(o.Subject, template.NATS); err != nil {
		add(err)
	}
	if o.LostSubject != nil {
		if s.lostSubject, err = template.ParseNode(o.LostSubject, template.NATS); err != nil {
			add(err)
		}
	}
	if o.URL == "embedded" {
		s.embedded = o.Embedded
		if s.embedded == nil {
			s.embedded = &EmbeddedOptions{}
		}
		if err := s.embedded.check(); err != nil {
			add(b.Errorf("embedded", "nats: embedded: %v", err))
		}
	} else if o.Embedded != nil {
		add(b.Errorf("embedded", "nats: embedded settings need url: embedded"))
	}
	if js := s.js; js != nil {
		if js.Stream == "" && js.Create {
			add(b.Errorf("jetstream", "nats: jetstream.create needs jetstream.stream"))
		}
		if js.MaxPending < 1 {
			add(b.Errorf("jetstream.max_pending", "nats: jetstream.max_pending must be at least 1"))
		} else {
			s.flights = make(chan *flight, js.MaxPending)
		}
		if js.MaxBytes < 0 {
			add(b.Errorf("jetstream.max_bytes", "nats: jetstream.max_bytes must not be negative"))
		}
		switch js.Storage {
		case "file", "memory":
		default:
			add(b.Errorf("jetstream.storage", "nats: jetstream.storage %q: want file or memory", js.Storage))
		}
		if len(js.Subjects) == 0 && s.subject != nil {
			js.Subjects = []string{s.subject.Wildcard()}
			if s.lostSubject != nil {
				if w := s.lostSubject.Wildcard(); w != js.Subjects[0] {
					js.Subjects = append(js.Subjects, w)
				}
			}
		}
	}
	if s.ackTimeout <= 0 {
		add(b.Errorf("ack_timeout", "nats: ack_timeout must be positive"))
	}
	if s.pingInterval = o.PingInterval.D(); s.pingInterval <= 0 {
		add(b.Errorf("ping_interval", "nats: ping_interval must be positive"))
	}
	if s.maxAttempts < 1 {
		add(b.Errorf("max_attempts", "nats: max_attempts must be at least 1"))
	}
	if s.backoff.Max < s.backoff.Min {
		add(b.Errorf("backoff", "nats: backoff max %s is below min %s", s.backoff.Max, s.backoff.Min))
	}
	if s.enc, err = codec.ForBuild(b); err != nil {
		add(b.Errorf("", "nats: %v", err))
	} else {
		s.ctype = []string{s.enc.ContentType()}
	}

	rbuf := o.ReconnectBuffer
	if rbuf < 0 {
		add(b.Errorf("reconnect_buffer", "nats: reconnect_buffer must not be negative"))
	}
	if s.js != nil {
		// JetStream: no reconnect buffer. A publish while disconnected
		// fails at once and is retried by Write, so a message given up
		// after max_attempts is never sent later from a buffer (which would
		// make a reported loss a delivery).
		rbuf = -1
	}
	s.opts = []nats.Option{
		nats.Name("flowbus/" + b.NodeName + "/" + b.Name),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(250 * time.Millisecond),
		nats.ReconnectJitter(100*time.Millisecond, time.Second),
		nats.ReconnectBufSize(rbuf),
		nats.Timeout(5 * time.Second),
		nats.PingInterval(max(s.pingInterval, time.Millisecond)),
		nats.MaxPingsOutstanding(3),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				s.log.Warn("nats: disconnected", "err", err)
			}
		}),
		nats.ReconnectHandler(func(c *nats.Conn) { s.log.Info("nats: reconnected", "server", c.ConnectedUrlRedacted()) }),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) { s.log.Warn("nats: async error", "err", err) }),
	}
	opts, authErrs := o.Auth.ClientOptions(b)
	s.opts = append(s.opts, opts...)
	for _, err := range authErrs {
		add(err)
	}
	if len(errs) > 0 {
		return nil, errs
	}
	if s.m, err = sinkutil.NewMetrics(b.Metrics); err != nil {
		return nil, err
	}
	s.retry = &sinkutil.Retry{Name: "nats", MaxAttempts: s.maxAttempts, Backoff: s.backoff, Done: s.done, Metrics: s.m, Log: s.log, Reachable: s.connected}
	return s, nil
}
