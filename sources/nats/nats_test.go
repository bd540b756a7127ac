package nats_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/flowbus/flowbus/codec"
	"github.com/flowbus/flowbus/internal/sinktest"
	"github.com/flowbus/flowbus/internal/sinkutil"
	"github.com/flowbus/flowbus/internal/srctest"
	"github.com/flowbus/flowbus/pipeline"
	srcnats "github.com/flowbus/flowbus/sources/nats"
)

// natsServer starts a JetStream nats-server on a free loopback port with a
// HUBBLE stream on hubble.>, and returns its URL and a connection.
func natsServer(t *testing.T) (string, *nats.Conn, jetstream.JetStream) {
	t.Helper()
	srv, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, NoLog: true, NoSigs: true, JetStream: true, StoreDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	go srv.Start()
	if !srv.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats-server not ready")
	}
	t.Cleanup(func() { srv.Shutdown(); srv.WaitForShutdown() })
	nc, err := nats.Connect(srv.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.CreateStream(context.Background(), jetstream.StreamConfig{Name: "HUBBLE", Subjects: []string{"hubble.>"}}); err != nil {
		t.Fatal(err)
	}
	return srv.ClientURL(), nc, js
}

// publish publishes flows first..first+n-1 to hubble.flows, alternating
// json and protobuf, with the nats sink's headers; through JetStream when
// js is set.
func publish(t *testing.T, nc *nats.Conn, js jetstream.JetStream, first, n int) {
	t.Helper()
	for i := first; i < first+n; i++ {
		var enc codec.Encoder = codec.Protobuf{}
		if i%2 == 1 {
			enc = codec.JSON{}
		}
		m := &nats.Msg{Subject: "hubble.flows", Data: srctest.Payload(t, enc, i), Header: nats.Header{}}
		m.Header.Set(sinkutil.HeaderContentType, enc.ContentType())
		var err error
		if js != nil {
			_, err = js.PublishMsgAsync(m)
		} else {
			err = nc.PublishMsg(m)
		}
		if err != nil {
			t.Fatal(err)
		}
		// At most 1,000 asynchronous publishes wait for their PubAcks:
		// the client's limit is 4,000 and it gives up on a publish that
		// waits 200ms for room, which a loaded machine can exceed.
		if js != nil && (i-first)%1000 == 999 {
			awaitPublished(t, js)
		}
	}
	if js != nil {
		awaitPublished(t, js)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
}

// awaitPublished waits until every asynchronous publish is acknowledged.
func awaitPublished(t *testing.T, js jetstream.JetStream) {
	t.Helper()
	select {
	case <-js.PublishAsyncComplete():
	case <-time.After(30 * time.Second):
		t.Fatal("publishes not acknowledged")
	}
}

func jsYAML(url, sinkName, sinkExtra string) string {
	return fmt.Sprintf(`
metrics: {listen: ""}
shutdown_timeout: 20s
sources:
  bus:
    type: nats
    url: %s
    jetstream: {stream: HUBBLE, durable: agg, max_ack_pending: 2000, nak_delay: 10ms}
sinks:
  %s:
    type: test-collect
    inputs: [bus]
%s
`, url, sinkName, sinkExtra)
}

// ackPending returns the durable's messages delivered and not acked, and
// its ack floor (the last stream sequence acked with everything before).
func ackState(t *testing.T, js jetstream.JetStream) (pending int, floor uint64) {
	t.Helper()
	info, err := consumerInfo(js)
	if err != nil {
		t.Fatal(err)
	}
	return info.NumAckPending, info.AckFloor.Stream
}

// consumerInfo is the state of the durable the tests' sources share.
func consumerInfo(js jetstream.JetStream) (*jetstream.ConsumerInfo, error) {
	c, err := js.Consumer(context.Background(), "HUBBLE", "agg")
	if err != nil {
		return nil, err
	}
	return c.Info(context.Background())
}

// Every message is delivered once and acked; a LostEvent passes through; a
// malformed message is counted, skipped and terminated.
func TestJetStreamConsume(t *testing.T) {
	url, nc, js := natsServer(t)
	publish(t, nc, js, 0, 3000)
	lost := pipeline.NewBatch()
	sinktest.AddLost(lost, 9, false)
	lp, _ := codec.JSON{}.Append(nil, &lost.Events[0])
	lost.Release()
	for _, data := range [][]byte{lp, []byte("{broken")} {
		if _, err := js.Publish(context.Background(), "hubble.flows", data); err != nil {
			t.Fatal(err)
		}
	}
	r := srctest.Start(t, jsYAML(url, "out", ""))
	out := srctest.Sink("out")
	srctest.Eventually(t, "every flow", func() bool { return out.Distinct() == 3000 })
	srctest.Eventually(t, "every message acked", func() bool { p, f := ackState(t, js); return p == 0 && f == 3002 })
	sum := r.Stop()
	seen, lostN := out.Seen()
	for id, n := range seen {
		if n != 1 {
			t.Errorf("flow %s delivered %d times", id, n)
		}
	}
	if lostN != 9 || sum.Total.Received != 3001 || sum.Total.Delivered != 3001 {
		t.Errorf("LostEvents passed through %d events (want 9); summary %v (want 3001 received and delivered)", lostN, sum.Total)
	}
}

// A sink that gives up: its batches are nak'ed, delivered again, and in the
// end every message is delivered and acked.
func TestJetStreamNakRedelivers(t *testing.T) {
	url, nc, js := natsServer(t)
	publish(t, nc, js, 0, 2000)
	r := srctest.Start(t, jsYAML(url, "out", "    fail_first: 3"))
	out := srctest.Sink("out")
	srctest.Eventually(t, "every flow", func() bool { return out.Distinct() == 2000 })
	srctest.Eventually(t, "every message acked", func() bool { p, f := ackState(t, js); return p == 0 && f == 2000 })
	sum := r.Stop()
	if sum.Total.Lost == 0 {
		t.Errorf("summary %v: the batches given up on are not counted lost", sum.Total)
	}
}

// Two instances with the same durable share its messages: each flow is
// delivered once, by one of them.
func TestJetStreamTwoConsumersSplit(t *testing.T) {
	url, nc, js := natsServer(t)
	srctest.Start(t, jsYAML(url, "a", ""))
	srctest.Start(t, jsYAML(url, "b", ""))
	a, b := srctest.Sink("a"), srctest.Sink("b")
	// Both instances have a pull request waiting before anything is
	// published; otherwise the first could take every message.
	srctest.Eventually(t, "both instances pulling", func() bool {
		info, err := consumerInfo(js)
		return err == nil && info.NumWaiting >= 2
	})
	publish(t, nc, js, 0, 6000)
	srctest.Eventually(t, "every flow", func() bool { return a.Distinct()+b.Distinct() == 6000 })
	srctest.Eventually(t, "every message acked", func() bool { p, f := ackState(t, js); return p == 0 && f == 6000 })
	sa, _ := a.Seen()
	sb, _ := b.Seen()
	if len(sa) == 0 || len(sb) == 0 {
		t.Fatalf("one instance got nothing: %d and %d flows", len(sa), len(sb))
	}
	for id, n := range sa {
		if n != 1 || sb[id] != 0 {
			t.Errorf("flow %s delivered %d times by a, %d by b", id, n, sb[id])
		}
	}
	t.Logf("a delivered %d flows, b %d", len(sa), len(sb))
}

// A core subscription delivers what is published while it is subscribed.
func TestCoreSubscription(t *testing.T) {
	url, nc, _ := natsServer(t)
	srctest.Start(t, fmt.Sprintf(`
metrics: {listen: ""}
sources:
  bus: {type: nats, url: %s, subjects: [hubble.>]}
sinks:
  out: {type: test-collect, inputs: [bus]}
`, url))
	out := srctest.Sink("out")
	srctest.Eventually(t, "the subscription", func() bool {
		publish(t, nc, nil, 0, 1)
		return out.Distinct() == 1
	})
	publish(t, nc, nil, 1, 999)
	srctest.Eventually(t, "every flow", func() bool { return out.Distinct() == 1000 })
}

func TestConfigErrors(t *testing.T) {
	for _, tc := range []struct{ yaml, want string }{
		{"url: nats://x:4222\n", "a core subscription needs subjects"},
		{"url: nats://x:4222\njetstream: {stream: S}\n", "durable"},
		{"url: nats://x:4222\njetstream: {stream: S, durable: d, max_ack_pending: 0}\n", "max_ack_pending must be at least 1"},
		{"url: nats://x:4222\njetstream: {stream: S, durable: d, start: middle}\n", "want all or new"},
		{"url: nats://x:4222\nsubjects: [a]\ntoken_file: /nonexistent\n", "token_file"},
	} {
		_, err := pipeline.Make(sinktest.Build("nats", ""), sinktest.Node(t, tc.yaml), srcnats.New)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: error %v, want %q", tc.yaml, err, tc.want)
		}
	}
}

