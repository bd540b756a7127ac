// Package hubble is the `hubble` source: it streams flows from a Hubble
// server (the Cilium agent's socket) or from Hubble Relay (the whole
// cluster) over Hubble's observer.Observer gRPC API, GetFlows with follow,
// for ever. Flows keep every field the server sent (node_name, enrichment,
// uuid, L7) and their envelope's node_name and time.
//
// The allow and deny FlowFilters (the `filter` transform's syntax) are sent
// as the request's whitelist and blacklist, and field_mask as its field
// mask, so the server does the filtering. The server's lost_events become
// LostEvents with their own source (HUBBLE_RING_BUFFER,
// OBSERVER_EVENTS_QUEUE, PERF_EVENT_RING_BUFFER), counted as lost in the
// summary; Relay's node_status events are logged and counted per node.
//
// A broken stream (server gone, TLS refused, garbage on the wire, a stream
// cut mid-message) is logged, counted and re-established with exponential
// backoff between reconnect.min and reconnect.max; the source is unready
// while it is down. The new stream resumes from the time of the last flow
// emitted (GetFlows since) and the flows already emitted (recognised by
// uuid) are dropped at the seam. When none of the flows the server sends
// back was emitted before, the server no longer holds the end of the old
// stream (its ring moved on, or it restarted), so flows may be missing: the
// gap is logged and counted. Resuming compares the server's clock with
// itself only, except for a stream that ended before it delivered a flow:
// that one resumes from the time it was opened, by flowbus's clock.
//
// Responses are decoded without protobuf-go's message types, straight into
// the batch's pooled flows (codec.UnmarshalGetFlowsResponse): every string
// of a flow is a slice of one copy of its message, made in storage the
// batch owns and reuses when it is released (pipeline.Batch.Alloc), so the
// source allocates nothing per flow; a component that keeps a string
// beyond its hold on the batch copies it (strings.Clone). A message that
// is not valid protobuf ends the stream like any broken stream, with its
// position in the log.
//
// The call itself is the source's own (see call): HTTP/2 frames read on
// the goroutine that takes the messages, each message copied from its
// frame into the batch's storage, instead of grpc-go's client, which
// costs more CPU per flow than the decoding does.
//
// Backpressure: the source reads the stream only as fast as the pipeline
// takes its batches, so with when_full: block a slow pipeline slows the
// server through HTTP/2 flow control, and what is held in between is
// bounded (one batch, a small queue and the 4 MiB window).
//
// Its keys: `flowbus components hubble`, or docs/components.md.
package hubble

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/fieldmaskpb"
	"google.golang.org/protobuf/types/known/timestamppb"
	"gopkg.in/yaml.v3"

	"github.com/flowbus/flowbus/codec"
	flowpb "github.com/flowbus/flowbus/flow"
	"github.com/flowbus/flowbus/flow/observer"
	"github.com/flowbus/flowbus/flow/relay"
	"github.com/flowbus/flowbus/flowfilter"
	"github.com/flowbus/flowbus/internal/sinkutil"
	"github.com/flowbus/flowbus/pipeline"
	"github.com/flowbus/flowbus/pipeline/config"
	"github.com/flowbus/flowbus/transforms/fieldmask"
)

func init() {
	pipeline.RegisterSource(pipeline.Spec{
		Type:        "hubble",
		Summary:     "streams enriched flows from a Hubble server (the Cilium agent's socket) or Hubble Relay over Hubble's gRPC API",
		Description: `GetFlows with follow, for ever; flows keep every field the server sent. allow and deny are sent to the server as the request's whitelist and blacklist, field_mask as its field mask. The server's lost events become LostEvents with their own source, counted as lost; Relay's node status events are logged and counted per node. A broken stream is logged, counted and re-established with backoff (the source is unready meanwhile); it resumes from the time of the last flow emitted, drops the flows already emitted (by uuid) at the seam, and logs and counts a gap when the server no longer holds the end of the old stream. With when_full: block a slow pipeline slows the server through gRPC flow control.`,
		Example: `type: hubble
address: hubble-relay.kube-system.svc:443
tls:
  ca_file: /var/lib/hubble-relay/tls/ca.crt
  cert_file: /var/lib/hubble-relay/tls/client.crt
  key_file: /var/lib/hubble-relay/tls/client.key
  server_name: ui.hubble-relay.cilium.io
deny:
  - {source_pod: ["kube-system/"]}
since: 5m
reconnect: {min: 1s, max: 30s}
`,
	}, New)
}

