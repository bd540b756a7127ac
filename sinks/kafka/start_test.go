package kafka

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/flowbus/flowbus/internal/sinktest"
	"github.com/flowbus/flowbus/pipeline"
)

func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// TestStartWithoutBroker: without --require-healthy, a sink whose broker
// is away at start starts anyway, unready; Write waits for the broker, and
// delivers once it is there.
func TestStartWithoutBroker(t *testing.T) {
	port := freePort(t)
	s, err := pipeline.Make(sinktest.Build("kafka", "json"), sinktest.Node(t, fmt.Sprintf("brokers: [127.0.0.1:%d]\ntopic: x\nbatch_timeout: 1s\nbackoff: {min: 10ms, max: 50ms}\n", port)), New)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close(context.Background())
	if err := s.Start(context.Background()); err != nil {
		t.Fatalf("Start without a broker: %v; want it to start unready", err)
	}
	if s.Ready() == nil {
		t.Fatal("ready without a broker")
	}
	b := sinktest.Batch(0, 10)
	defer b.Release()
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if failed, err := s.Write(ctx, b); failed != 10 || err == nil {
		t.Fatalf("Write before the broker is there: failed=%d err=%v, want it to wait until ctx ends", failed, err)
	}
	newCluster(t, kfake.SeedTopics(1, "x"), kfake.Ports(port))
	if failed, err := s.Write(context.Background(), b); failed != 0 || err != nil {
		t.Fatalf("Write once the broker is there: failed=%d err=%v", failed, err)
	}
	if err := s.Ready(); err != nil {
		t.Fatalf("Ready once connected: %v", err)
	}
}

var startSource = &sinktest.Phased{Phases: []int{8}, Per: 256}

func init() { sinktest.RegisterPhased("test-kafka-start", startSource) }

// TestRunStartsWithoutBroker runs a pipeline whose broker comes up only
// after the pipeline started: with when_full: block the source is held
// back meanwhile and nothing is lost; /readyz reports the sink unready
// until the broker is there.
func TestRunStartsWithoutBroker(t *testing.T) {
	port := freePort(t)
	reg := prometheus.NewRegistry()
	var p *pipeline.Pipeline
	cfg := fmt.Sprintf(`
node_name: n1
shutdown_timeout: 20s
metrics: {listen: "127.0.0.1:0"}
sources:
  gen: {type: test-kafka-start}
sinks:
  bus:
    type: kafka
    inputs: [gen]
    encoding: protobuf
    buffer: {events: 512, when_full: block}
    brokers: [127.0.0.1:%d]
    topic: flows
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
		waitFor(t, "the pipeline to run", func() bool { return p.Addr() != "" })
		waitFor(t, "the source held back", func() bool {
			return sinktest.Metric(reg, "flowbus_component_events_out_total") >= 512
		})
		if code, body := sinktest.Get(t, "http://"+p.Addr()+"/readyz"); code != 503 {
			t.Errorf("/readyz %d %q while the broker is away, want 503", code, body)
		}
		newCluster(t, kfake.SeedTopics(1, "flows"), kfake.Ports(port))
	}()
	sum, err := p.Run(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	tot := sum.Total
	t.Logf("summary: %s", tot)
	if !tot.Reconciles() || tot.Received != 2048 || tot.Delivered != 2048 || tot.Lost != 0 {
		t.Fatalf("summary %s, want received=2048 delivered=2048 lost=0", tot)
	}
}
