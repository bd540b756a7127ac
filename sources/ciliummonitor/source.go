// Package ciliummonitor is the `cilium-monitor` source: it reads Cilium's
// datapath events from the agent's monitor socket (protocol 1.2: one gob
// stream of payloads per connection, /var/run/cilium/monitor1_2.sock) and
// decodes them into Hubble flows with flow/datapath. Perf LOST payloads
// become LostEvents (PERF_EVENT_RING_BUFFER, with their CPU); agent and
// debug events are counted and skipped; malformed samples are counted,
// logged with their context and skipped. The connection is re-established
// with exponential backoff, and the source reports itself unready while
// it is down. With `path:` it replays a recorded stream from a file
// instead (finite), which the Recorder in this package writes.
//
// Flows carry what the datapath sample says (see flow/datapath); Flow.time
// is the time the sample was decoded, as Hubble's is the time the agent
// received it, and node_name is flowbus's node name. Read from the socket,
// a flow's interface is named from the node's link table by its index, as
// Hubble names it (interface_names; link events keep the names current).
//
// Its keys: `flowbus components cilium-monitor`, or docs/components.md.
//
// Cilium drops payloads for a socket client that does not keep up (its
// per-client queue is monitor-queue-size) without a LOST record, so a
// pipeline that blocks this source loses events the source cannot count.
package ciliummonitor

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"gopkg.in/yaml.v3"

	flowpb "github.com/flowbus/flowbus/flow"
	"github.com/flowbus/flowbus/flow/datapath"
	"github.com/flowbus/flowbus/flow/flowid"
	"github.com/flowbus/flowbus/flow/monitor"
	"github.com/flowbus/flowbus/internal/ifname"
	"github.com/flowbus/flowbus/pipeline"
	"github.com/flowbus/flowbus/pipeline/config"
)

func init() {
	pipeline.RegisterSource(pipeline.Spec{
		Type:        "cilium-monitor",
		Summary:     "reads Cilium's datapath events from the agent's monitor socket (or a recording) and decodes them into Hubble flows",
		Description: `The source speaks the monitor protocol 1.2 (one gob stream of payloads per connection). Perf LOST payloads become LostEvents (PERF_EVENT_RING_BUFFER, with their CPU); agent and debug events are counted and skipped; malformed samples are counted, logged and skipped. Read from the socket, each flow's interface is named from the node's link table by its index, as Hubble does (interface_names; link events keep the names current as veths come and go). The connection is re-established with exponential backoff, and the source is unready while it is down. With path it replays a recorded stream instead and ends at its end. Cilium drops payloads for a socket client that does not keep up without a LOST record, so a pipeline that blocks this source loses events the source cannot count.`,
		Example: `type: cilium-monitor
socket: /var/run/cilium/monitor1_2.sock
reconnect: {initial_backoff: 100ms, max_backoff: 10s}
cilium_version: "1.18"
`,
	}, New)
}

// DefaultSocket is Cilium's monitor socket for protocol 1.2.
const DefaultSocket = "/var/run/cilium/monitor1_2.sock"

// Options are the source's config keys.
type Options struct {
	// Socket is the monitor socket to connect to (default
	// /var/run/cilium/monitor1_2.sock).
	Socket string `yaml:"socket" doc:"the monitor socket to connect to (default /var/run/cilium/monitor1_2.sock); not with path"`
	// Path replays a recorded monitor stream from a file instead of
	// connecting; the source ends at the end of the file. A relative path
	// is taken from the config file's directory.
	Path string `yaml:"path" doc:"replay a recorded monitor stream from this file instead of connecting; the source ends at its end"`
	// Reconnect controls what happens when the socket cannot be reached
	// or the connection ends.
	Reconnect ReconnectOptions `yaml:"reconnect" type:"boolean or mapping" doc:"reconnection to the socket; true or false is short for enabled"`
	// CiliumVersion is the Cilium release whose datapath emits the
	// events, as "1.18" or "v1.19.3". It selects the TraceSockNotify
	// layout, which the bytes cannot tell apart (default: 1.19 and
	// later).
	CiliumVersion string `yaml:"cilium_version" example:"\"1.18\"" doc:"the Cilium release emitting the events (1.18, v1.19.3); it selects the trace-sock layout; default: 1.19 and later"`
	// SkipSockTrace drops socket-translation events, as Hubble does for
	// sockets whose pod it cannot resolve (default false: they become
	// SOCK flows without a source address).
	SkipSockTrace bool `yaml:"skip_sock_trace" default:"false" doc:"drop socket-translation events, as Hubble does for sockets whose pod it cannot resolve; false makes them SOCK flows"`
	// InterfaceNames fills each flow's interface name from the node's link
	// table by its index, as Hubble does, when reading the socket (a
	// recording comes from another time, maybe another node, so its flows
	// keep only the index). flowbus must then share the node's network
	// namespace, as the DaemonSet does (hostNetwork).
	InterfaceNames bool `yaml:"interface_names" default:"true" doc:"name each flow's interface from the node's link table (ifindex → name), as Hubble does; needs the node's network namespace (hostNetwork); not for a recording"`
	// BatchSize is the most events per emitted batch (default 512).
	BatchSize int `yaml:"batch_size" default:"512" doc:"the most events per emitted batch"`
}