// DefaultAddress is the Cilium agent's Hubble socket.
const DefaultAddress = "unix:///var/run/cilium/hubble.sock"

// Options are the source's config keys.
type Options struct {
	Address   string           `yaml:"address" default:"unix:///var/run/cilium/hubble.sock" doc:"the Hubble server: unix:///PATH (the agent's socket) or HOST:PORT (Hubble Relay)"`
	TLS       *sinkutil.TLS    `yaml:"tls" doc:"connect with TLS; with cert_file and key_file, mutual TLS as Hubble Relay and Hubble's server configure it; default: plaintext"`
	Allow     *yaml.Node       `yaml:"allow" type:"list of FlowFilter" doc:"FlowFilters sent as the request's whitelist: the server sends the flows matching one of them; empty: every flow"`
	Deny      *yaml.Node       `yaml:"deny" type:"list of FlowFilter" doc:"FlowFilters sent as the request's blacklist: the server leaves out the flows matching one of them"`
	FieldMask []fieldmask.Path `yaml:"field_mask" type:"list of field paths" doc:"flow fields the server sends (source.pod_name, l4.TCP.destination_port); default: every field; without uuid, flows at a reconnection seam cannot be told apart and may repeat"`
	Since     string           `yaml:"since" doc:"where the first stream starts: empty is now (new flows only), a duration (5m) is that long ago, or an RFC 3339 time"`
	Reconnect Reconnect        `yaml:"reconnect" doc:"the backoff between attempts to re-establish the stream"`
}

// Reconnect is the backoff between attempts: it starts at Min, doubles after
// every failed attempt up to Max, and starts over once a stream delivers.
type Reconnect struct {
	Min config.Duration `yaml:"min" default:"1s" doc:"the first wait before reconnecting"`
	Max config.Duration `yaml:"max" default:"30s" doc:"the longest wait between attempts"`
}

// seamSize is how many uuids of the last emitted flows are kept to drop
// duplicates at a reconnection seam: more than a Hubble ring's default
// capacity of flows sharing the last flow's time.
const seamSize = 8192

// Source streams flows from a Hubble server.
type Source struct {
	name      string
	address   string // as configured, for logs
	endpoint  endpoint
	allow     []*flowpb.FlowFilter
	deny      []*flowpb.FlowFilter
	mask      *fieldmaskpb.FieldMask
	since     time.Time // zero: now
	min, max  time.Duration
	batchSize int
	log       *slog.Logger
	m         *metrics

	// Resume state, owned by Run.
	resume *timestamppb.Timestamp // since of the next stream
	// lastTime is the time of the last flow emitted (its envelope's, else
	// its own), copied: the emitted messages belong to the pipeline, which
	// reuses their storage.
	lastTime  time.Time
	emitted   bool         // a flow with a time was emitted
	maxTime   time.Time    // latest flow time emitted
	spares    codec.Spares // the decoder's, used by stream's goroutine
	recent    []uuidKey    // uuids of the last flows emitted, a ring
	recentPos int
	seam      *seam // set while a resumed stream passes the old one's end

	ready pipeline.ReadyState
}

// seam is what a resumed stream checks its first flows against.
type seam struct {
	seen    map[string]struct{}
	until   time.Time // flows after this time cannot be duplicates
	overlap bool      // a flow already emitted came back: no gap
	decided bool      // the first new flow arrived
}

