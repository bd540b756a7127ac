// Package observerserver serves Hubble's observer.Observer gRPC API (and
// gRPC's health service) from an in-memory ring of events, as a Hubble
// server does: GetFlows (the last or first N, since/until, follow,
// whitelist/blacklist FlowFilters with Hubble's semantics, field_mask),
// ServerStatus, GetNodes and GetNamespaces. GetAgentEvents and
// GetDebugEvents answer Unimplemented, as Hubble does when those events are
// off.
//
// The ring holds the newest Capacity events (flows, lost events and node
// status events). PutBatch keeps a pipeline batch's events without copying
// them: it takes a pipeline.Lease on the batch, and releases it when the
// last of the batch's events leaves the ring (or at Clear). A batch less
// than half full is copied instead (see LeaseFill), as PutEvents copies:
// into storage of the ring's own, the slot it overwrites (see flowcopy),
// strings included, since a batch's strings may point into storage the
// batch reuses (pipeline.Batch.Alloc). Either way, once the ring has gone
// round, putting allocates nothing (a copy does when the event outgrows, or
// differs in shape from, the slot's previous one); Put keeps the messages
// it is given. Readers encode the events they send (this project's
// protobuf encoder, the bytes proto.Marshal writes) out of the ring under
// a read lock, so a stream that sends slowly never holds the ring (nor a
// leased batch): a follower that falls behind the ring's oldest event is
// told so with a HUBBLE_RING_BUFFER LostEvent counting what it missed, as
// Hubble's ring reader does, and continues from the oldest event.
package observerserver

import (
	"cmp"
	"context"
	"fmt"
	"math/bits"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/experimental"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/flowbus/flowbus/codec"
	flowpb "github.com/flowbus/flowbus/flow"
	"github.com/flowbus/flowbus/flow/fieldpath"
	"github.com/flowbus/flowbus/flow/flowcopy"
	"github.com/flowbus/flowbus/flow/observer"
	"github.com/flowbus/flowbus/flow/relay"
	"github.com/flowbus/flowbus/flowfilter"
	"github.com/flowbus/flowbus/internal/grpcpool"
	"github.com/flowbus/flowbus/pipeline"
	"github.com/flowbus/flowbus/transforms/fieldmask"
)

// Options configure a Server.
type Options struct {
	// Capacity is the number of events the ring keeps (default 4095, as
	// Hubble's default hubble-event-buffer-capacity).
	Capacity int
	// NodeName is the server's node, for GetNodes and the lost events the
	// server makes.
	NodeName string
	// Version is the version reported by ServerStatus and GetNodes.
	Version string
	// OnRequest, when set, is called with every GetFlowsRequest before it
	// is served (tests use it to see what a client asked for).
	OnRequest func(*observer.GetFlowsRequest)
}

// kind is what a ring slot holds.
type kind uint8

const (
	kindFlow kind = iota + 1
	kindLost
	kindOther // a node status event, kept as the message it came in
)

// slot is one event of the ring: a message put by Put (kept, immutable),
// or flow or lost: an event of a leased batch (from set), or a copy in
// ownFlow or ownLost, storage the ring owns and reuses, whose strings (and
// node's) are in own. A leased event's strings, node's included, are the
// batch's, valid while the lease holds it.
type slot struct {
	kind    kind
	kept    *observer.GetFlowsResponse
	flow    *flowpb.Flow
	lost    *flowpb.LostEvent
	from    *lease
	ownFlow *flowpb.Flow
	ownLost *flowpb.LostEvent
	own     ownStrings
	node    string
	sec     int64 // the envelope's time, when timed
	nsec    int32
	timed   bool
}

// ownStrings is the byte storage of the strings of a slot's copied event,
// reused for the next copy into the slot: strings point into it
// (unsafe.String), and change when the slot is rewritten. That is safe
// because the slot is only rewritten under the ring's write lock, and
// readers use its strings only under the read lock, copying what they
// keep (GetFlows encodes the event, GetNamespaces clones).
type ownStrings struct{ b []byte }

