package hubble_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/fieldmaskpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	flowpb "github.com/flowbus/flowbus/flow"
	"github.com/flowbus/flowbus/flow/observer"
	"github.com/flowbus/flowbus/flow/peer"
	"github.com/flowbus/flowbus/internal/sinktest"
	"github.com/flowbus/flowbus/pipeline"
	"github.com/flowbus/flowbus/sinks/hubble"
)

func TestConfigErrors(t *testing.T) {
	pki := sinktest.NewPKI(t)
	for _, tc := range []struct {
		yml, want string
	}{
		{"max_flows: 1000", "1:12: max_flows 1000: want a power of two minus one"},
		{"max_flows: 0", "1:12: max_flows 0"},
		{"max_flows: 33554431", "1:12: max_flows 33554431"},
		{"listen: tcp://1.2.3.4:5", `1:9: listen "tcp://1.2.3.4:5": want unix:///PATH or HOST:PORT`},
		{"listen: nowhere", `1:9: listen "nowhere"`},
		{"listen: unix://rel/sock", `1:9: listen "unix://rel/sock": want unix:///ABSOLUTE/PATH`},
		{"listen: 127.0.0.1:0\ntls: {cert_file: /nonexistent, key_file: /nonexistent}", "2:18: tls certificate (cert_file, key_file)"},
		{fmt.Sprintf("listen: 127.0.0.1:0\ntls: {cert_file: %s, key_file: %s, client_ca_files: [/nonexistent]}", pki.ServerCert, pki.ServerKey), "tls.client_ca_files[0]"},
		{"listen: 127.0.0.1:0\ntls: {cert_file: a}", "key_file"},
		{"listen: 127.0.0.1:0\npeers: [{name: b, address: 10.0.0.2}]", `peers[0].address "10.0.0.2": want HOST:PORT`},
		{"listen: 127.0.0.1:0\nadvertise_address: :4244", `advertise_address ":4244": want HOST:PORT with a host`},
		{"listen: 127.0.0.1:0\nmax_flow: 7", "max_flow"},
	} {
		t.Run(tc.yml, func(t *testing.T) {
			_, err := pipeline.Make(sinktest.Build("hubble", ""), sinktest.Node(t, tc.yml), hubble.New)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want it to contain %q", err, tc.want)
			}
		})
	}
}

