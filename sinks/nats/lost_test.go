package nats

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

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
	sinktest.RunLossesRefused(t, "test-nats-lost-subject", lostSubjectSource, fmt.Sprintf(`
type: nats
url: embedded
embedded: {port: -1, store_dir: %s}
subject: hubble.flows.{{ verdict }}
lost_subject: hubble.lost
jetstream: {stream: HUBBLE, subjects: [hubble.flows.>], create: true}
ack_timeout: 500ms
max_attempts: 3
backoff: {min: 5ms, max: 20ms}
`, t.TempDir()))
}
