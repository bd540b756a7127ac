package hubble_test

import (
	"fmt"
	"net"
	"slices"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	flowpb "github.com/flowbus/flowbus/flow"
	"github.com/flowbus/flowbus/flow/observer"
	"github.com/flowbus/flowbus/flow/relay"
	"github.com/flowbus/flowbus/internal/observerserver"
	"github.com/flowbus/flowbus/internal/sinktest"
)

var base = time.Date(2026, 11, 24, 12, 0, 0, 0, time.UTC)

func since(t time.Time) string { return t.Add(-time.Second).Format(time.RFC3339Nano) }

// checkUnique fails when a uuid repeats, and returns the uuids' order.
func checkUnique(t *testing.T, uuids []string) {
	t.Helper()
	seen := make(map[string]bool, len(uuids))
	for i, u := range uuids {
		if seen[u] {
			t.Fatalf("flow %d: uuid %s received twice", i, u)
		}
		seen[u] = true
	}
}

func uuidsOf(fs []*flowpb.Flow) []string {
	out := make([]string, len(fs))
	for i, f := range fs {
		out[i] = f.Uuid
	}
	return out
}

// TestFollow100k follows a server on a unix socket for 100,000 flows, half
// of them in the ring before the stream starts (since) and half put while it
// follows: every flow arrives once, in order, and the summary counts them
// exactly.
func TestFollow100k(t *testing.T) {
	const n = 100_000
	fs := testFlows(t, n, 1, base)
	reqs := make(chan *observer.GetFlowsRequest, 4)
	srv := observerserver.New(observerserver.Options{Capacity: 1<<17 - 1, NodeName: "node-1",
		OnRequest: func(r *observer.GetFlowsRequest) { reqs <- r }})
	putFlows(srv, fs[:n/2])
	sock := socketPath(t)
	serve(t, srv, unixListener(t, sock), nil)

	id, c := newCapture(t)
	r := start(t, pipelineYAML(fmt.Sprintf("address: unix://%s\nsince: %s", sock, since(base)), id, ""))
	req := request(t, reqs)
	if !req.Follow || req.Since == nil || req.Number != 0 {
		t.Fatalf("request %v: want follow with since", req)
	}
	putFlows(srv, fs[n/2:])
	c.waitFlows(t, n)
	sum := r.stop(t)
	if !slices.Equal(c.uuids, uuidsOf(fs)) {
		t.Fatal("flows differ from the server's, or are out of order")
	}
	tot := sum.Total
	if tot.Received != n || tot.Delivered != n || tot.Lost != 0 || !tot.Reconciles() {
		t.Fatalf("summary %s, want received=delivered=%d", tot, n)
	}
	if got := r.metric("flowbus_hubble_source_flows_total"); got != n {
		t.Fatalf("flows metric %v, want %d", got, n)
	}
}

// TestServerLostEvents: the server's lost events become LostEvents with
// their own source, counted as lost in the summary; Relay node status
// events are counted per node and not emitted.
func TestServerLostEvents(t *testing.T) {
	fs := testFlows(t, 300, 2, base)
	srv := observerserver.New(observerserver.Options{Capacity: 1023})
	putFlows(srv, fs[:100])
	srv.Put(&observer.GetFlowsResponse{ResponseTypes: &observer.GetFlowsResponse_LostEvents{LostEvents: &flowpb.LostEvent{
		Source: flowpb.LostEventSource_OBSERVER_EVENTS_QUEUE, NumEventsLost: 7, Cpu: wrapperspb.Int32(0)}},
		NodeName: "node-1", Time: timestamppb.New(base)})
	putFlows(srv, fs[100:200])
	srv.Put(&observer.GetFlowsResponse{ResponseTypes: &observer.GetFlowsResponse_LostEvents{LostEvents: &flowpb.LostEvent{
		Source: flowpb.LostEventSource_PERF_EVENT_RING_BUFFER, NumEventsLost: 5, Cpu: wrapperspb.Int32(3)}},
		NodeName: "node-1", Time: timestamppb.New(base)})
	srv.Put(&observer.GetFlowsResponse{ResponseTypes: &observer.GetFlowsResponse_LostEvents{LostEvents: &flowpb.LostEvent{
		Source: flowpb.LostEventSource_HUBBLE_RING_BUFFER, NumEventsLost: 11}},
		NodeName: "node-1", Time: timestamppb.New(base)})
	srv.Put(&observer.GetFlowsResponse{ResponseTypes: &observer.GetFlowsResponse_NodeStatus{NodeStatus: &relay.NodeStatusEvent{
		StateChange: relay.NodeState_NODE_UNAVAILABLE, NodeNames: []string{"node-2", "node-3"}, Message: "connection refused"}}})
	putFlows(srv, fs[200:])
	sock := socketPath(t)
	serve(t, srv, unixListener(t, sock), nil)

	id, c := newCapture(t)
	r := start(t, pipelineYAML(fmt.Sprintf("address: unix://%s\nsince: %s", sock, since(base)), id, ""))
	c.waitFlows(t, 300)
	deadline := time.Now().Add(10 * time.Second)
	for {
		c.mu.Lock()
		total := c.lost["OBSERVER_EVENTS_QUEUE"] + c.lost["PERF_EVENT_RING_BUFFER"] + c.lost["HUBBLE_RING_BUFFER"]
		c.mu.Unlock()
		if total == 23 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("lost events in the stream: %v, want 7+5+11", c.lost)
		}
		time.Sleep(20 * time.Millisecond)
	}
	sum := r.stop(t)
	tot := sum.Total
	if tot.Received != 323 || tot.Delivered != 300 || tot.Lost != 23 || !tot.Reconciles() {
		t.Fatalf("summary %s, want received=323 delivered=300 lost=23", tot)
	}
	if c.lost["OBSERVER_EVENTS_QUEUE"] != 7 || c.lost["PERF_EVENT_RING_BUFFER"] != 5 || c.lost["HUBBLE_RING_BUFFER"] != 11 {
		t.Fatalf("lost by source %v", c.lost)
	}
	if got := r.metric("flowbus_hubble_source_node_status_total"); got != 2 {
		t.Fatalf("node status events counted %v, want 2 (one per node)", got)
	}
}