// ReconnectOptions configure reconnection to the socket. In the config it
// is a mapping of the keys below, or just true or false for enabled.
type ReconnectOptions struct {
	// Enabled (default true): keep retrying to connect, and reconnect
	// after the connection ends. When false, a failed first connection
	// stops the pipeline before it runs, and the end of the connection
	// ends the source.
	Enabled *bool `yaml:"enabled" doc:"keep retrying to connect and reconnect after the connection ends (default true); false: a failed first connection stops the pipeline, the end of the connection ends the source"`
	// InitialBackoff is the first wait before retrying (default 100ms);
	// it doubles after every failed attempt, up to MaxBackoff (default
	// 10s), and starts over once a connection delivers data.
	InitialBackoff config.Duration `yaml:"initial_backoff" doc:"the first wait before retrying (default 100ms); it doubles after every failed attempt and starts over once a connection delivers data"`
	MaxBackoff     config.Duration `yaml:"max_backoff" doc:"the longest wait between attempts (default 10s)"`
}

// UnmarshalConfig accepts `reconnect: false` as well as the mapping.
func (r *ReconnectOptions) UnmarshalConfig(n *yaml.Node) error {
	if n.Kind == yaml.ScalarNode {
		var b bool
		if err := n.Decode(&b); err != nil {
			return config.Errorf(n, "reconnect: want true, false, or a mapping with enabled, initial_backoff and max_backoff")
		}
		r.Enabled = &b
		return nil
	}
	type plain ReconnectOptions
	return config.Decode(n, (*plain)(r))
}

// Source reads the Cilium monitor stream.
type Source struct {
	socket    string
	path      string
	reconnect bool
	initial   time.Duration
	max       time.Duration
	batchSize int
	node      string
	log       *slog.Logger
	m         *metrics
	dec       datapath.Decoder
	ids       *flowid.Generator // flow uuids, as Hubble gives every decoded flow
	names     *ifname.Cache     // interface names; nil for a recording or when off

	file *os.File    // replay, opened by Start
	conn net.Conn    // first connection when reconnect is off, from Start
	ran  atomic.Bool // Run was called: it owns file and conn

	ready pipeline.ReadyState
}

