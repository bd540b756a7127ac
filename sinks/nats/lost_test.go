package nats

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/flowbus/flowbus/internal/sinktest"
	"github.com/flowbus/flowbus/pipeline"
)

// TestLostSubjectNotCaptured: a lost_subject that the existing stream does
// not capture must not wedge the sink. A Write of flowbus's own LostEvents
// gives up after max_attempts, later ones get a single attempt while they
// fail, the sink is unready meanwhile, and flows keep being delivered; once
// the stream captures the subject, the sink is ready again.
func TestLostSubjectNotCaptured(t *testing.T) {
	s := newSink(t, "protobuf", fmt.Sprintf(`
url: embedded
embedded: {port: -1, store_dir: %s}
subject: hubble.flows.{{ verdict }}
lost_subject: hubble.lost
jetstream: {stream: HUBBLE, subjects: [hubble.flows.>], create: true}
ack_timeout: 500ms
max_attempts: 3
backoff: {min: 1ms, max: 2ms}
`, t.TempDir()))
	lost := pipeline.NewBatch()
	defer lost.Release()
	sinktest.AddLost(lost, 7, true)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if failed, err := s.Write(ctx, lost); failed != 1 || err != nil {
		t.Fatalf("LostEvent to an uncaptured subject: failed=%d err=%v, want failed=1 and no error", failed, err)
	}
	if err := s.Ready(); err == nil || !strings.Contains(err.Error(), "LostEvents") {
		t.Fatalf("Ready() = %v, want an error about LostEvents", err)
	}
	flows := sinktest.Batch(0, 50)
	defer flows.Release()
	if failed, err := s.Write(ctx, flows); failed != 0 || err != nil {
		t.Fatalf("flows after the failed LostEvent: failed=%d err=%v", failed, err)
	}
	retried := counter(s.m.Retried)
	if failed, err := s.Write(ctx, lost); failed != 1 || err != nil {
		t.Fatalf("second LostEvent: failed=%d err=%v", failed, err)
	}
	if r := counter(s.m.Retried); r != retried {
		t.Errorf("a LostEvent to a failing destination was retried (%v retries), want a single attempt", r-retried)
	}
	if _, err := s.jsc.UpdateStream(ctx, jetstream.StreamConfig{Name: "HUBBLE", Subjects: []string{"hubble.flows.>", "hubble.lost"}}); err != nil {
		t.Fatal(err)
	}
	if failed, err := s.Write(ctx, lost); failed != 0 || err != nil {
		t.Fatalf("LostEvent once the stream captures it: failed=%d err=%v", failed, err)
	}
	if err := s.Ready(); err != nil {
		t.Fatalf("Ready after the LostEvent was delivered: %v", err)
	}
	if n := streamMsgs(t, s); n != 51 {
		t.Errorf("stream holds %d messages, want 51", n)
	}
}

var lostSubjectSource = &sinktest.Phased{Phases: []int{2, 4, 4}, Per: 256, Lost: []uint64{0, 10, 5}}

func init() { sinktest.RegisterPhased("test-nats-lost-subject", lostSubjectSource) }

// TestLostSubjectKeepsDelivering runs a pipeline whose source reports
// losses while the lost_subject is not captured by the stream: every flow
// is still delivered, the losses count in the summary, and it reconciles.
func TestLostSubjectKeepsDelivering(t *testing.T) {
	reg := prometheus.NewRegistry()
	lostSubjectSource.Before = []func(){
		nil,
		func() {
			waitFor(t, "a failed LostEvent", func() bool { return sinktest.Metric(reg, "flowbus_sink_lost_events_failed_total") >= 1 })
		},
	}
	cfg := fmt.Sprintf(`
node_name: n1
lost_event_interval: 20ms
shutdown_timeout: 30s
metrics: {listen: ""}
sources:
  gen: {type: test-nats-lost-subject}
sinks:
  bus:
    type: nats
    inputs: [gen]
    encoding: protobuf
    buffer: {events: 1024, when_full: block}
    url: embedded
    embedded: {port: -1, store_dir: %s}
    subject: hubble.flows.{{ verdict }}
    lost_subject: hubble.lost
    jetstream: {stream: HUBBLE, subjects: [hubble.flows.>], create: true}
    ack_timeout: 500ms
    max_attempts: 3
    backoff: {min: 5ms, max: 20ms}
`, t.TempDir())
	path := filepath.Join(t.TempDir(), "pipeline.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	p, err := pipeline.Load(path, pipeline.Options{Registry: reg})
	if err != nil {
		t.Fatal(err)
	}
	// A wedged sink would freeze the source for good: stop it after a while
	// so that the test fails instead of hanging.
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	start := time.Now()
	sum, err := p.Run(ctx)
	if err != nil {
		t.Fatal(err)
	}
	took := time.Since(start)
	tot := sum.Total
	t.Logf("summary: %s in %v", tot, took)
	// The drain does not wait out shutdown_timeout for LostEvents that the
	// destination refuses while flows get through.
	if took > 15*time.Second {
		t.Errorf("Run took %v: the drain waited for LostEvents the destination refuses", took)
	}
	if !tot.Reconciles() || tot.Received != uint64(lostSubjectSource.Total()) || tot.Delivered != 2560 || tot.Lost != 15 {
		t.Fatalf("summary %s, want received=2575 delivered=2560 lost=15", tot)
	}
}
