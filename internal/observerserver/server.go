// Package observerserver serves Hubble's observer.Observer gRPC API (and
// gRPC's health service) from an in-memory ring of events, as a Hubble
// server does: GetFlows (the last or
// first N, since/until, follow, whitelist/blacklist FlowFilters with
// Hubble's semantics, field_mask), ServerStatus, GetNodes and
// GetNamespaces. GetAgentEvents and GetDebugEvents answer Unimplemented, as
// Hubble does when those events are off.
//
// The ring holds the newest Capacity events (flows, lost events and node
// status events). A follower that falls behind the ring's oldest event is
// told so with a HUBBLE_RING_BUFFER LostEvent counting what it missed, as
// Hubble's ring reader does, and continues from the oldest event.
package observerserver

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	flowpb "github.com/flowbus/flowbus/flow"
	"github.com/flowbus/flowbus/flow/fieldpath"
	"github.com/flowbus/flowbus/flow/observer"
	"github.com/flowbus/flowbus/flow/relay"
	"github.com/flowbus/flowbus/flowfilter"
	"github.com/flowbus/flowbus/pipeline"
	"github.com/flowbus/flowbus/transforms/fieldmask"
)

// Options configure a Server.
type Options struct {
	// Capacity is the number of events the ring keeps (default 4095, as
	// Hubble's default hubble-event-buffer-capacity).
	Capacity int
	// NodeName is the server's node, for GetNodes.
	NodeName string
	// Version is the version reported by ServerStatus and GetNodes.
	Version string
	// OnRequest, when set, is called with every GetFlowsRequest before it
	// is served (tests use it to see what a client asked for).
	OnRequest func(*observer.GetFlowsRequest)
}

// Server is a ring-backed Observer service. Put adds events; the methods of
// observer.ObserverServer serve them.
type Server struct {
	observer.UnimplementedObserverServer

	opts  Options
	start time.Time

	mu    sync.Mutex
	ring  []*observer.GetFlowsResponse
	next  uint64        // sequence number of the next event Put
	wake  chan struct{} // closed and replaced on every Put
	flows uint64        // flows Put (seen_flows)

	sent atomic.Uint64 // responses sent, over every stream
}

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
	return &Server{
		opts:  o,
		start: time.Now(),
		ring:  make([]*observer.GetFlowsResponse, o.Capacity),
		wake:  make(chan struct{}),
	}
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

// Put appends events to the ring, evicting the oldest when it is full.
// The server keeps the messages: the caller must not change them after.
func (s *Server) Put(rs ...*observer.GetFlowsResponse) {
	s.mu.Lock()
	for _, r := range rs {
		s.ring[s.next%uint64(len(s.ring))] = r
		s.next++
		if r.GetFlow() != nil {
			s.flows++
		}
	}
	close(s.wake)
	s.wake = make(chan struct{})
	s.mu.Unlock()
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
	if c := uint64(len(s.ring)); s.next > c {
		return s.next - c
	}
	return 0
}

// request is a validated GetFlowsRequest.
type request struct {
	filter       *flowfilter.Filter
	mask         *fieldmask.Mask
	since, until time.Time
	hasSince     bool
	hasUntil     bool
}