// New builds a cilium-monitor source from its options.
func New(b *pipeline.Build, o *Options) (*Source, error) {
	s := &Source{
		socket:    o.Socket,
		reconnect: o.Reconnect.Enabled == nil || *o.Reconnect.Enabled,
		initial:   o.Reconnect.InitialBackoff.D(),
		max:       o.Reconnect.MaxBackoff.D(),
		batchSize: o.BatchSize,
		node:      b.NodeName,
		ids:       flowid.New(),
		log:       b.Log,
	}
	if s.log == nil {
		s.log = slog.Default()
	}
	switch {
	case o.Path != "" && o.Socket != "":
		return nil, b.Errorf("path", "cilium-monitor source: set either socket or path, not both")
	case o.Path != "":
		s.path = o.Path
		if !filepath.IsAbs(s.path) {
			s.path = filepath.Join(b.Dir, s.path)
		}
	case s.socket == "":
		s.socket = DefaultSocket
	}
	if s.initial == 0 {
		s.initial = 100 * time.Millisecond
	}
	if s.max == 0 {
		s.max = 10 * time.Second
	}
	if s.max < s.initial {
		return nil, b.Errorf("reconnect.max_backoff",
			"cilium-monitor source: reconnect max_backoff (%s) is below initial_backoff (%s)", s.max, s.initial)
	}
	if s.batchSize < 1 {
		return nil, b.Errorf("batch_size", "cilium-monitor source: batch_size must be at least 1")
	}
	if o.CiliumVersion != "" {
		v, err := sockTraceVersion(o.CiliumVersion)
		if err != nil {
			return nil, b.Errorf("cilium_version", "cilium-monitor source: %v", err)
		}
		s.dec.SockTraceVersion = v
	}
	s.dec.SkipSockTrace = o.SkipSockTrace
	m, err := newMetrics(b.Metrics)
	if err != nil {
		return nil, fmt.Errorf("cilium-monitor source %s: %w", b.Name, err)
	}
	s.m = m
	s.ready.Gauge = m.connected
	if s.path == "" {
		s.ready.Set(fmt.Errorf("not connected to %s yet", s.socket))
		if o.InterfaceNames {
			s.names = new(ifname.Cache)
		}
	}
	return s, nil
}

// sockTraceVersion maps a Cilium release ("1.18", "v1.19.2") to the
// TraceSockNotify layout it emits.
func sockTraceVersion(v string) (datapath.SockTraceVersion, error) {
	var major, minor int
	s := v
	if len(s) > 0 && s[0] == 'v' {
		s = s[1:]
	}
	if n, err := fmt.Sscanf(s, "%d.%d", &major, &minor); n != 2 || err != nil && !errors.Is(err, io.ErrUnexpectedEOF) {
		return 0, fmt.Errorf("cilium_version %q: want a release like 1.18 or v1.19.3", v)
	}
	if major < 1 || major == 1 && minor <= 18 {
		return datapath.SockTraceV1_18, nil
	}
	return datapath.SockTraceV1_19, nil
}

// Start opens the recording, or, when reconnecting is off, makes the first
// connection, so that either failing stops the pipeline before it runs.
func (s *Source) Start(ctx context.Context) error {
	if s.path != "" {
		f, err := os.Open(s.path)
		if err != nil {
			return fmt.Errorf("cilium-monitor source: %w", err)
		}
		s.file = f
		return nil
	}
	if !s.reconnect {
		c, err := s.dial(ctx)
		if err != nil {
			return fmt.Errorf("cilium-monitor source: %w", err)
		}
		s.conn = c
		s.ready.Set(nil)
	}
	return nil
}

// Stop closes what Start opened when Run never ran (a component started
// after this source failed to start); Run closes them itself.
func (s *Source) Stop(context.Context) error {
	if s.ran.Load() {
		return nil
	}
	var errs []error
	if s.file != nil {
		errs = append(errs, s.file.Close())
		s.file = nil
	}
	if s.conn != nil {
		errs = append(errs, s.conn.Close())
		s.conn = nil
	}
	return errors.Join(errs...)
}

// Ready reports whether the source is connected to the monitor socket.
func (s *Source) Ready() error { return s.ready.Err() }

func (s *Source) dial(ctx context.Context) (net.Conn, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", s.socket)
	if err != nil {
		return nil, fmt.Errorf("connect to monitor socket: %w", err)
	}
	return c, nil
}

