// Package nats is the `nats` sink: it publishes events to NATS with
// github.com/nats-io/nats.go, either with core publish (at most once) or to
// a JetStream stream (at least once), and can start an embedded NATS server
// so that a pipeline runs on a machine with no broker installed.
//
// Its keys: `flowbus components nats`, or docs/components.md.
//
// JetStream delivery: every message is published asynchronously with a
// Nats-Msg-Id header (the flow's uuid; a generated id for LostEvents and
// flows without one), at most max_pending at a time, and every PubAck is
// checked. A message counts as delivered when the stream acknowledged it
// (a PubAck marked duplicate included). Failed or unacknowledged publishes
// are retried with backoff; a retry carries the same Msg-Id, so the stream
// stores it once within its duplicate window. After max_attempts the message
// is reported lost; flowbus's own LostEvents are retried until they are
// acknowledged or shutdown ends the wait, and those still unacknowledged
// then are reported failed, so the runtime reports their losses again. The client reconnects forever and
// has no reconnect buffer with JetStream: while disconnected, publishes
// fail at once and Write retries them, so a Write in progress keeps going
// across a reconnect, and with `when_full: block` an outage shorter than the
// retry budget loses nothing.
//
// Core publish is at most once: a message counts as delivered when the
// server answered the flush that follows each batch. While disconnected,
// messages wait in the client's reconnect buffer (reconnect_buffer bytes);
// publishes that do not fit fail and are retried, then reported lost.
//
// Embedded server (`url: embedded`): the nats-server library runs in the
// process, bound to 127.0.0.1 only, with JetStream on and a file store in
// store_dir; it shuts down when the sink closes, and sinks with the same
// embedded settings share it. store_dir defaults to /var/lib/flowbus/nats
// for root and to $XDG_STATE_HOME/flowbus/nats (~/.local/state/flowbus/nats)
// for other users; it is created with mode 0700, and a store_dir that is a
// symbolic link, is owned by another user, or is writable by group or
// others (or whose parent is a symlink, or is owned by another user than
// this one or root, or is writable by others without the sticky bit) is
// refused at start, since another user could read or replace the store. Its sync policy is nats-server's: a stored
// message is acknowledged before it is fsynced, and the store is synced
// every sync_interval (nats-server's default, 2 minutes), so a power loss
// (not a process crash) can lose up to that much acknowledged data. Set
// `sync_interval: always` to fsync every message before it is acknowledged,
// at a large cost in throughput.
//
// Every message carries the flowbus headers (internal/sinkutil: schema,
// content type, node, sample rate). Secrets come from files, never from
// the config itself, and are never logged.
package nats

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"
	"gopkg.in/yaml.v3"

	"github.com/flowbus/flowbus/codec"
	"github.com/flowbus/flowbus/internal/sinkutil"
	"github.com/flowbus/flowbus/internal/template"
	"github.com/flowbus/flowbus/pipeline"
	"github.com/flowbus/flowbus/pipeline/config"
)

func init() {
	pipeline.RegisterSink(pipeline.Spec{
		Type:        "nats",
		Summary:     "publishes events to NATS: core publish (at most once) or a JetStream stream (at least once), optionally to an embedded server",
		Description: `JetStream: every message is published asynchronously with a Nats-Msg-Id header (the flow's uuid), at most max_pending at a time, and counts as delivered when the stream acknowledged it; failed publishes are retried with backoff and the same Msg-Id (the stream stores a message once within its duplicate window), then reported lost after max_attempts. The client reconnects forever; with when_full: block an outage shorter than the retry budget loses nothing. Core publish is at most once: a message counts as delivered when the server answered the flush that follows each batch; while disconnected, messages wait in the reconnect buffer. With url: embedded the nats-server library runs in the process, bound to 127.0.0.1, with JetStream and a file store; it acknowledges a message before it is fsynced and syncs every sync_interval, so a power loss can lose up to that much acknowledged data (sync_interval: always fsyncs every message, at a large cost in throughput); its store_dir is private (created 0700; symlinks, other users' and group- or world-writable directories are refused). When no server accepts a connection at start, the sink starts unready and connects in the background, holding its batches meanwhile (run --require-healthy makes it fail instead); /readyz reports it unready while disconnected, while the server does not answer PINGs, or while its LostEvents cannot be delivered (a lost_subject no stream captures). Secrets come from files.`,
		Example: `type: nats
inputs: [flows]
encoding: json
url: nats://nats-0:4222,nats://nats-1:4222
subject: hubble.flows.{{ verdict }}
lost_subject: hubble.lost
jetstream:
  stream: HUBBLE
  create: true
  max_age: 24h
credentials_file: /etc/nats/flowbus.creds
`,
	}, New)
}

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
	CredentialsFile string            `yaml:"credentials_file" doc:"a NATS credentials file (user JWT and seed); at most one of credentials_file, nkey_file and token_file"`
	NKeyFile        string            `yaml:"nkey_file" doc:"a file holding an NKey seed"`
	TokenFile       string            `yaml:"token_file" doc:"a file holding an authentication token"`
	TLS             *sinkutil.TLS     `yaml:"tls" doc:"connect with TLS"`
	Embedded        *EmbeddedOptions  `yaml:"embedded" doc:"the in-process server of url: embedded"`
}