// New builds a hubble source from its options.
func New(b *pipeline.Build, o *Options) (*Source, error) {
	s := &Source{
		name:      b.Name,
		address:   o.Address,
		min:       o.Reconnect.Min.D(),
		max:       o.Reconnect.Max.D(),
		batchSize: pipeline.DefaultBatchSize,
		log:       b.Log,
		recent:    make([]uuidKey, seamSize),
	}
	if s.log == nil {
		s.log = slog.Default()
	}
	var errs config.Errors
	add := func(err *config.Error) { errs = append(errs, err) }
	var tc *tls.Config
	if o.TLS != nil {
		c, err := o.TLS.Config(b.Dir)
		if err != nil {
			add(b.Errorf("tls", "hubble source: %v", err))
		}
		tc = c
	}
	ep, err := parseEndpoint(o.Address, tc)
	if err != nil {
		add(b.Errorf("address", "hubble source: %v", err))
	}
	s.endpoint = ep
	allow, aerr := flowfilter.ParseFilters(o.Allow)
	deny, derr := flowfilter.ParseFilters(o.Deny)
	if aerr != nil {
		errs = append(errs, config.Positioned(aerr, o.Allow)...)
	}
	if derr != nil {
		errs = append(errs, config.Positioned(derr, o.Deny)...)
	}
	if aerr == nil && derr == nil {
		// The server compiles them too; checking here reports a bad filter
		// at load time, with its position, instead of as a stream error.
		if _, err := flowfilter.New(allow, deny); err != nil {
			if fe := flowfilter.AllErrors(allow, deny, o.Allow, o.Deny); len(fe) > 0 {
				errs = append(errs, fe...)
			} else {
				errs = append(errs, config.Positioned(flowfilter.Positioned(err, o.Allow, o.Deny), b.At("allow"))...)
			}
		}
	}
	s.allow, s.deny = allow, deny
	if len(o.FieldMask) > 0 {
		s.mask = &fieldmaskpb.FieldMask{}
		for _, p := range o.FieldMask {
			s.mask.Paths = append(s.mask.Paths, p.String())
		}
	}
	if o.Since != "" {
		t, err := parseSince(o.Since, time.Now())
		if err != nil {
			add(b.Errorf("since", "hubble source: %v", err))
		}
		s.since = t
	}
	switch {
	case s.min <= 0:
		add(b.Errorf("reconnect.min", "hubble source: reconnect.min must be positive"))
	case s.max < s.min:
		add(b.Errorf("reconnect.max", "hubble source: reconnect.max (%s) is below reconnect.min (%s)", s.max, s.min))
	}
	if len(errs) > 0 {
		return nil, errs
	}
	m, err := newMetrics(b.Metrics)
	if err != nil {
		return nil, fmt.Errorf("hubble source %s: %w", b.Name, err)
	}
	s.m = m
	s.ready.Gauge = m.connected
	s.ready.Set(fmt.Errorf("not connected to %s yet", s.address))
	return s, nil
}

// parseSince reads the since key: a duration before now or an RFC 3339 time.
func parseSince(v string, now time.Time) (time.Time, error) {
	if d, err := time.ParseDuration(v); err == nil {
		if d < 0 {
			return time.Time{}, fmt.Errorf("since %q: a duration must not be negative", v)
		}
		return now.Add(-d), nil
	}
	t, err := time.Parse(time.RFC3339Nano, v)
	if err != nil {
		return time.Time{}, fmt.Errorf("since %q: want a duration (5m) or an RFC 3339 time (2026-01-02T15:04:05Z)", v)
	}
	return t, nil
}

// Start does nothing: each stream connects on its own (see call), and an
// unreachable server is retried by Run, with the source unready meanwhile.
func (s *Source) Start(context.Context) error { return nil }

// Stop does nothing: a stream's connection closes when Run returns.
func (s *Source) Stop(context.Context) error { return nil }

// Ready reports whether the stream is up.
func (s *Source) Ready() error { return s.ready.Err() }

