package faults

import (
	"context"
	"fmt"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/flowbus/flowbus/codec"
	"github.com/flowbus/flowbus/internal/sinktest"
	"github.com/flowbus/flowbus/internal/sinkutil"
)

// The JetStream aggregation tier (durable consumer → file) is SIGKILLed
// in the middle of the stream and started again: every message reaches the
// file at least once, and the only duplicates are messages that were
// delivered but not acked when the process died.
func TestJetStreamSourceSIGKILL(t *testing.T) {
	const total = 40000
	port := freePort(t)
	natsServer(t, port, t.TempDir())
	nc, err := nats.Connect(natsURL(port))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "HUBBLE", Subjects: []string{"hubble.>"}}); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "flows.json")
	cfg := writeConfig(t, t.TempDir(), fmt.Sprintf(`
node_name: agg
metrics: {listen: ""}
sources:
  bus:
    type: nats
    url: %s
    jetstream: {stream: HUBBLE, durable: agg, max_ack_pending: 5000, ack_wait: 5s}
sinks:
  lake:
    type: file
    inputs: [bus]
    path: %s
`, natsURL(port), out))

	seqOf := map[string]uint64{} // uuid → stream sequence
	produced := make(chan struct{})
	go func() {
		defer close(produced)
		for first := 0; first < total; first += 1000 {
			b := sinktest.Batch(first, 1000)
			for i := range b.Events {
				v, err := codec.Protobuf{}.Append(nil, &b.Events[i])
				if err != nil {
					t.Error(err)
					return
				}
				m := &nats.Msg{Subject: "hubble.flows", Data: v, Header: nats.Header{}}
				m.Header.Set(sinkutil.HeaderContentType, codec.ContentTypeProtobuf)
				ack, err := js.PublishMsg(ctx, m)
				if err != nil {
					t.Error(err)
					return
				}
				seqOf[b.Events[i].Flow.Uuid] = ack.Sequence
			}
			b.Release()
		}
	}()

	p := start(t, cfg, nil)
	p.eventually("flows in the file", func() bool { return lineCount(out) >= 10000 })
	p.signal(syscall.SIGKILL)
	<-p.done
	c, err := js.Consumer(ctx, "HUBBLE", "agg")
	if err != nil {
		t.Fatal(err)
	}
	info, err := c.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	floor := info.AckFloor.Stream
	before := fileUuids(t, out)

	p2 := start(t, cfg, nil)
	<-produced
	t0 := time.Now()
	for lineCount(out) < total || len(fileUuids(t, out)) < total {
		if time.Since(t0) > time.Minute {
			t.Fatalf("after a minute the file has %d lines, %d distinct flows of %d; stderr:\n%s", lineCount(out), len(fileUuids(t, out)), total, p2.stderr)
		}
		time.Sleep(200 * time.Millisecond)
	}
	p2.signal(syscall.SIGTERM)
	parseSummary(t, p2.wait())

	var window, dups int
	for id := range before {
		if seqOf[id] > floor {
			window++
		}
	}
	for id, n := range fileUuids(t, out) {
		if n == 1 {
			continue
		}
		dups += n - 1
		if seqOf[id] <= floor || n > 2 {
			t.Errorf("flow %s (stream sequence %d, ack floor %d) delivered %d times: only unacked messages may come twice", id, seqOf[id], floor, n)
		}
	}
	if dups > window {
		t.Errorf("%d duplicates, more than the %d messages delivered but not acked at the kill", dups, window)
	}
	t.Logf("killed after %d flows in the file; ack floor then %d, %d pending; unacked window %d; duplicates after the restart: %d", len(before), floor, info.NumAckPending, window, dups)
}