func TestGetFlows(t *testing.T) {
	s := newSink(t, "max_flows: 1023")
	write(t, s, 0, 1500) // with the lost event below, the ring keeps 478..1499
	b := pipeline.NewBatch()
	sinktest.AddLost(b, 9, false)
	s.Write(context.Background(), b)
	b.Release()
	c := observer.NewObserverClient(dial(t, s))
	ts := func(i int) *timestamppb.Timestamp { return want(i).GetTime() }
	dropped := []*flowpb.FlowFilter{{Verdict: []flowpb.Verdict{flowpb.Verdict_DROPPED}}}
	isDropped := func(i int) bool { return want(i).GetVerdict() == flowpb.Verdict_DROPPED }
	lost := "lost:OBSERVER_EVENTS_QUEUE:9"
	dl := ids(1400, 1500, isDropped)
	for _, tc := range []struct {
		name string
		req  *observer.GetFlowsRequest
		want []string
	}{
		{"last 3", &observer.GetFlowsRequest{Number: 3}, ids(1497, 1500, nil)},
		{"first 2", &observer.GetFlowsRequest{Number: 2, First: true}, ids(478, 480, nil)},
		{"all", &observer.GetFlowsRequest{}, append(ids(478, 1500, nil), lost)},
		{"since until", &observer.GetFlowsRequest{Since: ts(1000), Until: ts(1004)}, ids(1000, 1005, nil)},
		{"last 2 dropped", &observer.GetFlowsRequest{Number: 2, Whitelist: dropped}, dl[len(dl)-2:]},
		{"not dropped, since", &observer.GetFlowsRequest{Since: ts(1490), Blacklist: dropped}, append(ids(1490, 1500, func(i int) bool { return !isDropped(i) }), lost)},
		{"cel", &observer.GetFlowsRequest{Number: 1, Whitelist: []*flowpb.FlowFilter{{Experimental: &flowpb.FlowFilter_Experimental{CelExpression: []string{"_flow.l4.UDP.destination_port == 53u"}}}}}, ids(1498, 1499, nil)}, // the last UDP request
	} {
		t.Run(tc.name, func(t *testing.T) {
			rs, err := collect(t, c, tc.req)
			if err != nil {
				t.Fatal(err)
			}
			if got := uuids(rs); !slices.Equal(got, tc.want) {
				t.Fatalf("got %d events %.300v\nwant %d: %.300v", len(got), got, len(tc.want), tc.want)
			}
			for _, r := range rs {
				if f := r.GetFlow(); f != nil {
					var i int
					fmt.Sscanf(f.GetUuid()[24:], "%d", &i)
					if !proto.Equal(f, want(i)) || r.GetNodeName() != "node-1" || !proto.Equal(r.GetTime(), f.GetTime()) {
						t.Fatalf("flow %d: %v\nwant %v", i, r, want(i))
					}
				}
			}
		})
	}

	t.Run("field mask", func(t *testing.T) {
		rs, err := collect(t, c, &observer.GetFlowsRequest{Since: ts(1497), Until: ts(1497), FieldMask: &fieldmaskpb.FieldMask{Paths: []string{"uuid", "source.pod_name", "l4.TCP.destination_port"}}})
		if err != nil || len(rs) != 1 {
			t.Fatalf("%v, %v", rs, err)
		}
		w := want(1497) // TCP
		m := &flowpb.Flow{Uuid: w.Uuid, Source: &flowpb.Endpoint{PodName: w.Source.PodName}, L4: &flowpb.Layer4{Protocol: &flowpb.Layer4_TCP{TCP: &flowpb.TCP{DestinationPort: w.L4.GetTCP().GetDestinationPort()}}}}
		if !proto.Equal(rs[0].GetFlow(), m) {
			t.Fatalf("masked flow %v\nwant %v", rs[0].GetFlow(), m)
		}
	})

	for _, tc := range []struct {
		name   string
		req    *observer.GetFlowsRequest
		reason string
	}{
		{"bad ip", &observer.GetFlowsRequest{Whitelist: []*flowpb.FlowFilter{{SourceIp: []string{"nope"}}}}, "nope"},
		{"bad cel", &observer.GetFlowsRequest{Whitelist: []*flowpb.FlowFilter{{Experimental: &flowpb.FlowFilter_Experimental{CelExpression: []string{"_flow.nope =="}}}}}, "invalid filter"},
		{"bad mask", &observer.GetFlowsRequest{FieldMask: &fieldmaskpb.FieldMask{Paths: []string{"nope"}}}, "nope"},
		{"number and since", &observer.GetFlowsRequest{Number: 1, Since: ts(0)}, "number cannot be combined"},
		{"bad since", &observer.GetFlowsRequest{Since: &timestamppb.Timestamp{Nanos: -1}}, "since"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := collect(t, c, tc.req)
			if status.Code(err) != codes.InvalidArgument || !strings.Contains(status.Convert(err).Message(), tc.reason) {
				t.Fatalf("error %v, want InvalidArgument with %q", err, tc.reason)
			}
		})
	}

	st, err := c.ServerStatus(context.Background(), &observer.ServerStatusRequest{})
	if err != nil || st.NumFlows != 1022 || st.MaxFlows != 1023 || st.SeenFlows != 1500 || !strings.HasPrefix(st.Version, "flowbus ") {
		t.Fatalf("status %v, %v", st, err)
	}
	ns, err := c.GetNamespaces(context.Background(), &observer.GetNamespacesRequest{})
	if err != nil || len(ns.Namespaces) != 4 {
		t.Fatalf("namespaces %v, %v", ns, err)
	}
	nodes, err := c.GetNodes(context.Background(), &observer.GetNodesRequest{})
	if err != nil || len(nodes.Nodes) != 1 || nodes.Nodes[0].Name != "node-1" {
		t.Fatalf("nodes %v, %v", nodes, err)
	}
	ae, err := c.GetAgentEvents(context.Background(), &observer.GetAgentEventsRequest{})
	if err == nil {
		_, err = ae.Recv()
	}
	if status.Code(err) != codes.Unimplemented {
		t.Fatalf("agent events: %v, want Unimplemented", err)
	}
}

