package hubble_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/flowbus/flowbus/codec"
	flowpb "github.com/flowbus/flowbus/flow"
	"github.com/flowbus/flowbus/internal/observerserver"
	"github.com/flowbus/flowbus/internal/sinktest"
	"github.com/flowbus/flowbus/pipeline"
	"github.com/flowbus/flowbus/sources/hubble"
)

// sizeOut is a pipeline.Output that records each batch's flows and
// InputBytes. Its first Emit waits a while, so that the source's reader
// queues messages meanwhile.
type sizeOut struct {
	first sync.Once
	mu    sync.Mutex
	uuids []string
	sizes []int
	lens  []int
}

func (o *sizeOut) Emit(_ context.Context, b *pipeline.Batch) error {
	o.first.Do(func() { time.Sleep(300 * time.Millisecond) })
	o.mu.Lock()
	for i := range b.Events {
		o.uuids = append(o.uuids, strings.Clone(b.Events[i].Flow.GetUuid()))
	}
	o.sizes = append(o.sizes, b.InputBytes())
	o.lens = append(o.lens, b.Len())
	o.mu.Unlock()
	b.Release()
	return nil
}

func (o *sizeOut) Lost(flowpb.LostEventSource, int32, uint64) {}

func (o *sizeOut) count() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return len(o.uuids)
}

// TestBatchBytes: a batch carries the size of the messages its flows came
// in (what a buffer's max_bytes counts), and goes out once it holds
// pipeline.DefaultBatchBytes of them, however few flows that is.
func TestBatchBytes(t *testing.T) {
	const n = 40
	fs := testFlows(t, n, 31, base)
	for i := range fs {
		if i%2 == 0 {
			fs[i].Summary = strings.Repeat("s", 300<<10) // a 300 KiB flow
		}
	}
	size := map[string]int{}
	largest := 0
	for _, f := range fs {
		m, err := codec.Protobuf{}.Append(nil, &pipeline.Event{Flow: f, NodeName: f.GetNodeName(), Time: f.GetTime()})
		if err != nil {
			t.Fatal(err)
		}
		size[f.GetUuid()] = len(m)
		largest = max(largest, len(m))
	}
	srv := observerserver.New(observerserver.Options{Capacity: 1023})
	putFlows(srv, fs)
	sock := socketPath(t)
	serve(t, srv, unixListener(t, sock), nil)

	src, err := pipeline.Make(sinktest.Build("hubble", ""), sinktest.Node(t, fmt.Sprintf("address: unix://%s\nsince: %s", sock, since(base))), hubble.New)
	if err != nil {
		t.Fatal(err)
	}
	out := &sizeOut{}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- src.Run(ctx, out) }()
	deadline := time.Now().Add(60 * time.Second)
	for out.count() < n && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	_ = src.Stop(context.Background())

	if len(out.uuids) != n {
		t.Fatalf("got %d flows, want %d", len(out.uuids), n)
	}
	k, most := 0, 0
	for i, l := range out.lens {
		most = max(most, out.sizes[i])
		want := 0
		for _, u := range out.uuids[k : k+l] {
			want += size[u]
		}
		k += l
		if out.sizes[i] != want {
			t.Errorf("batch %d of %d flows: InputBytes %d, want %d (its messages' sizes)", i, l, out.sizes[i], want)
		}
		if out.sizes[i] >= pipeline.DefaultBatchBytes+largest {
			t.Errorf("batch %d: %d bytes of messages in %d flows, want it cut at %d", i, out.sizes[i], l, pipeline.DefaultBatchBytes)
		}
	}
	t.Logf("%d flows in %d batches of %v bytes", n, len(out.sizes), out.sizes)
	if most < pipeline.DefaultBatchBytes {
		t.Errorf("no batch reached %d bytes: the test did not make the source cut one", pipeline.DefaultBatchBytes)
	}
}