// minOwnStrings is the least storage ownStrings takes: enough for the
// strings of most small flows at once.
const minOwnStrings = 256

// reset makes all of o's storage free for a new event's strings. The
// strings of the slot's previous event must no longer be read.
func (o *ownStrings) reset() { o.b = o.b[:0] }

// Copy implements flowcopy.Strings: s copied into o's storage. When the
// storage lacks room, o takes a new, larger array rather than growing the
// one it has in place: the strings already copied into that one, of the
// same event, stay valid, and the next event of that size fits.
func (o *ownStrings) Copy(s string) string {
	if s == "" {
		return ""
	}
	if cap(o.b)-len(o.b) < len(s) {
		o.b = make([]byte, 0, max(2*cap(o.b), len(s), minOwnStrings))
	}
	n := len(o.b)
	o.b = append(o.b, s...)
	return unsafe.String(&o.b[n], len(s))
}

// lease is a batch the ring keeps, and how many of its slots hold its
// events.
type lease struct {
	l    pipeline.Lease
	left int
}

// LeaseFill is how full a batch must be for PutBatch to keep it rather
// than copy its events: at least 1/LeaseFill of its capacity. A leased
// batch pins its whole capacity of events (and the spare Flow storage of
// its unused slots), so this bounds the ring's memory at about LeaseFill
// times that of copies, while batches of a loaded pipeline, full ones, are
// never copied.
const LeaseFill = 2

// theFlow returns the slot's flow (kind kindFlow).
func (sl *slot) theFlow() *flowpb.Flow {
	if sl.kept != nil {
		return sl.kept.GetFlow()
	}
	return sl.flow
}

// theLost returns the slot's lost event (kind kindLost).
func (sl *slot) theLost() *flowpb.LostEvent {
	if sl.kept != nil {
		return sl.kept.GetLostEvents()
	}
	return sl.lost
}

func (sl *slot) after(t time.Time) bool {
	return sl.timed && time.Unix(sl.sec, int64(sl.nsec)).After(t)
}

func (sl *slot) before(t time.Time) bool {
	return sl.timed && time.Unix(sl.sec, int64(sl.nsec)).Before(t)
}

// Server is a ring-backed Observer service. PutEvents and Put add events;
// the methods of observer.ObserverServer serve them.
type Server struct {
	observer.UnimplementedObserverServer

	opts  Options
	start time.Time
	done  chan struct{} // closed by Close: followers end their streams
	once  sync.Once

	mu       sync.RWMutex
	slots    []slot // a power of two, more than capacity
	mask     uint64
	capacity uint64
	next     uint64 // sequence number of the next event put
	first    uint64 // no event before it is held (Clear)
	leases   int    // batches kept
	free     []*lease
	cleared  bool   // Clear called: nothing is leased any more
	held     uint64 // flows among the events held (num_flows)
	flows    uint64 // flows put (seen_flows)
	wake     chan struct{}
	waiting  atomic.Bool // a reader took wake: the next put closes and replaces it

	sent       atomic.Uint64
	clientLost atomic.Uint64
}

// ClientLost returns the number of events streams missed because they fell
// behind the ring (sent to them as HUBBLE_RING_BUFFER lost events).
func (s *Server) ClientLost() uint64 { return s.clientLost.Load() }

// NodeName is the server's node name.
func (s *Server) NodeName() string { return s.opts.NodeName }

// Capacity is the number of events the ring keeps.
func (s *Server) Capacity() int { return int(s.capacity) }

// Sent returns the number of GetFlows responses sent so far, over every
// stream.
func (s *Server) Sent() uint64 { return s.sent.Load() }

// New returns an empty server.
func New(o Options) *Server {
	if o.Capacity <= 0 {
		o.Capacity = 4095
	}
	if o.Version == "" {
		o.Version = "flowbus"
	}
	n := uint64(1) << bits.Len64(uint64(o.Capacity))
	return &Server{
		opts:     o,
		start:    time.Now(),
		done:     make(chan struct{}),
		slots:    make([]slot, n),
		mask:     n - 1,
		capacity: uint64(o.Capacity),
		wake:     make(chan struct{}),
	}
}