// TestRestartResume stops the server mid-stream and starts another on the
// same socket: the source reconnects and resumes from its last flow,
// dropping the flows the new server sends again, without a gap; then a
// server whose ring lost the flows after that point makes a counted gap.
func TestRestartResume(t *testing.T) {
	fs := testFlows(t, 3000, 3, base)
	sock := socketPath(t)
	reqs := make(chan *observer.GetFlowsRequest, 8)
	onReq := func(r *observer.GetFlowsRequest) { reqs <- r }

	a := observerserver.New(observerserver.Options{Capacity: 4095, OnRequest: onReq})
	putFlows(a, fs[:1000])
	stopA := serve(t, a, unixListener(t, sock), nil)

	id, c := newCapture(t)
	r := start(t, pipelineYAML(fmt.Sprintf("address: unix://%s\nsince: %s\nreconnect: {min: 20ms, max: 100ms}", sock, since(base)), id, ""))
	request(t, reqs)
	c.waitFlows(t, 1000)
	stopA()

	// B restarted with its history: it still holds flows 500..1999.
	b := observerserver.New(observerserver.Options{Capacity: 4095, OnRequest: onReq})
	putFlows(b, fs[500:2000])
	stopB := serve(t, b, unixListener(t, sock), nil)
	req := request(t, reqs)
	if !req.Since.AsTime().Equal(fs[999].Time.AsTime()) {
		t.Fatalf("resumed since %v, want the last flow's time %v", req.Since.AsTime(), fs[999].Time.AsTime())
	}
	c.waitFlows(t, 2000)
	if g := r.metric("flowbus_hubble_source_gaps_total"); g != 0 {
		t.Fatalf("gaps %v after a resume that overlapped, want 0", g)
	}
	if d := r.metric("flowbus_hubble_source_seam_duplicates_total"); d < 1 {
		t.Fatalf("seam duplicates %v, want at least 1 (the last flow sent again)", d)
	}
	stopB()

	// C lost its history: it holds only flows 2500..2999.
	cs := observerserver.New(observerserver.Options{Capacity: 4095, OnRequest: onReq})
	putFlows(cs, fs[2500:])
	serve(t, cs, unixListener(t, sock), nil)
	request(t, reqs)
	c.waitFlows(t, 2500)
	r.waitMetric(t, "flowbus_hubble_source_gaps_total", 1)
	sum := r.stop(t)

	want := append(uuidsOf(fs[:2000]), uuidsOf(fs[2500:])...)
	checkUnique(t, c.uuids)
	if !slices.Equal(c.uuids, want) {
		t.Fatalf("got %d flows, want flows 0..1999 and 2500..2999 once each, in order", len(c.uuids))
	}
	if g := r.metric("flowbus_hubble_source_gaps_total"); g != 1 {
		t.Fatalf("gaps %v, want 1", g)
	}
	if rc := r.metric("flowbus_hubble_source_reconnects_total"); rc < 2 {
		t.Fatalf("reconnects %v, want at least 2", rc)
	}
	if tot := sum.Total; tot.Received != 2500 || tot.Delivered != 2500 {
		t.Fatalf("summary %s", tot)
	}
}

