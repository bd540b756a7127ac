package kafka

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/flowbus/flowbus/internal/sinktest"
	"github.com/flowbus/flowbus/pipeline"
)

// TestLostTopicMissing: a lost_topic that does not exist (and may not be
// created) must not wedge the sink. A Write of flowbus's own LostEvents
// gives up after max_attempts (the runtime reports the losses again at the
// next flush), later ones get a single attempt while the topic is missing,
// the sink is unready meanwhile, and flows keep being delivered. Once the
// topic exists, LostEvents are delivered and the sink is ready again.
func TestLostTopicMissing(t *testing.T) {
	c := newCluster(t, kfake.SeedTopics(1, "flows"))
	broker := c.ListenAddrs()[0]
	s := newSink(t, "protobuf", fmt.Sprintf(`
brokers: [%s]
topic: flows
lost_topic: flows-lost
auto_create_topics: false
max_attempts: 3
backoff: {min: 1ms, max: 2ms}
`, broker))
	lost := pipeline.NewBatch()
	defer lost.Release()
	sinktest.AddLost(lost, 7, true)

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	failed, err := s.Write(ctx, lost)
	if failed != 1 || err != nil {
		t.Fatalf("LostEvent to a missing topic: failed=%d err=%v, want failed=1 and no error", failed, err)
	}
	if err := s.Ready(); err == nil || !strings.Contains(err.Error(), "LostEvents") {
		t.Fatalf("Ready() = %v, want an error about LostEvents", err)
	}
	flows := sinktest.Batch(0, 50)
	defer flows.Release()
	if failed, err := s.Write(ctx, flows); failed != 0 || err != nil {
		t.Fatalf("flows after the failed LostEvent: failed=%d err=%v", failed, err)
	}
	if s.Ready() == nil {
		t.Fatal("ready while LostEvents cannot be delivered")
	}
	retried := counter(s.m.Retried)
	if failed, err := s.Write(ctx, lost); failed != 1 || err != nil {
		t.Fatalf("second LostEvent: failed=%d err=%v", failed, err)
	}
	if r := counter(s.m.Retried); r != retried {
		t.Errorf("a LostEvent to a failing destination was retried (%v retries), want a single attempt", r-retried)
	}

	// Created through the sink's own client, whose metadata cache learns it.
	res, err := s.client.CreateTopics(ctx, &kafka.CreateTopicsRequest{Topics: []kafka.TopicConfig{{Topic: "flows-lost", NumPartitions: 1, ReplicationFactor: 1}}})
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range res.Errors {
		if e != nil {
			t.Fatal(e)
		}
	}
	if failed, err := s.Write(ctx, lost); failed != 0 || err != nil {
		t.Fatalf("LostEvent once the topic exists: failed=%d err=%v", failed, err)
	}
	if err := s.Ready(); err != nil {
		t.Fatalf("Ready after the LostEvent was delivered: %v", err)
	}
	if n := len(readAll(t, broker, "flows-lost", nil)[0]); n != 1 {
		t.Errorf("flows-lost holds %d records, want 1", n)
	}
}

var lostTopicSource = &sinktest.Phased{Phases: []int{2, 4, 4}, Per: 256, Lost: []uint64{0, 10, 5}}

func init() { sinktest.RegisterPhased("test-kafka-lost-topic", lostTopicSource) }

// TestLostTopicMissingKeepsDelivering runs a pipeline whose source reports
// losses while the lost_topic cannot be written: every flow is still
// delivered, the losses still count in the summary, and it reconciles.
func TestLostTopicMissingKeepsDelivering(t *testing.T) {
	c := newCluster(t, kfake.SeedTopics(1, "flows"))
	broker := c.ListenAddrs()[0]
	tot := sinktest.RunLossesRefused(t, "test-kafka-lost-topic", lostTopicSource, fmt.Sprintf(`
type: kafka
brokers: [%s]
topic: flows
lost_topic: flows-lost
auto_create_topics: false
max_attempts: 3
backoff: {min: 5ms, max: 20ms}
`, broker))
	if n := len(readAll(t, broker, "flows", nil)[0]); uint64(n) != tot.Delivered {
		t.Errorf("topic flows holds %d records, want %d", n, tot.Delivered)
	}
}
