package observerserver_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"testing"
	"time"
	"unsafe"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"

	"github.com/flowbus/flowbus/codec"
	flowpb "github.com/flowbus/flowbus/flow"
	"github.com/flowbus/flowbus/flow/flowcopy"
	"github.com/flowbus/flowbus/flow/observer"
	"github.com/flowbus/flowbus/internal/observerserver"
	"github.com/flowbus/flowbus/internal/sinktest"
	"github.com/flowbus/flowbus/internal/testflow"
	"github.com/flowbus/flowbus/pipeline"
)

// arenaBatch returns a batch of capacity 32 holding n random flows and a
// lost event, the strings of its flows and the node names of its events in
// the batch's own storage (Alloc), as the hubble source puts them; the
// responses the ring must serve for its events; and the storage holding
// the strings.
func arenaBatch(r *rand.Rand, n int) (*pipeline.Batch, []*observer.GetFlowsResponse, [][]byte) {
	b := pipeline.NewBatch()
	b.Events = make([]pipeline.Event, 0, 32)
	var used [][]byte
	move := func(s string) string {
		if s == "" {
			return s
		}
		buf := b.Alloc(len(s))
		copy(buf, s)
		used = append(used, buf)
		return unsafe.String(&buf[0], len(buf))
	}
	var want []*observer.GetFlowsResponse
	for i := range n + 1 {
		e := b.Next()
		if i < n {
			f := testflow.Random(r)
			f.NodeName = fmt.Sprintf("node-%d", r.IntN(100))
			e.Flow, e.Time, e.NodeName = f, f.Time, f.NodeName
		} else {
			e.Lost = &flowpb.LostEvent{Source: flowpb.LostEventSource_PERF_EVENT_RING_BUFFER, NumEventsLost: 4}
			e.Time, e.NodeName = at(i), "node-lost"
		}
		want = append(want, proto.Clone(codec.Envelope(e)).(*observer.GetFlowsResponse))
		e.NodeName = move(e.NodeName)
		if e.Flow != nil {
			flowcopy.FlowOwned(e.Flow, e.Flow, flowcopy.StringsFunc(move))
		}
	}
	return b, want, used
}

// overwrite writes over the storage of a released batch, as the batch's
// next use does: the next batch taken (from the pool: usually the one
// just released) is filled with other bytes, and so is the storage the
// test kept, whichever batch the pool hands out.
func overwrite(used [][]byte) {
	b := pipeline.NewBatch()
	for _, u := range used {
		buf := b.Alloc(len(u))
		for i := range buf {
			buf[i] = 'X'
		}
	}
	for _, u := range used {
		for i := range u {
			u[i] = 0xDE
		}
	}
	b.Release()
}

// dialUnix returns a client of the server serving on the unix socket sock.
func dialUnix(t *testing.T, sock string) observer.ObserverClient {
	t.Helper()
	conn, err := grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return observer.NewObserverClient(conn)
}

// responses reads a non-following stream to its end.
func responses(t *testing.T, c observer.ObserverClient) []*observer.GetFlowsResponse {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := c.GetFlows(ctx, &observer.GetFlowsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	var out []*observer.GetFlowsResponse
	for {
		r, err := st.Recv()
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, r)
	}
}

// TestCopiedStrings: events the ring copies (a batch less than half full,
// PutEvents, a batch put after Clear) keep their strings after the batch
// holding them is released and its storage reused: the ring copies the
// strings too, node names included, into storage of each slot's own,
// reused when the slot is overwritten.
func TestCopiedStrings(t *testing.T) {
	for _, tc := range []struct {
		name  string
		flows int // a batch of capacity 32
		put   func(*observerserver.Server, *pipeline.Batch)
	}{
		{"PutBatch a quarter full", 7, (*observerserver.Server).PutBatch},
		{"PutEvents", 20, func(s *observerserver.Server, b *pipeline.Batch) { s.PutEvents(b.Events) }},
		{"PutBatch after Clear", 20, func(s *observerserver.Server, b *pipeline.Batch) {
			s.Clear()
			s.PutBatch(b)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := rand.New(rand.NewPCG(7, uint64(tc.flows)))
			const capacity = 5 // fewer than a batch's events: slots are overwritten
			srv := observerserver.New(observerserver.Options{Capacity: capacity})
			sock, stop := serveUnix(t, srv)
			defer stop()
			c := dialUnix(t, sock)
			for round := range 3 {
				b, want, used := arenaBatch(r, tc.flows)
				tc.put(srv, b)
				if n := srv.Batches(); n != 0 {
					t.Fatalf("round %d: the ring keeps %d batches, want it to copy", round, n)
				}
				b.Release()
				overwrite(used)
				want = want[len(want)-capacity:]
				got := responses(t, c)
				if len(got) != len(want) {
					t.Fatalf("round %d: %d responses, want %d", round, len(got), len(want))
				}
				for i := range want {
					if !proto.Equal(got[i], want[i]) {
						t.Fatalf("round %d, response %d:\n%v\nwant\n%v", round, i, got[i], want[i])
					}
				}
			}
		})
	}
}

// TestCopyAllocs: once the ring has gone round, copying events into slots
// that held events of the same shape and size, strings included,
// allocates nothing. (The batch's 16 events fill the ring's 16 slots: each
// slot gets the same event at every put.)
func TestCopyAllocs(t *testing.T) {
	b := pipeline.NewBatch()
	defer b.Release()
	b.Events = make([]pipeline.Event, 0, 64)
	for i := range 15 { // a quarter full: copied
		e := b.Next()
		sinktest.Flow(e.FlowStorage(), i)
		e.Time, e.NodeName = e.Flow.Time, e.Flow.NodeName
	}
	sinktest.AddLost(b, 3, false)
	for _, tc := range []struct {
		name string
		put  func(*observerserver.Server)
	}{
		{"PutBatch", func(s *observerserver.Server) { s.PutBatch(b) }},
		{"PutEvents", func(s *observerserver.Server) { s.PutEvents(b.Events) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := observerserver.New(observerserver.Options{Capacity: 15})
			tc.put(srv)
			tc.put(srv)
			if n := testing.AllocsPerRun(20, func() { tc.put(srv) }); n != 0 {
				t.Fatalf("%v allocations per put, want 0", n)
			}
			if n := srv.Batches(); n != 0 {
				t.Fatalf("the ring keeps %d batches, want it to copy", n)
			}
		})
	}
}
