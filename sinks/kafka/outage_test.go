package kafka

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/flowbus/flowbus/internal/sinktest"
	"github.com/flowbus/flowbus/pipeline"
)

func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Errorf("timed out waiting for %s", what)
			return
		}
		time.Sleep(2 * time.Millisecond)
	}
}

var outageSource = &sinktest.Phased{Phases: []int{3, 40, 3}, Per: 256}

func init() { sinktest.RegisterPhased("test-kafka-phased", outageSource) }

// TestOutageDropNewestReconciles runs a pipeline whose broker refuses
// every connection for a while (produce requests are answered by closing
// the connection). With when_full: drop_newest, the topic afterwards holds
// every delivered flow once and LostEvents whose counts add up to the
// summary's lost count, and the summary reconciles.
func TestOutageDropNewestReconciles(t *testing.T) {
	c := newCluster(t, kfake.SeedTopics(1, "flows"))
	broker := c.ListenAddrs()[0]
	var down atomic.Bool
	var refused atomic.Int64
	c.ControlKey(int16(kmsg.Produce), func(kmsg.Request) (kmsg.Response, error, bool) {
		c.KeepControl()
		if !down.Load() {
			return nil, nil, false
		}
		refused.Add(1)
		return nil, errors.New("broker down"), true
	})

	reg := prometheus.NewRegistry()
	acked := func() float64 { return sinktest.Metric(reg, "flowbus_sink_messages_acked_total") }
	outageSource.Before = []func(){
		func() { // after phase 1 is delivered, the broker goes down
			waitFor(t, "phase 1 delivered", func() bool { return acked() >= 768 })
			down.Store(true)
		},
		func() { // once flows were given up and dropped, it comes back
			waitFor(t, "refused produce requests", func() bool { return refused.Load() >= 20 })
			down.Store(false)
		},
	}
	cfg := fmt.Sprintf(`
node_name: n1
lost_event_interval: 20ms
shutdown_timeout: 20s
metrics: {listen: ""}
sources:
  gen: {type: test-kafka-phased}
sinks:
  bus:
    type: kafka
    inputs: [gen]
    encoding: protobuf
    buffer: {events: 1024, when_full: drop_newest}
    brokers: [%s]
    topic: flows
    max_attempts: 2
    batch_timeout: 2s
    backoff: {min: 5ms, max: 20ms}
`, broker)
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
	t.Logf("summary: %s; refused produce requests: %d", tot, refused.Load())
	if tot.Received != uint64(outageSource.Total()) || !tot.Reconciles() {
		t.Fatalf("summary %s does not reconcile with %d emitted", tot, outageSource.Total())
	}
	if tot.Lost == 0 {
		t.Fatal("the outage lost nothing: the test did not exercise drops")
	}

	var payloads [][]byte
	for _, m := range readAll(t, broker, "flows", nil)[0] {
		payloads = append(payloads, m.Value)
	}
	sinktest.CheckStream(t, payloads, tot)
}

var shutdownSource = &sinktest.Phased{Phases: []int{2, 4}, Per: 256}

func init() { sinktest.RegisterPhased("test-kafka-shutdown", shutdownSource) }

// TestShutdownBoundedWhileBrokerDown: the input ends while the broker is
// down and the sink would retry for a long time; the drain stops at
// shutdown_timeout, what was not acknowledged is counted as lost, and Run
// returns no error (everything is accounted for in the summary).
func TestShutdownBoundedWhileBrokerDown(t *testing.T) {
	c := newCluster(t, kfake.SeedTopics(1, "s"))
	broker := c.ListenAddrs()[0]
	var down atomic.Bool
	c.ControlKey(int16(kmsg.Produce), func(kmsg.Request) (kmsg.Response, error, bool) {
		c.KeepControl()
		if !down.Load() {
			return nil, nil, false
		}
		return nil, errors.New("broker down"), true
	})
	reg := prometheus.NewRegistry()
	shutdownSource.Before = []func(){func() {
		waitFor(t, "phase 1 delivered", func() bool { return sinktest.Metric(reg, "flowbus_sink_messages_acked_total") >= 512 })
		down.Store(true)
	}}
	cfg := fmt.Sprintf(`
node_name: n1
shutdown_timeout: 300ms
metrics: {listen: ""}
sources:
  gen: {type: test-kafka-shutdown}
sinks:
  bus:
    type: kafka
    inputs: [gen]
    brokers: [%s]
    topic: s
    max_attempts: 1000000
    backoff: {min: 5ms, max: 20ms}
`, broker)
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