// follow opens a following stream from the start of the ring.
func follow(t testing.TB, c observer.ObserverClient, ctx context.Context) grpc.ServerStreamingClient[observer.GetFlowsResponse] {
	t.Helper()
	st, err := c.GetFlows(ctx, &observer.GetFlowsRequest{Follow: true, Since: &timestamppb.Timestamp{}})
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// TestFollowers: 20 followers each receive every flow, in order, while a
// 21st client that stops reading neither holds the writer back nor keeps
// the others from their flows; when it reads again it is told what it
// missed with a HUBBLE_RING_BUFFER lost event. Clients leaving mid-stream
// change nothing for the others.
func TestFollowers(t *testing.T) {
	s := newSink(t, "max_flows: 4095")
	c := observer.NewObserverClient(dial(t, s))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	// The stalled client reads flow 0, so that its stream has started
	// before the writer laps the ring (a stream that starts later never
	// sees, and is not told of, the flows overwritten before it).
	write(t, s, 0, 1)
	stalled := follow(t, c, ctx)
	if r, err := stalled.Recv(); err != nil || r.GetFlow().GetUuid() != want(0).GetUuid() {
		t.Fatalf("the stalled client's first response: %v, %v; want flow 0", r, err)
	}
	// Leavers: clients that disconnect mid-stream.
	for range 5 {
		lctx, lcancel := context.WithCancel(ctx)
		st := follow(t, c, lctx)
		go func() {
			st.Recv()
			lcancel()
		}()
	}
	const followers, n = 20, 30000
	var wg sync.WaitGroup
	errs := make(chan error, followers)
	for k := range followers {
		st := follow(t, c, ctx)
		wg.Go(func() {
			next := 0
			for next < n {
				r, err := st.Recv()
				if err != nil {
					errs <- fmt.Errorf("follower %d: %v", k, err)
					return
				}
				if r.GetLostEvents() != nil {
					continue // this machine may be slow: count them below
				}
				if want := want(next).GetUuid(); r.GetFlow().GetUuid() != want {
					// A follower can fall behind on a loaded machine: it
					// must then have been told (checked by the total).
					var i int
					fmt.Sscanf(r.GetFlow().GetUuid()[24:], "%d", &i)
					if i < next {
						errs <- fmt.Errorf("follower %d: flow %d after %d", k, i, next)
						return
					}
					next = i
				}
				next++
			}
		})
	}
	// The writer: 30,000 flows through a ring of 4,095 while the stalled
	// client reads nothing.
	write(t, s, 1, n-1)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	// The stalled client reads again: lost events, then the newest flows.
	flows, lost := uint64(1), uint64(0) // flow 0, read above
	last := ""
	for last != want(n-1).GetUuid() {
		r, err := stalled.Recv()
		if err != nil {
			t.Fatal(err)
		}
		if l := r.GetLostEvents(); l != nil {
			if l.GetSource() != flowpb.LostEventSource_HUBBLE_RING_BUFFER {
				t.Fatalf("lost event %v", l)
			}
			lost += l.GetNumEventsLost()
			continue
		}
		flows++
		last = r.GetFlow().GetUuid()
	}
	if lost == 0 || flows+lost != n {
		t.Fatalf("the stalled client got %d flows and %d lost, want some lost and %d in all", flows, lost, n)
	}
	if s.Server().ClientLost() < lost {
		t.Fatalf("ClientLost %d, want at least %d", s.Server().ClientLost(), lost)
	}
}

// TestClose: Close ends following streams cleanly and returns, with a
// client that stopped reading still connected.
func TestClose(t *testing.T) {
	b := sinktest.Build("hubble", "")
	s, err := pipeline.Make(b, sinktest.Node(t, "listen: unix://"+socketPath(t)), hubble.New)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	c := observer.NewObserverClient(dial(t, s))
	stalled := follow(t, c, context.Background())
	_ = stalled
	write(t, s, 0, 20000)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	start := time.Now()
	if err := s.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if ctx.Err() != nil {
		t.Logf("Close took %v: the stalled stream was cut", time.Since(start))
	}
}

// TestPeerTLS: with mutual TLS, a client without a certificate is refused;
// the Peer service lists this node and the peers, with Hubble's TLS server
// names.
func TestPeerTLS(t *testing.T) {
	pki := sinktest.NewPKI(t)
	s := newSink(t, fmt.Sprintf(`listen: 127.0.0.1:0
advertise_address: 127.0.0.1:4244
tls: {cert_file: %s, key_file: %s, client_ca_files: [%s]}
peers:
  - {name: node-2.example, address: 10.0.0.2:4244}
`, pki.ServerCert, pki.ServerKey, pki.CAFile))
	bad, err := grpc.NewClient(target(s), grpc.WithTransportCredentials(credentials.NewTLS(tlsClient(t, pki, false))))
	if err != nil {
		t.Fatal(err)
	}
	defer bad.Close()
	if _, err := observer.NewObserverClient(bad).ServerStatus(context.Background(), &observer.ServerStatusRequest{}); err == nil {
		t.Fatal("a client without a certificate was served")
	}
	good, err := grpc.NewClient(target(s), grpc.WithTransportCredentials(credentials.NewTLS(tlsClient(t, pki, true))))
	if err != nil {
		t.Fatal(err)
	}
	defer good.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := peer.NewPeerClient(good).Notify(ctx, &peer.NotifyRequest{})
	if err != nil {
		t.Fatal(err)
	}
	wantPeers := []*peer.ChangeNotification{
		{Name: "node-1", Address: "127.0.0.1:4244", Type: peer.ChangeNotificationType_PEER_ADDED, Tls: &peer.TLS{ServerName: "node-1.default.hubble-grpc.cilium.io"}},
		{Name: "node-2.example", Address: "10.0.0.2:4244", Type: peer.ChangeNotificationType_PEER_ADDED, Tls: &peer.TLS{ServerName: "node-2-example.default.hubble-grpc.cilium.io"}},
	}
	for _, w := range wantPeers {
		cn, err := st.Recv()
		if err != nil || !proto.Equal(cn, w) {
			t.Fatalf("notification %v, %v; want %v", cn, err, w)
		}
	}
}

// TestMalformedRequest: a request that is not a GetFlowsRequest is refused
// with an error, and the server keeps serving.
func TestMalformedRequest(t *testing.T) {
	s := newSink(t, "")
	write(t, s, 0, 10)
	conn := dial(t, s)
	for _, raw := range [][]byte{{0xff, 0xff, 0xff}, {0x0a, 0x05, 0x01}, {0x52, 0x80}} {
		st, err := conn.NewStream(context.Background(), &grpc.StreamDesc{ServerStreams: true}, "/observer.Observer/GetFlows", grpc.ForceCodec(rawCodec{}))
		if err != nil {
			t.Fatal(err)
		}
		if err := st.SendMsg(raw); err != nil {
			t.Fatal(err)
		}
		st.CloseSend()
		var out []byte
		err = st.RecvMsg(&out)
		if status.Code(err) != codes.Internal && status.Code(err) != codes.InvalidArgument {
			t.Fatalf("malformed request %x: %v", raw, err)
		}
	}
	rs, err := collect(t, observer.NewObserverClient(conn), &observer.GetFlowsRequest{Number: 10})
	if err != nil || len(rs) != 10 {
		t.Fatalf("after malformed requests: %d responses, %v", len(rs), err)
	}
}

// Write keeps a batch at least half full without copying it: the ring
// holds a lease on the batch, and releases it when the last of its flows
// leaves the ring or the sink closes; a smaller batch is copied. Batches
// are released after Write, as the runtime does, and new ones taken from
// the pool: without the lease a written batch would come back from the
// pool and be refilled (in the poison build, overwritten first), and the
// ring would serve other flows.
func TestRingKeepsBatches(t *testing.T) {
	var srv interface{ Batches() int }
	t.Cleanup(func() { // after the sink's Close
		if n := srv.Batches(); n != 0 {
			t.Errorf("the closed sink keeps %d batches", n)
		}
	})
	s := newSink(t, "max_flows: 1023")
	srv = s.Server()
	c := observer.NewObserverClient(dial(t, s))
	check := func(from, to int) {
		t.Helper()
		for range 4 { // what the pool gives back is refilled
			sinktest.Batch(100000, 512).Release()
		}
		rs, err := collect(t, c, &observer.GetFlowsRequest{})
		if err != nil {
			t.Fatal(err)
		}
		if got := uuids(rs); !slices.Equal(got, ids(from, to, nil)) {
			t.Fatalf("ring holds %d flows %q..., want %d..%d", len(got), got[:min(2, len(got))], from, to-1)
		}
		for i, r := range rs {
			if !proto.Equal(r.GetFlow(), want(from+i)) {
				t.Fatalf("flow %d: %v\nwant %v", from+i, r.GetFlow(), want(from+i))
			}
		}
	}
	first := sinktest.Batch(0, 512)
	s.Write(context.Background(), first)
	first.Release()
	write(t, s, 512, 512)
	if n := srv.Batches(); n != 2 {
		t.Fatalf("the ring keeps %d batches, want 2", n)
	}
	check(1, 1024)
	write(t, s, 1024, 100) // copied
	if n := srv.Batches(); n != 2 {
		t.Fatalf("after a small batch the ring keeps %d batches, want 2", n)
	}
	check(101, 1124)
	if first.Len() != 512 {
		t.Fatal("a batch the ring serves was released")
	}
	write(t, s, 1124, 512) // the last of the first batch's flows leave
	if first.Len() != 0 {
		t.Fatal("a batch that left the ring was not released")
	}
	if n := srv.Batches(); n != 2 {
		t.Fatalf("the ring keeps %d batches, want 2", n)
	}
	check(613, 1636)
}