func (q *request) match(r *observer.GetFlowsResponse) bool {
	f := r.GetFlow()
	if f == nil {
		// Lost events and node status pass every filter.
		return r.GetLostEvents() != nil || r.GetNodeStatus() != nil
	}
	if q.hasSince || q.hasUntil {
		t := r.GetTime().AsTime()
		if q.hasSince && t.Before(q.since) || q.hasUntil && t.After(q.until) {
			return false
		}
	}
	return q.filter.Match(f)
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

	// Where to start, and how many matching events to send before following.
	s.mu.Lock()
	pos, limit := s.startLocked(req, q)
	s.mu.Unlock()

	sent := uint64(0)
	buf := make([]*observer.GetFlowsResponse, 0, 256)
	for {
		s.mu.Lock()
		var lost uint64
		if o := s.oldest(); pos < o {
			lost, pos = o-pos, o
		}
		end := min(s.next, pos+uint64(cap(buf)))
		buf = buf[:0]
		for ; pos < end; pos++ {
			buf = append(buf, s.ring[pos%uint64(len(s.ring))])
		}
		wake := s.wake
		s.mu.Unlock()

		if lost > 0 {
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
		for _, r := range buf {
			if q.hasUntil && !req.GetFollow() && r.GetFlow() != nil && r.GetTime().AsTime().After(q.until) {
				return nil
			}
			if !q.match(r) {
				continue
			}
			if err := stream.Send(q.view(r)); err != nil {
				return err
			}
			s.sent.Add(1)
			if r.GetFlow() != nil {
				sent++
				if limit > 0 && sent >= limit && !req.GetFollow() {
					return nil
				}
			}
		}
		if len(buf) > 0 {
			continue
		}
		if !req.GetFollow() {
			return nil
		}
		select {
		case <-ctx.Done():
			return status.FromContextError(ctx.Err()).Err()
		case <-wake:
		}
	}
}

// startLocked returns the sequence number to start at and the number of
// flows to send (0: no limit). s.mu held.
func (s *Server) startLocked(req *observer.GetFlowsRequest, q *request) (pos, limit uint64) {
	oldest := s.oldest()
	switch {
	case req.GetNumber() > 0 && req.GetFirst():
		return oldest, req.GetNumber()
	case req.GetNumber() > 0:
		// The last N matching flows: walk back from the newest.
		n := uint64(0)
		pos = s.next
		for pos > oldest && n < req.GetNumber() {
			r := s.ring[(pos-1)%uint64(len(s.ring))]
			if r.GetFlow() != nil && q.match(r) {
				n++
			}
			pos--
		}
		return pos, req.GetNumber()
	case q.hasSince || !req.GetFollow():
		return oldest, 0
	default:
		return s.next, 0
	}
}

// view returns what is sent for r: r itself, or a masked copy.
func (q *request) view(r *observer.GetFlowsResponse) *observer.GetFlowsResponse {
	if q.mask == nil || r.GetFlow() == nil {
		return r
	}
	ev := pipeline.Event{Flow: proto.Clone(r.GetFlow()).(*flowpb.Flow)}
	q.mask.Apply(&ev)
	return &observer.GetFlowsResponse{
		ResponseTypes: &observer.GetFlowsResponse_Flow{Flow: ev.Flow},
		NodeName:      r.GetNodeName(),
		Time:          r.GetTime(),
	}
}

// ServerStatus implements observer.ObserverServer.
func (s *Server) ServerStatus(context.Context, *observer.ServerStatusRequest) (*observer.ServerStatusResponse, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	num := uint64(0)
	for pos := s.oldest(); pos < s.next; pos++ {
		if s.ring[pos%uint64(len(s.ring))].GetFlow() != nil {
			num++
		}
	}
	return &observer.ServerStatusResponse{
		NumFlows:  num,
		MaxFlows:  uint64(len(s.ring)),
		SeenFlows: s.flows,
		UptimeNs:  uint64(time.Since(s.start)),
		Version:   s.opts.Version,
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
// endpoints of the flows in the ring, sorted.
func (s *Server) GetNamespaces(context.Context, *observer.GetNamespacesRequest) (*observer.GetNamespacesResponse, error) {
	type key struct{ cluster, ns string }
	seen := map[key]bool{}
	s.mu.Lock()
	for pos := s.oldest(); pos < s.next; pos++ {
		f := s.ring[pos%uint64(len(s.ring))].GetFlow()
		for _, ep := range []*flowpb.Endpoint{f.GetSource(), f.GetDestination()} {
			if ep.GetNamespace() != "" {
				seen[key{ep.GetClusterName(), ep.GetNamespace()}] = true
			}
		}
	}
	s.mu.Unlock()
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
	s.mu.Lock()
	defer s.mu.Unlock()
	return fmt.Sprintf("observer ring: %d of %d events, %d put", s.next-s.oldest(), len(s.ring), s.next)
}
