package observerserver_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/fieldmaskpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	flowpb "github.com/flowbus/flowbus/flow"
	"github.com/flowbus/flowbus/flow/observer"
	"github.com/flowbus/flowbus/internal/observerserver"
	"github.com/flowbus/flowbus/pipeline"
)

var base = time.Date(2026, 11, 24, 12, 0, 0, 0, time.UTC)

func at(i int) *timestamppb.Timestamp {
	return timestamppb.New(base.Add(time.Duration(i) * time.Second))
}

// serveUnix serves srv on a unix socket in a temporary directory and
// returns the socket's path and a function that stops serving.
func serveUnix(t *testing.T, srv *observerserver.Server) (string, func()) {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "s")
	if len(sock) > 100 {
		t.Skip("temporary directory too long for a unix socket")
	}
	lis, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	g := grpc.NewServer(observerserver.ServerOptions()...)
	srv.Register(g)
	go g.Serve(lis)
	return sock, g.Stop
}

// setup serves a server holding flows 0..n-1 (uuid "u<i>", one second
// apart, namespaces alternating) and returns a client.
func setup(t *testing.T, capacity, n int) (*observerserver.Server, observer.ObserverClient) {
	srv := observerserver.New(observerserver.Options{Capacity: capacity, NodeName: "node-1", Version: "v-test"})
	for i := range n {
		srv.PutFlow(&flowpb.Flow{Time: at(i), Uuid: fmt.Sprintf("u%d", i), NodeName: "node-1",
			Verdict: flowpb.Verdict(1 + i%2), Source: &flowpb.Endpoint{Namespace: []string{"a", "b"}[i%2], PodName: "p"}})
	}
	sock, stop := serveUnix(t, srv)
	t.Cleanup(stop)
	conn, err := grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return srv, observer.NewObserverClient(conn)
}

// collect reads a non-following stream to its end.
func collect(t *testing.T, c observer.ObserverClient, req *observer.GetFlowsRequest) ([]string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := c.GetFlows(ctx, req)
	if err != nil {
		return nil, err
	}
	var out []string
	for {
		r, err := st.Recv()
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return out, err
		}
		switch {
		case r.GetFlow() != nil:
			out = append(out, r.GetFlow().GetUuid())
		case r.GetLostEvents() != nil:
			out = append(out, fmt.Sprintf("lost:%s:%d", r.GetLostEvents().GetSource(), r.GetLostEvents().GetNumEventsLost()))
		}
	}
}

func TestGetFlows(t *testing.T) {
	_, c := setup(t, 15, 10)
	for _, tc := range []struct {
		name string
		req  *observer.GetFlowsRequest
		want []string
		code codes.Code
	}{
		{"last 3", &observer.GetFlowsRequest{Number: 3}, []string{"u7", "u8", "u9"}, codes.OK},
		{"first 2", &observer.GetFlowsRequest{Number: 2, First: true}, []string{"u0", "u1"}, codes.OK},
		{"all", &observer.GetFlowsRequest{}, []string{"u0", "u1", "u2", "u3", "u4", "u5", "u6", "u7", "u8", "u9"}, codes.OK},
		{"since until", &observer.GetFlowsRequest{Since: at(3), Until: at(5)}, []string{"u3", "u4", "u5"}, codes.OK},
		{"last 2 dropped", &observer.GetFlowsRequest{Number: 2, Whitelist: []*flowpb.FlowFilter{{Verdict: []flowpb.Verdict{flowpb.Verdict_DROPPED}}}}, []string{"u7", "u9"}, codes.OK},
		{"blacklist", &observer.GetFlowsRequest{Since: at(0), Until: at(4), Blacklist: []*flowpb.FlowFilter{{SourcePod: []string{"a/"}}}}, []string{"u1", "u3"}, codes.OK},
		{"number and since", &observer.GetFlowsRequest{Number: 1, Since: at(0)}, nil, codes.InvalidArgument},
		{"bad filter", &observer.GetFlowsRequest{Whitelist: []*flowpb.FlowFilter{{SourceIp: []string{"nope"}}}}, nil, codes.InvalidArgument},
		{"bad mask", &observer.GetFlowsRequest{FieldMask: &fieldmaskpb.FieldMask{Paths: []string{"nope"}}}, nil, codes.InvalidArgument},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := collect(t, c, tc.req)
			if status.Code(err) != tc.code {
				t.Fatalf("error %v, want code %v", err, tc.code)
			}
			if !slices.Equal(got, tc.want) {
				t.Fatalf("got %v, want %v", got, tc.want)
			}
		})
	}
}

