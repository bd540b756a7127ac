package nats

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/flowbus/flowbus/internal/sinktest"
	"github.com/flowbus/flowbus/pipeline"
)

var outageSource = &sinktest.Phased{Phases: []int{3, 40, 3}, Per: 256}

func init() { sinktest.RegisterPhased("test-nats-phased", outageSource) }

// TestOutageDropNewestReconciles runs a pipeline into the embedded server
// and stops the server for a while. With when_full: drop_newest, the
// stream afterwards holds every delivered flow once and LostEvents whose
// counts add up to the summary's lost count, and the summary reconciles.
func TestOutageDropNewestReconciles(t *testing.T) {
	port, store := freePort(t), t.TempDir()
	reg := prometheus.NewRegistry()
	metric := func(name string) float64 { return sinktest.Metric(reg, name) }
	server := func() *embeddedServer {
		embeddedServers.Lock()
		defer embeddedServers.Unlock()
		for _, e := range embeddedServers.m {
			if e.storeDir == store {
				return e
			}
		}
		return nil
	}
	outageSource.Before = []func(){
		func() { // after phase 1 is delivered, the server stops
			waitFor(t, "phase 1 delivered", func() bool { return metric("flowbus_sink_messages_acked_total") >= 768 })
			e := server()
			e.srv.Shutdown()
			e.srv.WaitForShutdown()
		},
		func() { // after some failed attempts, it starts again on the same port and store
			// (The sink may be retrying flows, or a LostEvent about the
			// flows the full buffer dropped, whichever it took first.)
			waitFor(t, "retries during the outage", func() bool { return metric("flowbus_sink_messages_retried_total") >= 10 })
			e := server()
			srv, err := startEmbedded(&EmbeddedOptions{Port: port, StoreDir: store})
			if err != nil {
				t.Error(err)
				return
			}
			e.srv = srv
		},
	}
	cfg := fmt.Sprintf(`
node_name: n1
lost_event_interval: 20ms
shutdown_timeout: 20s
metrics: {listen: ""}
sources:
  gen: {type: test-nats-phased}
sinks:
  bus:
    type: nats
    inputs: [gen]
    encoding: protobuf
    buffer: {events: 1024, when_full: drop_newest}
    url: embedded
    embedded: {port: %d, store_dir: %s}
    subject: hubble.flows.{{ verdict }}
    lost_subject: hubble.lost
    jetstream: {stream: HUBBLE, create: true}
    ack_timeout: 200ms
    max_attempts: 2
    backoff: {min: 5ms, max: 20ms}
`, port, store)
	path := filepath.Join(t.TempDir(), "pipeline.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	p, err := pipeline.Load(path, pipeline.Options{Registry: reg})
	if err != nil {
		t.Fatal(err)
	}
	sum, err := p.Run(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	tot := sum.Total
	t.Logf("summary: %s", tot)
	if tot.Received != uint64(outageSource.Total()) || !tot.Reconciles() {
		t.Fatalf("summary %s does not reconcile with %d emitted", tot, outageSource.Total())
	}
	if tot.Lost == 0 {
		t.Fatal("the outage lost nothing: the test did not exercise drops")
	}

	// The pipeline closed its sink and the server; read the store with a
	// new one.
	srv, err := startEmbedded(&EmbeddedOptions{Port: -1, StoreDir: store})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { srv.Shutdown(); srv.WaitForShutdown() }()
	nc, err := nats.Connect(srv.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	ctx := context.Background()
	st, err := js.Stream(ctx, "HUBBLE")
	if err != nil {
		t.Fatal(err)
	}
	info, _ := st.Info(ctx)
	var payloads [][]byte
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq; seq++ {
		m, err := st.GetMsg(ctx, seq)
		if err != nil {
			t.Fatal(err)
		}
		payloads = append(payloads, m.Data)
	}
	// A publish whose acknowledgement the shutdown cut off can be in the
	// store although the sink gave up on it and reported it lost: the
	// stream may hold such flows beyond delivered (each once, each also
	// counted in a LostEvent), never fewer than delivered.
	flows, lost := sinktest.CountStream(t, payloads)
	if lost != tot.Lost {
		t.Errorf("LostEvents on the bus count %d, summary lost=%d", lost, tot.Lost)
	}
	if flows < tot.Delivered || flows > tot.Delivered+tot.Lost {
		t.Errorf("the bus holds %d flows, summary delivered=%d lost=%d", flows, tot.Delivered, tot.Lost)
	} else if flows > tot.Delivered {
		t.Logf("%d flows stored although the shutdown cut off their acknowledgement (reported lost)", flows-tot.Delivered)
	}
}

var shutdownSource = &sinktest.Phased{Phases: []int{2, 4}, Per: 256}

func init() { sinktest.RegisterPhased("test-nats-shutdown", shutdownSource) }

// TestShutdownBoundedWhileServerDown: the input ends while the server is
// down and the sink would retry for a long time; the drain stops at
// shutdown_timeout, what was not acknowledged is counted as lost, and Run
// returns no error (everything is accounted for in the summary), as the
// kafka sink does.
func TestShutdownBoundedWhileServerDown(t *testing.T) {
	port, store := freePort(t), t.TempDir()
	reg := prometheus.NewRegistry()
	shutdownSource.Before = []func(){func() {
		waitFor(t, "phase 1 delivered", func() bool { return sinktest.Metric(reg, "flowbus_sink_messages_acked_total") >= 512 })
		embeddedServers.Lock()
		defer embeddedServers.Unlock()
		for _, e := range embeddedServers.m {
			if e.storeDir == store {
				e.srv.Shutdown()
				e.srv.WaitForShutdown()
			}
		}
	}}
	cfg := fmt.Sprintf(`
node_name: n1
shutdown_timeout: 300ms
metrics: {listen: ""}
sources:
  gen: {type: test-nats-shutdown}
sinks:
  bus:
    type: nats
    inputs: [gen]
    url: embedded
    embedded: {port: %d, store_dir: %s}
    subject: s
    jetstream: {stream: S, create: true}
    ack_timeout: 100ms
    max_attempts: 1000000
    backoff: {min: 5ms, max: 20ms}
`, port, store)
	path := filepath.Join(t.TempDir(), "pipeline.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	p, err := pipeline.Load(path, pipeline.Options{Registry: reg})
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	sum, err := p.Run(context.Background())
	took := time.Since(start)
	tot := sum.Total
	t.Logf("summary: %s in %v", tot, took)
	if err != nil {
		t.Errorf("Run: %v; want no error when every event is accounted for", err)
	}
	if took > 10*time.Second {
		t.Errorf("Run took %v with shutdown_timeout 300ms", took)
	}
	if !tot.Reconciles() || tot.Received != 1536 || tot.Delivered != 512 || tot.Lost != 1024 {
		t.Errorf("summary %s, want received=1536 delivered=512 lost=1024", tot)
	}
}