// The durable's max_ack_pending is reached again and again (the pipeline
// holds more messages than it allows): delivery goes on as acks free
// room, without waiting for a pull request to expire. Each size is below,
// at and above what one pull request asks for.
func TestJetStreamMaxAckPendingProgress(t *testing.T) {
	url, nc, js := natsServer(t)
	const total = 20000
	publish(t, nc, js, 0, total)
	for _, maxp := range []int{100, 700, 1024, 3000} {
		name := fmt.Sprintf("maxp%d", maxp)
		r := srctest.Start(t, fmt.Sprintf(`
metrics: {listen: ""}
sources:
  bus:
    type: nats
    url: %s
    jetstream: {stream: HUBBLE, durable: %s, max_ack_pending: %d}
sinks:
  %s: {type: test-collect, inputs: [bus]}
`, url, name, maxp, name))
		out := srctest.Sink(name)
		start := time.Now()
		last, lastAt, longest := 0, start, time.Duration(0)
		for n := 0; n < total; n = out.Distinct() {
			if n != last {
				last, lastAt = n, time.Now()
			}
			if wait := time.Since(lastAt); wait > longest {
				longest = wait
			}
			if longest > 5*time.Second {
				t.Fatalf("max_ack_pending %d: no progress for %v after %d of %d flows", maxp, longest, n, total)
			}
			time.Sleep(5 * time.Millisecond)
		}
		r.Stop()
		t.Logf("max_ack_pending %d: %d flows in %v, longest wait for progress %v", maxp, total, time.Since(start).Round(time.Millisecond), longest.Round(time.Millisecond))
	}
}