// writeBuffer is the size of the gRPC server's write buffer: a GetFlows
// stream sends one message of about a kilobyte per flow, and gRPC's writer
// gathers the messages queued meanwhile into one write of at most this
// size. 256 KiB instead of gRPC's 32 KiB took a tenth off the server's CPU
// per flow and sent a quarter more flows per second.
const writeBuffer = 256 << 10

// ServerOptions are the options of a gRPC server that serves a Server:
// pass them to grpc.NewServer along with one's own. A server without them
// serves the same bytes, with more CPU per flow.
func ServerOptions() []grpc.ServerOption {
	return []grpc.ServerOption{grpc.WriteBufferSize(writeBuffer), grpc.ForceServerCodecV2(wireCodec{}),
		experimental.BufferPool(grpcpool.Default)}
}

// HealthService is the service name whose health Hubble's clients check
// (`hubble status`).
const HealthService = "hubble.server.Observer"

// Register registers the Observer service on g, and gRPC's health service
// reporting it serving, which `hubble status` asks first, as Hubble's
// server does.
func (s *Server) Register(g *grpc.Server) {
	observer.RegisterObserverServer(g, s)
	h := health.NewServer()
	h.SetServingStatus(HealthService, healthpb.HealthCheckResponse_SERVING)
	healthpb.RegisterHealthServer(g, h)
}

// Close ends every following stream (cleanly, as at the end of the
// events) and makes new ones end once they have sent what the ring holds.
func (s *Server) Close() { s.once.Do(func() { close(s.done) }) }

// slotLocked returns the slot for the next event, accounting for the event
// that leaves the ring: the last event of a leased batch to leave releases
// it. s.mu held.
func (s *Server) slotLocked() *slot {
	if s.next >= s.capacity {
		s.evictLocked(&s.slots[(s.next-s.capacity)&s.mask])
	}
	sl := &s.slots[s.next&s.mask]
	s.next++
	return sl
}

// evictLocked empties a slot whose event left the ring. s.mu held.
func (s *Server) evictLocked(sl *slot) {
	if sl.kind == kindFlow {
		s.held--
	}
	sl.kind = 0
	if ls := sl.from; ls != nil {
		sl.from, sl.flow, sl.lost = nil, nil, nil
		if ls.left--; ls.left == 0 {
			s.endLocked(ls)
		}
	}
}

// endLocked releases a leased batch none of whose events is in the ring
// any more. Releasing returns it to the pipeline's pool (a few ns per
// event); no reader holds its events, as readers copy what they send under
// the read lock. s.mu held.
func (s *Server) endLocked(ls *lease) {
	ls.l.Release()
	*ls = lease{}
	s.leases--
	s.free = append(s.free, ls)
}

// Batches returns the number of batches the ring keeps (see PutBatch).
func (s *Server) Batches() int {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.leases
}

// Clear empties the ring, releasing every batch it keeps; later puts copy.
// Streams still open see an empty ring. The hubble sink calls it when it
// closes.
func (s *Server) Clear() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for pos := s.oldest(); pos < s.next; pos++ {
		s.evictLocked(&s.slots[pos&s.mask])
	}
	s.first = s.next
	s.cleared = true
}

func (sl *slot) setTime(t *timestamppb.Timestamp) {
	if t == nil {
		sl.timed = false
		return
	}
	sl.sec, sl.nsec, sl.timed = t.GetSeconds(), t.GetNanos(), true
}

// PutEvents copies events into the ring, evicting the oldest when it is
// full. The caller keeps its events: the ring shares nothing with them,
// not even strings. An event's envelope time is its Time, or its flow's.
func (s *Server) PutEvents(es []pipeline.Event) {
	s.mu.Lock()
	s.putLocked(es, nil)
	s.signalLocked()
	s.mu.Unlock()
}