// request builds the GetFlows request of the next stream.
func (s *Source) request() *observer.GetFlowsRequest {
	return &observer.GetFlowsRequest{
		Follow:    true,
		Whitelist: s.allow,
		Blacklist: s.deny,
		FieldMask: s.mask,
		Since:     s.resume,
	}
}

var errEmit = errors.New("emit")

// Run streams until ctx ends.
func (s *Source) Run(ctx context.Context, out pipeline.Output) error {
	if !s.since.IsZero() {
		s.resume = timestamppb.New(s.since)
	}
	wait := s.min
	failures := 0
	for {
		opened := time.Now()
		flows, err := s.stream(ctx, out)
		if ctx.Err() != nil {
			return nil
		}
		if errors.Is(err, errEmit) {
			return err
		}
		s.ready.Set(fmt.Errorf("stream from %s down: %w", s.address, err))
		if flows > 0 {
			wait, failures = s.min, 0
		}
		if flows == 0 && !s.emitted && s.resume == nil {
			// Nothing emitted yet, and the stream followed from "now":
			// resume from the time it was opened.
			s.resume = timestamppb.New(opened)
		}
		code := status.Code(err)
		s.m.errors.WithLabelValues(code.String()).Inc()
		switch {
		case failures == 0:
			s.log.Warn("Hubble stream failed; reconnecting", "address", s.address, "code", code.String(), "error", errText(err), "retry_in", wait.String())
		case failures%30 == 0:
			s.log.Warn("Hubble stream still failing", "address", s.address, "attempts", failures+1, "code", code.String(), "error", errText(err))
		}
		failures++
		if !pipeline.Sleep(ctx, wait) {
			return nil
		}
		wait = min(2*wait, s.max)
		s.m.reconnects.Inc()
		s.startSeam()
	}
}

// errText is the message of a gRPC status error, or err's text.
func errText(err error) string {
	if st, ok := status.FromError(err); ok {
		return st.Message()
	}
	return err.Error()
}

// startSeam prepares the next stream to resume after the last flow emitted.
func (s *Source) startSeam() {
	if !s.emitted {
		return
	}
	s.resume = timestamppb.New(s.lastTime)
	seen := make(map[string]struct{}, seamSize)
	for i := range s.recent {
		if u := s.recent[i].get(); u != "" {
			seen[u] = struct{}{}
		}
	}
	s.seam = &seam{seen: seen, until: s.maxTime}
}

// stream runs one GetFlows stream until it fails; it returns the number of
// flows emitted from it.
func (s *Source) stream(ctx context.Context, out pipeline.Output) (int, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	req, err := proto.Marshal(s.request())
	if err != nil {
		return 0, status.Errorf(codes.Internal, "encode the GetFlows request: %v", err)
	}
	c, err := open(ctx, s.endpoint, observer.Observer_GetFlows_FullMethodName, req)
	if err != nil {
		return 0, err
	}
	defer c.close()
	if s.seam != nil {
		s.log.Info("Hubble stream re-established; resuming", "address", s.address, "since", s.resume.AsTime().Format(time.RFC3339Nano))
	} else {
		s.log.Info("Hubble stream established", "address", s.address)
	}
	s.ready.Set(nil)

	// A reader goroutine receives the responses and copies each into the
	// storage of the batch it is to be decoded into; this one takes
	// whatever has been received whenever it is free, decodes it into that
	// batch's pooled flows and emits the batch. So a batch goes out as soon
	// as nothing more is waiting, and a blocked Emit stops the reads once
	// a full batch waits (gRPC flow control then holds the server back).
	h := newHandoff(s.batchSize)
	go h.read(ctx, c)
	defer func() {
		cancel()
		h.close()
	}()

	emitted := 0
	var b *pipeline.Batch
	defer func() {
		if b != nil {
			b.Release()
		}
	}()
	send := func() error {
		n := b.Len()
		nb := b
		b = nil
		if n == 0 {
			nb.Release()
			return nil
		}
		if err := out.Emit(ctx, nb); err != nil {
			return fmt.Errorf("%w: %w", errEmit, err)
		}
		emitted += n
		return nil
	}
	// flush emits the flows decoded so far, before a loss the server
	// reported: the batch's next flows go into a new batch, which holds
	// the storage the rest of the messages lie in.
	flush := func() error {
		if b.Len() == 0 {
			return nil
		}
		nb := pipeline.NewBatch()
		nb.HoldStorage(b)
		if err := send(); err != nil {
			nb.Release()
			return err
		}
		b = nb
		return nil
	}
	for {
		got, msgs, err := h.take(ctx)
		if got != nil {
			b = got
			for _, m := range msgs {
				if err := s.handle(m, b, out, flush); err != nil {
					return emitted, err
				}
			}
			if err := send(); err != nil {
				return emitted, err
			}
		}
		if err != nil {
			return emitted, err
		}
	}
}