// TestFiltersAndFieldMask: allow, deny and field_mask reach the server in
// the request, and what arrives is what the server filtered and masked.
func TestFiltersAndFieldMask(t *testing.T) {
	fs := testFlows(t, 2000, 4, base)
	reqs := make(chan *observer.GetFlowsRequest, 4)
	srv := observerserver.New(observerserver.Options{Capacity: 4095, OnRequest: func(r *observer.GetFlowsRequest) { reqs <- r }})
	putFlows(srv, fs)
	sock := socketPath(t)
	serve(t, srv, unixListener(t, sock), nil)

	id, c := newCapture(t)
	src := fmt.Sprintf(`address: unix://%s
since: %s
allow:
  - {verdict: [FORWARDED], protocol: [tcp]}
  - '{"verdict":["DROPPED"]}'
deny:
  - {destination_port: ["53"]}
field_mask: [time, uuid, verdict, l4, node_name]`, sock, since(base))
	r := start(t, pipelineYAML(src, id, "keep: true"))
	req := request(t, reqs)
	wantAllow := []*flowpb.FlowFilter{
		{Verdict: []flowpb.Verdict{flowpb.Verdict_FORWARDED}, Protocol: []string{"tcp"}},
		{Verdict: []flowpb.Verdict{flowpb.Verdict_DROPPED}},
	}
	wantDeny := []*flowpb.FlowFilter{{DestinationPort: []string{"53"}}}
	if !slices.EqualFunc(req.Whitelist, wantAllow, func(a, b *flowpb.FlowFilter) bool { return proto.Equal(a, b) }) {
		t.Fatalf("whitelist %v, want %v", req.Whitelist, wantAllow)
	}
	if !slices.EqualFunc(req.Blacklist, wantDeny, func(a, b *flowpb.FlowFilter) bool { return proto.Equal(a, b) }) {
		t.Fatalf("blacklist %v, want %v", req.Blacklist, wantDeny)
	}
	if !slices.Equal(req.FieldMask.GetPaths(), []string{"time", "uuid", "verdict", "l4", "node_name"}) {
		t.Fatalf("field mask %v", req.FieldMask.GetPaths())
	}

	var want []*flowpb.Flow
	for _, f := range fs {
		tcp := f.GetL4().GetTCP() != nil
		port := f.GetL4().GetTCP().GetDestinationPort()
		if u := f.GetL4().GetUDP(); u != nil {
			port = u.GetDestinationPort()
		}
		if (f.Verdict == flowpb.Verdict_FORWARDED && tcp || f.Verdict == flowpb.Verdict_DROPPED) && port != 53 {
			want = append(want, f)
		}
	}
	if len(want) == 0 || len(want) == len(fs) {
		t.Fatalf("%d of %d flows pass: not a useful test", len(want), len(fs))
	}
	c.waitFlows(t, len(want))
	time.Sleep(100 * time.Millisecond)
	r.stop(t)
	if !slices.Equal(c.uuids, uuidsOf(want)) {
		t.Fatalf("got %d flows, want the %d the filters pass", len(c.uuids), len(want))
	}
	for i, line := range c.lines {
		var resp observer.GetFlowsResponse
		if err := protojson.Unmarshal([]byte(line), &resp); err != nil {
			t.Fatal(err)
		}
		f := resp.GetFlow()
		if f.GetSource() != nil || f.GetIP() != nil || f.GetL7() != nil || f.GetUuid() == "" || f.GetL4() == nil {
			t.Fatalf("flow %d not masked to time, uuid, verdict, l4, node_name: %s", i, line)
		}
	}
}

// TestMTLS streams from a server on TCP that requires client certificates;
// a client without one is refused (counted, unready, retried) and never
// crashes.
func TestMTLS(t *testing.T) {
	pki := sinktest.NewPKI(t)
	fs := testFlows(t, 500, 5, base)
	srv := observerserver.New(observerserver.Options{Capacity: 1023})
	putFlows(srv, fs)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	serve(t, srv, lis, pki.Server)
	addr := lis.Addr().String()

	t.Run("client certificate", func(t *testing.T) {
		id, c := newCapture(t)
		r := start(t, pipelineYAML(fmt.Sprintf(`address: %s
since: %s
tls: {ca_file: %s, cert_file: %s, key_file: %s, server_name: localhost}`, addr, since(base), pki.CAFile, pki.ClientCert, pki.ClientKey), id, ""))
		c.waitFlows(t, len(fs))
		r.stop(t)
		if !slices.Equal(c.uuids, uuidsOf(fs)) {
			t.Fatal("flows differ")
		}
	})
	t.Run("no client certificate", func(t *testing.T) {
		id, c := newCapture(t)
		r := start(t, pipelineYAML(fmt.Sprintf(`address: %s
tls: {ca_file: %s}
reconnect: {min: 10ms, max: 50ms}`, addr, pki.CAFile), id, ""))
		r.waitMetric(t, "flowbus_hubble_source_stream_errors_total", 2)
		r.stop(t)
		if c.count() != 0 {
			t.Fatal("flows without a client certificate")
		}
	})
	t.Run("plaintext against TLS", func(t *testing.T) {
		id, _ := newCapture(t)
		r := start(t, pipelineYAML(fmt.Sprintf("address: %s\nreconnect: {min: 10ms, max: 50ms}", addr), id, ""))
		r.waitMetric(t, "flowbus_hubble_source_stream_errors_total", 2)
		r.stop(t)
	})
}
