package nats

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/flowbus/flowbus/internal/sinktest"
	"github.com/flowbus/flowbus/pipeline"
)

// freezer is a TCP proxy on loopback that can stop forwarding, as a
// SIGSTOPped server would: connections stay open, nothing gets through.
type freezer struct {
	ln     net.Listener
	target string
	frozen atomic.Bool
	mu     sync.Mutex
	thaw   *sync.Cond
}

func newFreezer(t *testing.T, target string) *freezer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &freezer{ln: ln, target: target}
	f.thaw = sync.NewCond(&f.mu)
	t.Cleanup(func() { f.setFrozen(false); ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			u, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			go f.pipe(c, u)
			go f.pipe(u, c)
		}
	}()
	return f
}

func (f *freezer) addr() string { return f.ln.Addr().String() }

func (f *freezer) setFrozen(v bool) {
	f.mu.Lock()
	f.frozen.Store(v)
	f.mu.Unlock()
	f.thaw.Broadcast()
}

func (f *freezer) pipe(dst, src net.Conn) {
	defer dst.Close()
	defer src.Close()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		f.mu.Lock()
		for f.frozen.Load() {
			f.thaw.Wait()
		}
		f.mu.Unlock()
		if n > 0 {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			if err != io.EOF {
				return
			}
			return
		}
	}
}

// TestFrozenServerUnready: a server that keeps the connection open but
// stops answering (simulated by a proxy that stops forwarding) makes the
// sink unready within a few ping intervals; once it answers again the
// sink is ready again.
func TestFrozenServerUnready(t *testing.T) {
	srv := runServer(t, &server.Options{})
	px := newFreezer(t, srv.Addr().String())
	s := newSink(t, "json", fmt.Sprintf("url: nats://%s\nsubject: f\nping_interval: 50ms\nack_timeout: 200ms\n", px.addr()))
	b := sinktest.Batch(0, 5)
	defer b.Release()
	if failed, err := s.Write(context.Background(), b); failed != 0 || err != nil {
		t.Fatal(failed, err)
	}
	if err := s.Ready(); err != nil {
		t.Fatalf("Ready: %v", err)
	}
	px.setFrozen(true)
	waitFor(t, "unready while the server is frozen", func() bool { return s.Ready() != nil })
	t.Logf("frozen: %v", s.Ready())
	px.setFrozen(false)
	waitFor(t, "ready once the server answers", func() bool { return s.Ready() == nil })
}

// TestStartWithoutServer: without --require-healthy, a sink whose server
// is away at start starts anyway, unready; Write waits for the server and
// delivers once it is there. With it, Start fails.
func TestStartWithoutServer(t *testing.T) {
	port := freePort(t)
	cfg := fmt.Sprintf("url: nats://127.0.0.1:%d\nsubject: hubble.flows\njetstream: {stream: HUBBLE, create: true}\nbackoff: {min: 10ms, max: 50ms}\n", port)
	b := sinktest.Build("nats", "json")
	b.RequireHealthy = true
	strict, err := pipeline.Make(b, sinktest.Node(t, cfg), New)
	if err != nil {
		t.Fatal(err)
	}
	if err := strict.Start(context.Background()); err == nil {
		t.Fatal("Start succeeded without a server with RequireHealthy")
	}
	strict.Close(context.Background())

	s, err := pipeline.Make(sinktest.Build("nats", "json"), sinktest.Node(t, cfg), New)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close(context.Background())
	if err := s.Start(context.Background()); err != nil {
		t.Fatalf("Start without a server: %v; want it to start unready", err)
	}
	if s.Ready() == nil {
		t.Fatal("ready without a server")
	}
	batch := sinktest.Batch(0, 10)
	defer batch.Release()
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if failed, err := s.Write(ctx, batch); failed != 10 || err == nil {
		t.Fatalf("Write before the server is there: failed=%d err=%v, want it to wait until ctx ends", failed, err)
	}
	srv, err := startEmbedded(&EmbeddedOptions{Port: port, StoreDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { srv.Shutdown(); srv.WaitForShutdown() }()
	if failed, err := s.Write(context.Background(), batch); failed != 0 || err != nil {
		t.Fatalf("Write once the server is there: failed=%d err=%v", failed, err)
	}
	if err := s.Ready(); err != nil {
		t.Fatalf("Ready once connected: %v", err)
	}
	if n := streamMsgs(t, s); n != 10 {
		t.Errorf("stream holds %d messages, want 10", n)
	}
}

var startSource = &sinktest.Phased{Phases: []int{9}, Per: 256}

func init() { sinktest.RegisterPhased("test-nats-start", startSource) }

// TestRunStartsWithoutServer runs a pipeline whose server comes up only
// after the pipeline started, with when_full: drop_newest: the buffer
// drops what does not fit meanwhile, and the summary reconciles with the
// stream.
func TestRunStartsWithoutServer(t *testing.T) {
	port, store := freePort(t), t.TempDir()
	reg := prometheus.NewRegistry()
	var srv *server.Server
	cfg := fmt.Sprintf(`
node_name: n1
lost_event_interval: 20ms
shutdown_timeout: 20s
metrics: {listen: ""}
sources:
  gen: {type: test-nats-start}
sinks:
  bus:
    type: nats
    inputs: [gen]
    encoding: protobuf
    buffer: {events: 512, when_full: drop_newest}
    url: nats://127.0.0.1:%d
    subject: hubble.flows
    lost_subject: hubble.lost
    jetstream: {stream: HUBBLE, create: true}
    backoff: {min: 10ms, max: 50ms}
`, port)
	path := filepath.Join(t.TempDir(), "pipeline.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	p, err := pipeline.Load(path, pipeline.Options{Registry: reg})
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		waitFor(t, "dropped batches", func() bool {
			return sinktest.Metric(reg, "flowbus_component_events_lost_total") >= 1024
		})
		var err error
		if srv, err = startEmbedded(&EmbeddedOptions{Port: port, StoreDir: store}); err != nil {
			t.Error(err)
		}
	}()
	sum, err := p.Run(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer func() { srv.Shutdown(); srv.WaitForShutdown() }()
	tot := sum.Total
	t.Logf("summary: %s", tot)
	if !tot.Reconciles() || tot.Received != 2304 || tot.Lost == 0 || tot.Delivered == 0 {
		t.Fatalf("summary %s, want received=2304, some delivered and some lost", tot)
	}
	payloads := streamPayloads(t, srv.ClientURL(), "HUBBLE")
	sinktest.CheckStream(t, payloads, tot)
}

// streamPayloads reads every message of stream from the server at url.
func streamPayloads(t *testing.T, url, stream string) [][]byte {
	t.Helper()
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	ctx := context.Background()
	st, err := js.Stream(ctx, stream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var payloads [][]byte
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq && info.State.Msgs > 0; seq++ {
		m, err := st.GetMsg(ctx, seq)
		if err != nil {
			t.Fatal(err)
		}
		payloads = append(payloads, m.Data)
	}
	return payloads
}