// JetStreamOptions select JetStream publishing.
type JetStreamOptions struct {
	Stream          string          `yaml:"stream" doc:"the stream the subjects belong to; PubAcks from another stream are logged"`
	Subjects        []string        `yaml:"subjects" doc:"the stream's subjects when created; default: subject and lost_subject with placeholders as *"`
	Create          bool            `yaml:"create" default:"false" doc:"create or update the stream at start (needs stream); false: the stream must exist"`
	MaxPending      int             `yaml:"max_pending" default:"4000" doc:"the most unacknowledged publishes in flight"`
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

// Sink is the nats sink. Write is called from one goroutine at a time.
type Sink struct {
	log      *slog.Logger
	name     string
	nodeName string
	enc      codec.Encoder
	ctype    []string

	subject, lostSubject *template.Template

	url         string
	embedded    *EmbeddedOptions
	opts        []nats.Option
	js          *JetStreamOptions
	ackTimeout  time.Duration
	maxAttempts int
	backoff     sinkutil.Backoff
	m           *sinkutil.Metrics
	retry       *sinkutil.Retry

	srv *embeddedServer
	nc  *nats.Conn
	jsc jetstream.JetStream
	// up is closed once nc (and jsc) are set; connMu orders that against
	// Close.
	up       chan struct{}
	connMu   sync.Mutex
	startErr atomic.Pointer[error]
	// stale is set while the server does not answer PINGs.
	stale        atomic.Pointer[error]
	pingInterval time.Duration
	// requireHealthy makes Start fail when no server accepts a connection.
	requireHealthy bool
	done           chan struct{}
	closing        sync.Once
	encErr         sync.Once
	// otherStream logs once when PubAcks name an unexpected stream.
	otherStream sync.Once

	mu    sync.Mutex // serialises Write; guards what follows
	names map[string]string
	nodes map[string][]string
	rates map[uint32][]string
	arena []byte
	items []item
	futs  []pending
	// abandoned is set when a Write returned with publishes unresolved;
	// the next Write then starts with fresh storage.
	abandoned bool
	schema    []string
}

type item struct {
	msg     nats.Msg
	hdr     nats.Header // reused across Writes
	id      [1]string   // the Nats-Msg-Id header value
	off     int
	end     int
	counted bool
	ok      bool
}

type pending struct {
	idx int
	fut jetstream.PubAckFuture
}

// New builds a nats sink from its options; it connects in Start.
func New(b *pipeline.Build, o *Options) (*Sink, error) {
	s := &Sink{
		log:            b.Log,
		name:           b.Name,
		nodeName:       b.NodeName,
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
	if s.enc, err = codec.New(b.Encoding); err != nil {
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
	auth := 0
	if o.CredentialsFile != "" {
		auth++
		if _, err := sinkutil.ReadSecretFile("credentials_file", b.Dir, o.CredentialsFile); err != nil {
			add(b.Errorf("credentials_file", "nats: %v", err))
		}
		s.opts = append(s.opts, nats.UserCredentials(sinkutil.Path(b.Dir, o.CredentialsFile)))
	}
	if o.NKeyFile != "" {
		auth++
		// Read it first: the nats client's errors print the path.
		if _, err := sinkutil.ReadSecretFile("nkey_file", b.Dir, o.NKeyFile); err != nil {
			add(b.Errorf("nkey_file", "nats: %v", err))
		} else if opt, err := nats.NkeyOptionFromSeed(sinkutil.Path(b.Dir, o.NKeyFile)); err != nil {
			add(b.Errorf("nkey_file", "nats: nkey_file: %v", err))
		} else {
			s.opts = append(s.opts, opt)
		}
	}
	if o.TokenFile != "" {
		auth++
		tok, err := sinkutil.ReadSecret("token_file", b.Dir, o.TokenFile)
		if err != nil {
			add(b.Errorf("token_file", "nats: %v", err))
		} else {
			s.opts = append(s.opts, nats.Token(tok))
		}
	}
	if auth > 1 {
		add(b.Errorf("", "nats: set one of credentials_file, nkey_file and token_file"))
	}
	if o.TLS != nil {
		tc, err := o.TLS.Config(b.Dir)
		if err != nil {
			add(b.Errorf("tls", "nats: %v", err))
		} else {
			s.opts = append(s.opts, nats.Secure(tc))
		}
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

// Start starts the embedded server when configured, connects, and creates
// or checks the JetStream stream. When no server accepts a connection,
// Start fails with Build.RequireHealthy (`run --require-healthy`);
// otherwise the sink starts unready and keeps connecting in the background
// with backoff, and Write waits for the connection. A server that refuses
// the sink's credentials or TLS settings, or a stream that cannot be
// created or found, fails Start.
func (s *Sink) Start(ctx context.Context) error {
	url := s.url
	if s.embedded != nil {
		srv, err := acquireEmbedded(s.embedded)
		if err != nil {
			return fmt.Errorf("nats: embedded server: %w", err)
		}
		s.srv = srv
		url = srv.clientURL()
		s.log.Info("nats: embedded server started", "url", url, "store_dir", srv.storeDir)
	}
	nc, err := nats.Connect(url, s.opts...)
	if err != nil {
		err = fmt.Errorf("nats: connect %s: %w", redact(url), err)
		if s.requireHealthy || !errors.Is(err, nats.ErrNoServers) {
			return err
		}
		s.startErr.Store(&err)
		s.log.Warn("nats: no server reachable at start; starting unready and retrying in the background", "err", err)
		go s.reconnect(url)
		return nil
	}
	if err := s.setup(ctx, nc); err != nil {
		nc.Close()
		return err
	}
	return nil
}

// setup creates the JetStream context and checks or creates the stream on
// the connection nc, then makes the sink use it.
func (s *Sink) setup(ctx context.Context, nc *nats.Conn) error {
	var jsc jetstream.JetStream
	if s.js != nil {
		var err error
		jsc, err = jetstream.New(nc,
			jetstream.WithPublishAsyncMaxPending(s.js.MaxPending),
			jetstream.WithPublishAsyncTimeout(s.ackTimeout))
		if err != nil {
			return fmt.Errorf("nats: jetstream: %w", err)
		}
		if err := s.ensureStream(ctx, jsc); err != nil {
			return err
		}
	}
	s.connMu.Lock()
	defer s.connMu.Unlock()
	if closed(s.done) {
		return errors.New("nats: sink closed")
	}
	s.nc, s.jsc = nc, jsc
	close(s.up)
	go s.watch()
	return nil
}

// reconnect connects in the background after Start found no server, with
// backoff, until it succeeds or the sink closes.
func (s *Sink) reconnect(url string) {
	var nc *nats.Conn
	for attempt := 1; ; attempt++ {
		if !sinkutil.Sleep(s.done, s.backoff.Delay(attempt), nil) {
			if nc != nil {
				nc.Close()
			}
			return
		}
		var err error
		if nc == nil {
			if nc, err = nats.Connect(url, s.opts...); err != nil {
				nc = nil
				err = fmt.Errorf("nats: connect %s: %w", redact(url), err)
			}
		}
		if nc != nil {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			err = s.setup(ctx, nc)
			cancel()
			if err == nil {
				s.startErr.Store(nil)
				s.log.Info("nats: connected", "server", nc.ConnectedUrlRedacted(), "attempts", attempt+1)
				return
			}
			if closed(s.done) {
				nc.Close()
				return
			}
			s.log.Error("nats: connected, but the stream is not usable; retrying", "err", err)
		}
		s.startErr.Store(&err)
	}
}

// watch sends a PING every ping_interval and waits up to ack_timeout for
// the PONG: a server that holds the connection open but does not answer
// (a frozen process, a stalled network path) makes the sink unready until
// it answers again. The client itself pings as often and reconnects after
// three unanswered PINGs.
func (s *Sink) watch() {
	t := time.NewTicker(s.pingInterval)
	defer t.Stop()
	for {
		select {
		case <-s.done:
			return
		case <-t.C:
		}
		if s.nc.Status() != nats.CONNECTED {
			s.stale.Store(nil) // Ready reports the connection state
			continue
		}
		if err := s.nc.FlushTimeout(s.ackTimeout); err != nil {
			if s.nc.Status() != nats.CONNECTED || closed(s.done) {
				continue
			}
			e := fmt.Errorf("nats: the server did not answer a PING within %s: %w", s.ackTimeout, err)
			if s.stale.Swap(&e) == nil {
				s.log.Warn("nats: the server does not answer; unready until it does", "err", err)
			}
		} else if s.stale.Swap(nil) != nil {
			s.log.Info("nats: the server answers again")
		}
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

func (s *Sink) ensureStream(ctx context.Context, jsc jetstream.JetStream) error {
	js := s.js
	if js.Stream == "" {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if !js.Create {
		if _, err := jsc.Stream(ctx, js.Stream); err != nil {
			return fmt.Errorf("nats: stream %s: %w (set jetstream.create to create it)", js.Stream, err)
		}
		return nil
	}
	cfg := jetstream.StreamConfig{
		Name:       js.Stream,
		Subjects:   js.Subjects,
		Storage:    jetstream.FileStorage,
		MaxAge:     js.MaxAge.D(),
		MaxBytes:   -1,
		Duplicates: js.DuplicateWindow.D(),
	}
	if js.Storage == "memory" {
		cfg.Storage = jetstream.MemoryStorage
	}
	if js.MaxBytes > 0 {
		cfg.MaxBytes = js.MaxBytes
	}
	if _, err := jsc.CreateOrUpdateStream(ctx, cfg); err != nil {
		return fmt.Errorf("nats: create stream %s (subjects %s): %w", js.Stream, strings.Join(js.Subjects, ","), err)
	}
	return nil
}

// redact removes user information from a URL for messages.
func redact(url string) string {
	var out []string
	for _, u := range strings.Split(url, ",") {
		if at := strings.LastIndexByte(u, '@'); at >= 0 {
			scheme := ""
			if i := strings.Index(u, "://"); i >= 0 && i < at {
				scheme = u[:i+3]
			}
			u = scheme + "***@" + u[at+1:]
		}
		out = append(out, u)
	}
	return strings.Join(out, ",")
}

// Ready reports an error while the connection is down.
func (s *Sink) Ready() error {
	if !closed(s.up) {
		if p := s.startErr.Load(); p != nil {
			return *p
		}
		return errors.New("nats: not connected yet")
	}
	if st := s.nc.Status(); st != nats.CONNECTED {
		return fmt.Errorf("nats: connection %s", strings.ToLower(st.String()))
	}
	if p := s.stale.Load(); p != nil {
		return *p
	}
	return s.retry.LostReady()
}

// Close drains the connection (Write is synchronous, so every accepted
// message is acknowledged or given up already) and stops the embedded
// server. When ctx ends first (the shutdown timeout passed), the connection
// is closed without draining: nothing counted is pending (JetStream), or it
// was counted delivered at most once (core publish), so this is logged, not
// returned as an error.
func (s *Sink) Close(ctx context.Context) error {
	s.closing.Do(func() { close(s.done) })
	s.mu.Lock()
	defer s.mu.Unlock()
	s.connMu.Lock()
	defer s.connMu.Unlock()
	if s.nc != nil && !s.nc.IsClosed() {
		closed := make(chan struct{})
		s.nc.SetClosedHandler(func(*nats.Conn) { close(closed) })
		if ctx.Err() != nil || s.nc.Drain() != nil {
			s.nc.Close()
		} else {
			select {
			case <-closed:
			case <-ctx.Done():
				s.nc.Close()
				s.log.Warn("nats: the connection did not drain before the shutdown timeout; closed it", "err", ctx.Err())
			}
		}
	}
	if s.srv != nil {
		releaseEmbedded(s.srv)
		s.srv = nil
	}
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

// connected tells the retry driver whether the client is connected, so
// that a backoff ends as soon as the client has reconnected.
func (s *Sink) connected() bool { return s.nc != nil && s.nc.IsConnected() }

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
			hdr = make(nats.Header, 5)
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