// Run reads until ctx ends, or until the recording (or, without
// reconnect, the connection) ends.
func (s *Source) Run(ctx context.Context, out pipeline.Output) error {
	s.ran.Store(true)
	r := newReporter(s.log)
	defer r.flush()
	if s.names != nil {
		stop, err := s.names.Watch(s.log)
		if err != nil {
			s.log.Warn("cilium-monitor source: cannot subscribe to link events; interface names are looked up by index", "error", err)
		}
		defer stop()
	}
	if s.path != "" {
		if s.file == nil {
			if err := s.Start(ctx); err != nil {
				return err
			}
		}
		defer s.file.Close()
		err := s.consume(ctx, s.file, out, r)
		switch {
		case err == nil || ctx.Err() != nil:
			return nil
		case errors.Is(err, io.ErrUnexpectedEOF):
			s.m.malformed.Inc()
			s.log.Warn("recording ends inside a payload (cut short?); the partial payload is skipped", "path", s.path)
			return nil
		default:
			return fmt.Errorf("cilium-monitor source: replay %s: %w", s.path, err)
		}
	}
	backoff := s.initial
	conn := s.conn
	s.conn = nil
	failures := 0
	for {
		if conn == nil {
			c, err := s.dial(ctx)
			if err != nil {
				if ctx.Err() != nil {
					return nil
				}
				s.ready.Set(err)
				s.m.connectFailures.Inc()
				if !s.reconnect {
					return fmt.Errorf("cilium-monitor source: %w", err)
				}
				if failures == 0 {
					s.log.Warn("cannot reach the Cilium monitor socket; retrying", "socket", s.socket, "error", err)
				} else if failures%30 == 0 {
					s.log.Warn("still cannot reach the Cilium monitor socket", "socket", s.socket, "attempts", failures+1, "error", err)
				}
				failures++
				if !pipeline.Sleep(ctx, backoff) {
					return nil
				}
				backoff = min(2*backoff, s.max)
				continue
			}
			conn = c
		}
		if failures > 0 {
			s.log.Info("connected to the Cilium monitor socket", "socket", s.socket, "attempts", failures+1)
		}
		failures = 0
		s.ready.Set(nil)
		s.m.connects.Inc()
		stop := context.AfterFunc(ctx, func() { conn.Close() })
		n0 := s.m.payloadCount
		err := s.consume(ctx, conn, out, r)
		stop()
		conn.Close()
		conn = nil
		if ctx.Err() != nil {
			return nil
		}
		if errors.Is(err, errEmit) {
			return err
		}
		if err == nil {
			err = errors.New("monitor socket closed by the agent")
		}
		s.ready.Set(fmt.Errorf("monitor connection lost: %w", err))
		if !s.reconnect {
			s.log.Info("monitor connection ended", "socket", s.socket, "error", err)
			return nil
		}
		s.log.Warn("monitor connection lost; reconnecting", "socket", s.socket, "error", err)
		if s.m.payloadCount > n0 {
			backoff = s.initial
		}
		if !pipeline.Sleep(ctx, backoff) {
			return nil
		}
		backoff = min(2*backoff, s.max)
	}
}

var errEmit = errors.New("emit")