// handle decodes one response (its bytes, msg, in b's storage) into b, or
// reports it.
func (s *Source) handle(msg string, b *pipeline.Batch, out pipeline.Output, emit func() error) error {
	ev := b.Next()
	d, err := s.spares.UnmarshalGetFlowsResponse(msg, ev.FlowStorage())
	if err != nil {
		b.Truncate(b.Len() - 1)
		s.m.decodeErrors.Inc()
		return status.Errorf(codes.Internal, "decode GetFlowsResponse: %v", err)
	}
	if d.Flow == nil {
		b.Truncate(b.Len() - 1)
		return s.handleOther(d.Other, out, emit)
	}
	f := d.Flow
	t := d.Time
	if t == nil {
		t = f.GetTime()
	}
	if s.seam != nil && s.atSeam(f, t) {
		b.Truncate(b.Len() - 1)
		return nil
	}
	ev.Flow = f
	ev.NodeName = d.NodeName
	ev.Time = d.Time
	// The message's size is what a buffer's max_bytes counts for the flow.
	b.AddInputBytes(len(msg))
	s.m.flows.Inc()
	if t != nil {
		tt := t.AsTime()
		s.lastTime, s.emitted = tt, true
		if tt.After(s.maxTime) {
			s.maxTime = tt
		}
	}
	if u := f.GetUuid(); u != "" {
		s.recent[s.recentPos].set(u)
		s.recentPos = (s.recentPos + 1) % len(s.recent)
	}
	return nil
}

// handleOther handles a response without a flow.
func (s *Source) handleOther(r *observer.GetFlowsResponse, out pipeline.Output, emit func() error) error {
	switch {
	case r.GetLostEvents() != nil:
		// Keep the order: the flows before the loss go first.
		if err := emit(); err != nil {
			return err
		}
		le := r.GetLostEvents()
		cpu := int32(-1)
		if le.GetCpu() != nil {
			cpu = le.GetCpu().GetValue()
		}
		s.m.lost.WithLabelValues(le.GetSource().String()).Add(float64(le.GetNumEventsLost()))
		if le.GetNumEventsLost() > 0 {
			out.Lost(le.GetSource(), cpu, le.GetNumEventsLost())
		}
	case r.GetNodeStatus() != nil:
		ns := r.GetNodeStatus()
		state := ns.GetStateChange().String()
		for _, n := range ns.GetNodeNames() {
			// The registry may keep n: protobuf-go decoded this
			// response (codec.UnmarshalGetFlowsResponse decodes only
			// flows into the batch's storage), so n is its own copy.
			s.m.nodeStatus.WithLabelValues(n, state).Inc()
		}
		level := slog.LevelInfo
		if ns.GetStateChange() != relay.NodeState_NODE_CONNECTED {
			level = slog.LevelWarn
		}
		s.log.Log(context.Background(), level, "Hubble Relay node status", "state", state, "nodes", ns.GetNodeNames(), "message", ns.GetMessage())
	default:
		s.m.unknown.Inc()
	}
	return nil
}