// PutBatch puts the events of b, a batch lent to a sink's Write, into the
// ring, evicting the oldest when it is full. It keeps them without copying
// (a pipeline.Lease on b, released when the last of them leaves the ring)
// when b is at least 1/LeaseFill full and can be leased, and copies them
// as PutEvents otherwise. Either way the caller may release b when Write
// returns.
func (s *Server) PutBatch(b *pipeline.Batch) {
	es := b.Events
	keep := len(es)*LeaseFill >= cap(es) && len(es) > 0
	s.mu.Lock()
	var ls *lease
	if keep && !s.cleared {
		if l, ok := b.Lease(); ok {
			if n := len(s.free); n > 0 {
				ls, s.free = s.free[n-1], s.free[:n-1]
			} else {
				ls = new(lease)
			}
			ls.l = l
			s.leases++
		}
	}
	s.putLocked(es, ls)
	s.signalLocked()
	s.mu.Unlock()
}

// putLocked puts es into the ring: as events of the leased batch ls, or
// copies when ls is nil, strings included (the caller's may be storage it
// reuses). s.mu held.
func (s *Server) putLocked(es []pipeline.Event, ls *lease) {
	for i := range es {
		e := &es[i]
		if e.Flow == nil && e.Lost == nil {
			continue
		}
		sl := s.slotLocked()
		sl.kept = nil
		if ls == nil {
			sl.own.reset()
		}
		t := e.Time
		if e.Flow != nil {
			if t == nil {
				t = e.Flow.Time
			}
			sl.flow, sl.lost = e.Flow, nil
			if ls == nil {
				if sl.ownFlow == nil {
					sl.ownFlow = new(flowpb.Flow)
				}
				flowcopy.FlowOwned(sl.ownFlow, e.Flow, &sl.own)
				sl.flow = sl.ownFlow
			}
			sl.kind = kindFlow
			s.held++
			s.flows++
		} else {
			sl.flow, sl.lost = nil, e.Lost
			if ls == nil {
				if sl.ownLost == nil {
					sl.ownLost = new(flowpb.LostEvent)
				}
				flowcopy.LostEventOwned(sl.ownLost, e.Lost, &sl.own)
				sl.lost = sl.ownLost
			}
			sl.kind = kindLost
		}
		if ls != nil {
			// The batch's storage replaces the ring's own: the ring's
			// memory stays that of the batches it keeps.
			sl.from, sl.ownFlow, sl.ownLost, sl.own = ls, nil, nil, ownStrings{}
			ls.left++
			sl.node = e.NodeName
		} else {
			sl.node = sl.own.Copy(e.NodeName)
		}
		sl.setTime(t)
	}
	if ls != nil && ls.left == 0 { // nothing to keep
		s.endLocked(ls)
	}
}

// Put appends responses to the ring, evicting the oldest when it is full.
// Unlike PutEvents it keeps the messages themselves, sharing them between
// every slot they are put in: the caller must not change them after.
func (s *Server) Put(rs ...*observer.GetFlowsResponse) {
	s.mu.Lock()
	for _, r := range rs {
		sl := s.slotLocked()
		sl.kept, sl.flow, sl.lost = r, nil, nil
		switch {
		case r.GetFlow() != nil:
			sl.kind = kindFlow
			s.held++
			s.flows++
		case r.GetLostEvents() != nil:
			sl.kind = kindLost
		default:
			sl.kind = kindOther
		}
		sl.node = r.GetNodeName()
		sl.setTime(r.GetTime())
	}
	s.signalLocked()
	s.mu.Unlock()
}

// signalLocked wakes the followers waiting for events. s.mu held.
func (s *Server) signalLocked() {
	if s.waiting.Swap(false) {
		close(s.wake)
		s.wake = make(chan struct{})
	}
}

// PutFlow appends a flow in Hubble's envelope: node_name and time are the
// flow's.
func (s *Server) PutFlow(f *flowpb.Flow) {
	s.Put(&observer.GetFlowsResponse{
		ResponseTypes: &observer.GetFlowsResponse_Flow{Flow: f},
		NodeName:      f.GetNodeName(),
		Time:          f.GetTime(),
	})
}