// TestRingOverflow: a follower that falls behind the ring (here: held
// back by gRPC flow control, large flows and no reads) is told how many
// events it missed, with a HUBBLE_RING_BUFFER LostEvent, and continues at
// the oldest event held.
func TestRingOverflow(t *testing.T) {
	srv, c := setup(t, 7, 0)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	st, err := c.GetFlows(ctx, &observer.GetFlowsRequest{Follow: true, Since: at(0)})
	if err != nil {
		t.Fatal(err)
	}
	big := strings.Repeat("x", 60_000)
	srv.PutFlow(&flowpb.Flow{Time: at(0), Uuid: "u0"})
	// Wait for the first flow before putting more, so that the server is
	// known to follow.
	for {
		r, err := st.Recv()
		if err != nil {
			t.Fatal(err)
		}
		if r.GetFlow().GetUuid() == "u0" {
			break
		}
	}
	const n = 40
	for i := 1; i <= n; i++ {
		srv.PutFlow(&flowpb.Flow{Time: at(i), Uuid: fmt.Sprintf("u%d", i), Summary: big})
	}
	var flows, lost uint64
	last := 0
	for last < n {
		r, err := st.Recv()
		if err != nil {
			t.Fatal(err)
		}
		if le := r.GetLostEvents(); le != nil {
			if le.GetSource() != flowpb.LostEventSource_HUBBLE_RING_BUFFER {
				t.Fatalf("lost event %v", le)
			}
			lost += le.GetNumEventsLost()
			continue
		}
		var i int
		fmt.Sscanf(r.GetFlow().GetUuid(), "u%d", &i)
		if i <= last {
			t.Fatalf("flow %d after %d", i, last)
		}
		last = i
		flows++
	}
	if lost == 0 || flows+lost != n {
		t.Fatalf("%d flows and %d lost, want some lost and %d in all", flows, lost, n)
	}
}

func TestStatusNodesNamespaces(t *testing.T) {
	_, c := setup(t, 7, 10)
	ctx := context.Background()
	st, err := c.ServerStatus(ctx, &observer.ServerStatusRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if st.NumFlows != 7 || st.MaxFlows != 7 || st.SeenFlows != 10 || st.Version != "v-test" {
		t.Fatalf("status %v", st)
	}
	nodes, err := c.GetNodes(ctx, &observer.GetNodesRequest{})
	if err != nil || len(nodes.Nodes) != 1 || nodes.Nodes[0].Name != "node-1" {
		t.Fatalf("nodes %v, %v", nodes, err)
	}
	ns, err := c.GetNamespaces(ctx, &observer.GetNamespacesRequest{})
	if err != nil || len(ns.Namespaces) != 2 || ns.Namespaces[0].Namespace != "a" || ns.Namespaces[1].Namespace != "b" {
		t.Fatalf("namespaces %v, %v", ns, err)
	}
	s, err := c.GetAgentEvents(ctx, &observer.GetAgentEventsRequest{})
	if err == nil {
		_, err = s.Recv()
	}
	if status.Code(err) != codes.Unimplemented {
		t.Fatalf("agent events: %v, want Unimplemented", err)
	}
}

// batch returns a pooled batch of n flows "b<first>".. (and a LostEvent
// when lost) with capacity 8.
func batch(first, n int, lost bool) *pipeline.Batch {
	b := pipeline.NewBatch()
	b.Events = make([]pipeline.Event, 0, 8)
	for i := first; i < first+n; i++ {
		e := b.Next()
		f := e.FlowStorage()
		f.Uuid, f.Time = fmt.Sprintf("b%d", i), at(i)
		e.Time, e.NodeName = f.Time, "node-1"
	}
	if lost {
		e := b.Next()
		e.Lost = &flowpb.LostEvent{Source: flowpb.LostEventSource_PERF_EVENT_RING_BUFFER, NumEventsLost: 3}
	}
	return b
}

// PutBatch keeps batches at least half full (LeaseFill) and copies the
// others; the ring serves both alike, lost events included. A kept batch
// is released once its last event leaves the ring, and Clear releases
// them all: the ring is then empty, and later batches are copied.
func TestPutBatch(t *testing.T) {
	srv, c := setup(t, 7, 0)
	for _, tc := range []struct {
		b    *pipeline.Batch
		kept int
		want []string
	}{
		{batch(0, 4, false), 1, []string{"b0", "b1", "b2", "b3"}},
		{batch(4, 3, false), 1, []string{"b0", "b1", "b2", "b3", "b4", "b5", "b6"}},                           // 3 of 8: copied
		{batch(7, 3, true), 1, []string{"b4", "b5", "b6", "b7", "b8", "b9", "lost:PERF_EVENT_RING_BUFFER:3"}}, // the first batch left
		{batch(10, 4, false), 2, []string{"b8", "b9", "lost:PERF_EVENT_RING_BUFFER:3", "b10", "b11", "b12", "b13"}},
		{batch(14, 4, false), 2, []string{"b11", "b12", "b13", "b14", "b15", "b16", "b17"}},
	} {
		srv.PutBatch(tc.b)
		tc.b.Release()
		if n := srv.Batches(); n != tc.kept {
			t.Errorf("the ring keeps %d batches, want %d", n, tc.kept)
		}
		got, err := collect(t, c, &observer.GetFlowsRequest{})
		if err != nil || !slices.Equal(got, tc.want) {
			t.Fatalf("got %v, %v; want %v", got, err, tc.want)
		}
	}
	srv.Clear()
	if n := srv.Batches(); n != 0 {
		t.Errorf("after Clear the ring keeps %d batches", n)
	}
	if got, err := collect(t, c, &observer.GetFlowsRequest{}); err != nil || len(got) != 0 {
		t.Fatalf("after Clear: %v, %v", got, err)
	}
	b := batch(20, 8, false)
	srv.PutBatch(b)
	b.Release()
	if got, err := collect(t, c, &observer.GetFlowsRequest{Number: 1}); err != nil || !slices.Equal(got, []string{"b27"}) || srv.Batches() != 0 {
		t.Fatalf("after Clear: %v, %v, %d batches kept", got, err, srv.Batches())
	}
}