// atSeam checks a flow of a resumed stream against the end of the old one;
// it returns true for a flow already emitted, which is dropped.
func (s *Source) atSeam(f *flowpb.Flow, t *timestamppb.Timestamp) bool {
	sm := s.seam
	if _, dup := sm.seen[f.GetUuid()]; dup && f.GetUuid() != "" {
		sm.overlap = true
		s.m.duplicates.Inc()
		return true
	}
	if !sm.decided {
		sm.decided = true
		if !sm.overlap {
			s.m.gaps.Inc()
			s.log.Warn("possible gap in the Hubble stream: the server no longer holds the flows where the old stream ended (its ring moved on, or it restarted); flows between may be missing",
				"address", s.address, "last_flow_time", s.lastTime.Format(time.RFC3339Nano),
				"first_flow_time", t.AsTime().Format(time.RFC3339Nano))
		}
	}
	if t != nil && t.AsTime().After(sm.until) {
		s.seam = nil
	}
	return false
}

// uuidKey holds a copy of a flow's uuid: the flow's strings share its
// whole message, which a kept slice of it would keep alive.
type uuidKey struct {
	n    uint8
	b    [47]byte
	long string // a uuid longer than b
}

func (k *uuidKey) set(u string) {
	if len(u) <= len(k.b) {
		k.n = uint8(copy(k.b[:], u))
		k.long = ""
		return
	}
	k.n, k.long = 0, strings.Clone(u)
}

func (k *uuidKey) get() string {
	if k.long != "" {
		return k.long
	}
	return string(k.b[:k.n])
}

// metrics are the source's Prometheus metrics.
type metrics struct {
	flows        prometheus.Counter
	lost         *prometheus.CounterVec
	reconnects   prometheus.Counter
	errors       *prometheus.CounterVec
	gaps         prometheus.Counter
	duplicates   prometheus.Counter
	nodeStatus   *prometheus.CounterVec
	unknown      prometheus.Counter
	decodeErrors prometheus.Counter
	connected    prometheus.Gauge
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		flows: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "flowbus_hubble_source_flows_total",
			Help: "Flows received from the Hubble server and emitted.",
		}),
		lost: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "flowbus_hubble_source_server_lost_events_total",
			Help: "Events the Hubble server reported lost in its stream, by LostEvent source.",
		}, []string{"source"}),
		reconnects: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "flowbus_hubble_source_reconnects_total",
			Help: "Attempts to re-establish the stream after it failed.",
		}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "flowbus_hubble_source_stream_errors_total",
			Help: "Streams that failed or could not be established, by gRPC status code.",
		}, []string{"code"}),
		gaps: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "flowbus_hubble_source_gaps_total",
			Help: "Resumed streams that did not overlap the old one: flows between may be missing.",
		}),
		duplicates: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "flowbus_hubble_source_seam_duplicates_total",
			Help: "Flows sent again by the server after a reconnection and dropped (already emitted).",
		}),
		nodeStatus: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "flowbus_hubble_source_node_status_total",
			Help: "Hubble Relay node status events, by node and state.",
		}, []string{"node", "state"}),
		unknown: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "flowbus_hubble_source_unknown_responses_total",
			Help: "GetFlows responses of an unknown kind, skipped.",
		}),
		decodeErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "flowbus_hubble_source_decode_errors_total",
			Help: "GetFlowsResponse messages that were not valid protobuf; each ends its stream, which is re-established.",
		}),
		connected: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "flowbus_hubble_source_connected",
			Help: "1 while the GetFlows stream is up.",
		}),
	}
	if reg == nil {
		return m, nil
	}
	for _, c := range []prometheus.Collector{m.flows, m.lost, m.reconnects, m.errors, m.gaps, m.duplicates, m.nodeStatus, m.unknown, m.decodeErrors, m.connected} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("register metrics: %w", err)
		}
	}
	return m, nil
}