// oldest returns the sequence number of the oldest event held; s.mu held.
func (s *Server) oldest() uint64 {
	if s.next > s.capacity {
		return max(s.first, s.next-s.capacity)
	}
	return s.first
}

// request is a validated GetFlowsRequest.
type request struct {
	filter       *flowfilter.Filter
	mask         *fieldmask.Mask
	since, until time.Time
	hasSince     bool
	hasUntil     bool
}

// match reports whether sl is sent. Lost events and node status pass every
// filter.
func (q *request) match(sl *slot) bool {
	if sl.kind != kindFlow {
		return true
	}
	if q.hasSince && sl.before(q.since) || q.hasUntil && sl.after(q.until) {
		return false
	}
	return q.filter.Match(sl.theFlow())
}

func parseRequest(req *observer.GetFlowsRequest) (*request, error) {
	q := &request{}
	if req.GetNumber() != 0 && (req.GetSince() != nil || req.GetUntil() != nil) {
		return nil, status.Error(codes.InvalidArgument, "number cannot be combined with since or until")
	}
	if ts := req.GetSince(); ts != nil {
		if err := ts.CheckValid(); err != nil {
			return nil, status.Errorf(codes.InvalidArgument, "since: %v", err)
		}
		q.since, q.hasSince = ts.AsTime(), true
	}
	if ts := req.GetUntil(); ts != nil {
		if err := ts.CheckValid(); err != nil {
			return nil, status.Errorf(codes.InvalidArgument, "until: %v", err)
		}
		q.until, q.hasUntil = ts.AsTime(), true
	}
	f, err := flowfilter.New(req.GetWhitelist(), req.GetBlacklist())
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "invalid filter: %v", err)
	}
	q.filter = f
	if fm := req.GetFieldMask(); fm != nil && len(fm.GetPaths()) > 0 {
		ps := make([]fieldpath.Path, 0, len(fm.GetPaths()))
		for _, p := range fm.GetPaths() {
			fp, err := fieldpath.Parse(p)
			if err != nil {
				return nil, status.Errorf(codes.InvalidArgument, "invalid field mask: %v", err)
			}
			ps = append(ps, fp)
		}
		q.mask = fieldmask.NewInclude(ps)
	}
	return q, nil
}

// out is a response a stream sends, encoded under the ring's read lock
// straight from the slot (no copy of the flow is made, except to apply a
// field mask) with this project's protobuf encoder, which writes the bytes
// proto.Marshal would, without reflection or a separate size pass.
//
// The bytes go to gRPC as the unknown fields of an otherwise empty
// GetFlowsResponse: whatever codec the server uses, protobuf-go marshals
// such a message as exactly those bytes, so the client receives the
// response itself. The storage is reused from one response to the next:
// gRPC encodes a message before SendMsg returns (no stats handler keeps
// it), so it is free again after Send.
type out struct {
	wire   observer.GetFlowsResponse // empty; its unknown fields are buf
	buf    []byte
	err    error // the response could not be encoded
	flow   bool  // the response holds a flow
	masked *flowpb.Flow
	ts     timestamppb.Timestamp
}

// load encodes sl, with q's field mask applied, into o. The ring's read
// lock held.
func (o *out) load(sl *slot, q *request) {
	o.flow, o.err = false, nil
	var ev pipeline.Event
	switch sl.kind {
	case kindFlow:
		ev.Flow = sl.theFlow()
		if q.mask != nil {
			if o.masked == nil {
				o.masked = new(flowpb.Flow)
			}
			// The scratch copy shares the slot's strings: it is
			// encoded here, under the read lock, and not read after.
			flowcopy.Flow(o.masked, ev.Flow)
			ev.Flow = o.masked
			q.mask.Apply(&ev)
		}
		o.flow = true
	case kindLost:
		ev.Lost = sl.theLost()
	default:
		o.buf, o.err = proto.MarshalOptions{}.MarshalAppend(o.buf[:0], sl.kept)
		return
	}
	// The envelope is the slot's, whatever the mask.
	ev.NodeName, ev.Time = sl.node, nil
	if sl.timed {
		o.ts.Seconds, o.ts.Nanos = sl.sec, sl.nsec
		ev.Time = &o.ts
	}
	o.buf, o.err = codec.Protobuf{}.Append(o.buf[:0], &ev)
}

