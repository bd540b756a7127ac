package observerserver_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/fieldmaskpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/flowbus/flowbus/codec"
	flowpb "github.com/flowbus/flowbus/flow"
	"github.com/flowbus/flowbus/flow/fieldpath"
	"github.com/flowbus/flowbus/flow/observer"
	"github.com/flowbus/flowbus/flow/relay"
	"github.com/flowbus/flowbus/internal/observerserver"
	"github.com/flowbus/flowbus/internal/testflow"
	"github.com/flowbus/flowbus/pipeline"
	"github.com/flowbus/flowbus/transforms/fieldmask"
)

// rawClientCodec marshals requests with gRPC's protobuf codec and receives
// each response as its bytes.
type rawClientCodec struct{}

func (rawClientCodec) Name() string { return "proto" }

func (rawClientCodec) Marshal(v any) (mem.BufferSlice, error) {
	return encoding.GetCodecV2("proto").Marshal(v)
}

func (rawClientCodec) Unmarshal(data mem.BufferSlice, v any) error {
	*v.(*[]byte) = data.Materialize()
	return nil
}

// rawStream reads a non-following GetFlows stream to its end, each
// response as the bytes the server sent.
func rawStream(t *testing.T, srv *observerserver.Server, req *observer.GetFlowsRequest) ([][]byte, error) {
	t.Helper()
	sock, stop := serveUnix(t, srv)
	defer stop()
	conn, err := grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := conn.NewStream(ctx, &observer.Observer_ServiceDesc.Streams[0], observer.Observer_GetFlows_FullMethodName, grpc.ForceCodecV2(rawClientCodec{}))
	if err != nil {
		t.Fatal(err)
	}
	if err := st.SendMsg(req); err != nil {
		t.Fatal(err)
	}
	if err := st.CloseSend(); err != nil {
		t.Fatal(err)
	}
	var out [][]byte
	for {
		var b []byte
		if err := st.RecvMsg(&b); err != nil {
			if errors.Is(err, io.EOF) {
				return out, nil
			}
			return out, err
		}
		out = append(out, b)
	}
}

// TestWireBytes: every response the server sends is, byte for byte, what
// proto.Marshal writes for it: flows put as pipeline events (copied into
// the ring) and as messages, lost events, node status events, and flows
// with a field mask applied, whose envelope stays the event's.
func TestWireBytes(t *testing.T) {
	r := rand.New(rand.NewPCG(14, 2))
	srv := observerserver.New(observerserver.Options{Capacity: 1000, NodeName: "node-1"})
	var want []*observer.GetFlowsResponse
	var events []pipeline.Event
	for i := range 300 {
		f := testflow.Random(r)
		f.NodeName = fmt.Sprintf("node-%d", i%3)
		ev := pipeline.Event{Flow: f, NodeName: f.NodeName, Time: f.Time}
		if i%7 == 0 {
			ev.Time = at(i) // an envelope time of its own
		}
		events = append(events, ev)
		want = append(want, codec.Envelope(&ev))
	}
	lost := pipeline.Event{Lost: &flowpb.LostEvent{Source: flowpb.LostEventSource_PERF_EVENT_RING_BUFFER, NumEventsLost: 9, Cpu: wrapperspb.Int32(1)}, NodeName: "node-2", Time: at(1)}
	events = append(events, lost)
	want = append(want, codec.Envelope(&lost))
	srv.PutEvents(events)
	kept := testflow.Random(r)
	kept.Uuid = "kept"
	srv.PutFlow(kept)
	want = append(want, &observer.GetFlowsResponse{ResponseTypes: &observer.GetFlowsResponse_Flow{Flow: kept}, NodeName: kept.GetNodeName(), Time: kept.GetTime()})
	ns := &observer.GetFlowsResponse{ResponseTypes: &observer.GetFlowsResponse_NodeStatus{NodeStatus: &relay.NodeStatusEvent{
		StateChange: relay.NodeState_NODE_CONNECTED, NodeNames: []string{"node-9"}, Message: "up"}}, NodeName: "relay"}
	srv.Put(ns)
	want = append(want, ns)

	check := func(t *testing.T, got [][]byte, want []*observer.GetFlowsResponse) {
		t.Helper()
		if len(got) != len(want) {
			t.Fatalf("%d responses, want %d", len(got), len(want))
		}
		for i := range want {
			w, err := proto.Marshal(want[i])
			if err != nil {
				t.Fatal(err)
			}
			if string(got[i]) != string(w) {
				t.Fatalf("response %d: %d bytes differ from proto.Marshal's %d:\n got %x\nwant %x", i, len(got[i]), len(w), got[i], w)
			}
		}
	}
	t.Run("whole", func(t *testing.T) {
		got, err := rawStream(t, srv, &observer.GetFlowsRequest{})
		if err != nil {
			t.Fatal(err)
		}
		check(t, got, want)
	})
	t.Run("field mask", func(t *testing.T) {
		paths := []string{"uuid", "source.pod_name", "l4.TCP.destination_port", "time"}
		var fps []fieldpath.Path
		for _, p := range paths {
			fp, err := fieldpath.Parse(p)
			if err != nil {
				t.Fatal(err)
			}
			fps = append(fps, fp)
		}
		mask := fieldmask.NewInclude(fps)
		masked := make([]*observer.GetFlowsResponse, len(want))
		for i, w := range want {
			if w.GetFlow() == nil {
				masked[i] = w
				continue
			}
			m := proto.Clone(w).(*observer.GetFlowsResponse)
			mask.Apply(&pipeline.Event{Flow: m.GetFlow()})
			masked[i] = m
		}
		got, err := rawStream(t, srv, &observer.GetFlowsRequest{FieldMask: &fieldmaskpb.FieldMask{Paths: paths}})
		if err != nil {
			t.Fatal(err)
		}
		check(t, got, masked)
	})
}

// TestEncodeError: a flow that cannot be encoded (a string that is not
// UTF-8, which protobuf refuses) ends the stream with Internal and a
// message naming the field, as gRPC's own marshalling would.
func TestEncodeError(t *testing.T) {
	srv := observerserver.New(observerserver.Options{})
	srv.PutFlow(&flowpb.Flow{Time: at(0), Uuid: "ok"})
	srv.PutFlow(&flowpb.Flow{Time: at(1), Uuid: "bad\xff"})
	got, err := rawStream(t, srv, &observer.GetFlowsRequest{})
	if status.Code(err) != codes.Internal || !strings.Contains(err.Error(), "uuid") {
		t.Fatalf("error %v, want Internal naming uuid", err)
	}
	if len(got) != 1 {
		t.Fatalf("%d responses before the error, want 1", len(got))
	}
}