// consume decodes one stream into batches until it ends. It returns nil
// at the clean end of the stream.
func (s *Source) consume(ctx context.Context, rd io.Reader, out pipeline.Output, rep *reporter) error {
	r := monitor.NewReader(rd)
	var p monitor.Payload
	b := pipeline.NewBatch()
	defer func() {
		if b != nil {
			b.Release()
		}
	}()
	emit := func() error {
		if b.Len() == 0 {
			return nil
		}
		nb := b
		b = nil
		if err := out.Emit(ctx, nb); err != nil {
			return fmt.Errorf("%w: %w", errEmit, err)
		}
		b = pipeline.NewBatch()
		return nil
	}
	for {
		err := r.Next(&p)
		if err != nil {
			if eerr := emit(); eerr != nil {
				return eerr
			}
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
		s.m.payloadCount++
		switch p.Type {
		case monitor.PayloadSample:
			ev := b.Next()
			f := ev.FlowStorage()
			if err := s.dec.Decode(p.Data, f); err != nil {
				b.Truncate(b.Len() - 1)
				if errors.Is(err, datapath.ErrSkip) {
					s.m.skip(p.Data)
				} else {
					s.m.malformed.Inc()
					rep.malformed(err, &p, r.Offset())
				}
				break
			}
			f.Uuid = s.ids.Next()
			f.NodeName = s.node
			if s.names != nil && f.Interface != nil && f.Interface.Name == "" {
				f.Interface.Name = s.names.Get(f.Interface.Index)
			}
			ev.NodeName = s.node
			ev.Time = f.Time
			b.AddInputBytes(len(p.Data))
			s.m.flows.Inc()
			if b.Len() >= s.batchSize {
				if err := emit(); err != nil {
					return err
				}
			}
		case monitor.PayloadLost:
			// Keep the order: the flows read before the loss go first.
			if err := emit(); err != nil {
				return err
			}
			s.m.lost.Add(float64(p.Lost))
			out.Lost(flowpb.LostEventSource_PERF_EVENT_RING_BUFFER, int32(p.CPU), p.Lost)
		default:
			s.m.unknownPayloads.Inc()
			rep.unknownPayload(p.Type)
		}
		if r.Buffered() == 0 {
			// The next read may block: don't hold what we have.
			if err := emit(); err != nil {
				return err
			}
		}
		select {
		case <-ctx.Done():
			return emit()
		default:
		}
	}
}

// reporter logs malformed samples without flooding: the first with its
// context, then a count at most every 10 seconds.
type reporter struct {
	log       *slog.Logger
	logged    bool
	n         int64
	lastErr   error
	last      time.Time
	unknownOK bool
}

func newReporter(log *slog.Logger) *reporter { return &reporter{log: log} }

func (r *reporter) malformed(err error, p *monitor.Payload, offset int64) {
	now := time.Now()
	if !r.logged {
		r.logged, r.last = true, now
		head := p.Data
		if len(head) > 64 {
			head = head[:64]
		}
		r.log.Warn("skipping malformed datapath sample (further ones are counted and summarised)",
			"error", err, "cpu", p.CPU, "bytes", len(p.Data), "stream_offset", offset, "head", fmt.Sprintf("%x", head))
		return
	}
	r.n++
	r.lastErr = err
	if now.Sub(r.last) >= 10*time.Second {
		r.flush()
	}
}

func (r *reporter) unknownPayload(typ int) {
	if !r.unknownOK {
		r.unknownOK = true
		r.log.Warn("skipping monitor payloads of unknown type (further ones are only counted)", "type", typ)
	}
}

func (r *reporter) flush() {
	if r.n == 0 {
		return
	}
	r.log.Warn("skipped more malformed datapath samples", "count", r.n, "last_error", r.lastErr)
	r.n, r.last = 0, time.Now()
}

// metrics are the source's Prometheus metrics.
type metrics struct {
	flows           prometheus.Counter
	malformed       prometheus.Counter
	skipped         [4]prometheus.Counter // agent, debug, access-log-less, other
	lost            prometheus.Counter
	unknownPayloads prometheus.Counter
	connects        prometheus.Counter
	connectFailures prometheus.Counter
	connected       prometheus.Gauge

	payloadCount uint64 // not exported; used for backoff resets
}

var skipKinds = [...]string{"agent", "debug", "trace_sock", "other"}

func (m *metrics) skip(data []byte) {
	k := 3
	if len(data) > 0 {
		switch data[0] {
		case datapath.MessageTypeAgent:
			k = 0
		case datapath.MessageTypeDebug:
			k = 1
		case datapath.MessageTypeTraceSock:
			k = 2
		}
	}
	m.skipped[k].Inc()
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		flows: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "flowbus_cilium_monitor_flows_total",
			Help: "Datapath samples decoded into flows.",
		}),
		malformed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "flowbus_cilium_monitor_malformed_samples_total",
			Help: "Samples that could not be decoded (Hubble would drop them too), skipped.",
		}),
		lost: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "flowbus_cilium_monitor_perf_lost_samples_total",
			Help: "Samples the agent's perf ring lost, as reported by LOST payloads.",
		}),
		unknownPayloads: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "flowbus_cilium_monitor_unknown_payloads_total",
			Help: "Monitor payloads of a type other than sample and lost, skipped.",
		}),
		connects: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "flowbus_cilium_monitor_connections_total",
			Help: "Connections made to the monitor socket.",
		}),
		connectFailures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "flowbus_cilium_monitor_connect_failures_total",
			Help: "Failed attempts to connect to the monitor socket.",
		}),
		connected: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "flowbus_cilium_monitor_connected",
			Help: "1 while connected to the monitor socket.",
		}),
	}
	skipped := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "flowbus_cilium_monitor_skipped_samples_total",
		Help: "Samples that are not flows (agent events, debug messages, ...), by kind, skipped.",
	}, []string{"kind"})
	for i, k := range skipKinds {
		m.skipped[i] = skipped.WithLabelValues(k)
	}
	if reg == nil {
		return m, nil
	}
	for _, c := range []prometheus.Collector{m.flows, m.malformed, m.lost, m.unknownPayloads, m.connects, m.connectFailures, m.connected, skipped} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("register metrics: %w", err)
		}
	}
	return m, nil
}