// message returns what is sent for o: the encoded response.
func (o *out) message() (*observer.GetFlowsResponse, error) {
	if o.err != nil {
		return nil, status.Errorf(codes.Internal, "encode response: %v", o.err)
	}
	o.wire.ProtoReflect().SetUnknown(o.buf)
	return &o.wire, nil
}

// Chunks of a stream's reads: the most events copied out, and the most
// slots examined, under one hold of the read lock.
const (
	chunkSend = 256
	chunkScan = 4096
)

// GetFlows implements observer.ObserverServer.
func (s *Server) GetFlows(req *observer.GetFlowsRequest, stream grpc.ServerStreamingServer[observer.GetFlowsResponse]) error {
	if s.opts.OnRequest != nil {
		s.opts.OnRequest(proto.Clone(req).(*observer.GetFlowsRequest))
	}
	q, err := parseRequest(req)
	if err != nil {
		return err
	}
	ctx := stream.Context()
	follow := req.GetFollow()
	pos, limit := s.startAt(req, q)

	sent := uint64(0)
	buf := make([]*out, 0, chunkSend)
	for {
		var lost uint64
		stop := false // until passed, without follow
		buf = buf[:0]
		s.mu.RLock()
		if o := s.oldest(); pos < o {
			lost, pos = o-pos, o
		}
		end := min(s.next, pos+chunkScan)
		for ; pos < end && len(buf) < chunkSend; pos++ {
			sl := &s.slots[pos&s.mask]
			if q.hasUntil && !follow && sl.kind == kindFlow && sl.after(q.until) {
				stop = true
				break
			}
			if !q.match(sl) {
				continue
			}
			n := len(buf) // < cap(buf): its outs stay for reuse
			buf = buf[:n+1]
			if buf[n] == nil {
				buf[n] = new(out)
			}
			buf[n].load(sl, q)
		}
		caughtUp := pos == s.next
		var wake chan struct{}
		if caughtUp && follow {
			wake = s.wake
			s.waiting.Store(true)
		}
		s.mu.RUnlock()

		if lost > 0 {
			s.clientLost.Add(lost)
			if err := stream.Send(&observer.GetFlowsResponse{
				ResponseTypes: &observer.GetFlowsResponse_LostEvents{LostEvents: &flowpb.LostEvent{
					Source:        flowpb.LostEventSource_HUBBLE_RING_BUFFER,
					NumEventsLost: lost,
				}},
				NodeName: s.opts.NodeName,
				Time:     timestamppb.Now(),
			}); err != nil {
				return err
			}
		}
		for _, o := range buf {
			m, err := o.message()
			if err != nil {
				return err
			}
			if err := stream.Send(m); err != nil {
				return err
			}
			s.sent.Add(1)
			if o.flow {
				sent++
				if limit > 0 && sent >= limit && !follow {
					return nil
				}
			}
		}
		if stop || caughtUp && !follow {
			return nil
		}
		if !caughtUp {
			continue
		}
		select {
		case <-ctx.Done():
			return status.FromContextError(ctx.Err()).Err()
		case <-s.done:
			return nil
		case <-wake:
		}
	}
}

// startAt returns the sequence number to start at and the number of flows
// to send (0: no limit).
func (s *Server) startAt(req *observer.GetFlowsRequest, q *request) (pos, limit uint64) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	switch {
	case req.GetNumber() > 0 && req.GetFirst():
		return s.oldest(), req.GetNumber()
	case req.GetNumber() > 0:
		// The last N matching flows: walk back from the newest, releasing
		// the lock every chunkScan slots so that a selective filter never
		// holds the writer for a whole ring.
		n := uint64(0)
		pos = s.next
		for pos > s.oldest() && n < req.GetNumber() {
			stop := pos - min(pos-s.oldest(), chunkScan)
			for ; pos > stop && n < req.GetNumber(); pos-- {
				if sl := &s.slots[(pos-1)&s.mask]; sl.kind == kindFlow && q.match(sl) {
					n++
				}
			}
			s.mu.RUnlock()
			s.mu.RLock()
		}
		return max(pos, s.oldest()), req.GetNumber()
	case q.hasSince || !req.GetFollow():
		return s.oldest(), 0
	default:
		return s.next, 0
	}
}

// ServerStatus implements observer.ObserverServer. flows_rate is the flows
// per second over the last minute, by the flows' times, as Hubble's.
func (s *Server) ServerStatus(context.Context, *observer.ServerStatusRequest) (*observer.ServerStatusResponse, error) {
	minute := time.Now().Add(-time.Minute)
	s.mu.RLock()
	defer s.mu.RUnlock()
	recent := 0
	for pos := s.next; pos > s.oldest(); pos-- {
		sl := &s.slots[(pos-1)&s.mask]
		if sl.kind != kindFlow {
			continue
		}
		if !sl.after(minute) {
			break
		}
		recent++
	}
	return &observer.ServerStatusResponse{
		NumFlows:  s.held,
		MaxFlows:  s.capacity,
		SeenFlows: s.flows,
		UptimeNs:  uint64(time.Since(s.start)),
		Version:   s.opts.Version,
		FlowsRate: float64(recent) / time.Minute.Seconds(),
	}, nil
}

// GetNodes implements observer.ObserverServer: this node.
func (s *Server) GetNodes(ctx context.Context, _ *observer.GetNodesRequest) (*observer.GetNodesResponse, error) {
	st, _ := s.ServerStatus(ctx, nil)
	return &observer.GetNodesResponse{Nodes: []*observer.Node{{
		Name:      s.opts.NodeName,
		Version:   s.opts.Version,
		State:     relay.NodeState_NODE_CONNECTED,
		UptimeNs:  st.UptimeNs,
		NumFlows:  st.NumFlows,
		MaxFlows:  st.MaxFlows,
		SeenFlows: st.SeenFlows,
	}}}, nil
}

// GetNamespaces implements observer.ObserverServer: the namespaces of the
// endpoints of the flows in the ring, sorted. The names are cloned: the
// ring's strings may change once the read lock is released (a leased
// batch released, a slot's storage reused).
func (s *Server) GetNamespaces(context.Context, *observer.GetNamespacesRequest) (*observer.GetNamespacesResponse, error) {
	type key struct{ cluster, ns string }
	seen := map[key]bool{}
	s.mu.RLock()
	for pos := s.oldest(); pos < s.next; pos++ {
		sl := &s.slots[pos&s.mask]
		if sl.kind != kindFlow {
			continue
		}
		for _, ep := range [2]*flowpb.Endpoint{sl.theFlow().GetSource(), sl.theFlow().GetDestination()} {
			if ep.GetNamespace() == "" {
				continue
			}
			if k := (key{ep.GetClusterName(), ep.GetNamespace()}); !seen[k] {
				seen[key{strings.Clone(k.cluster), strings.Clone(k.ns)}] = true
			}
		}
	}
	s.mu.RUnlock()
	out := &observer.GetNamespacesResponse{}
	for k := range seen {
		out.Namespaces = append(out.Namespaces, &observer.Namespace{Cluster: k.cluster, Namespace: k.ns})
	}
	slices.SortFunc(out.Namespaces, func(a, b *observer.Namespace) int {
		return cmp.Or(strings.Compare(a.Cluster, b.Cluster), strings.Compare(a.Namespace, b.Namespace))
	})
	return out, nil
}

// String describes the server's ring, for logs.
func (s *Server) String() string {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return fmt.Sprintf("observer ring: %d of %d events, %d put", s.next-s.oldest(), s.capacity, s.next)
}
