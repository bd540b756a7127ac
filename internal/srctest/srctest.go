// Package srctest helps the tests of the broker sources (kafka, nats): a
// sink that records which flows it delivered, and can give up on batches
// as a sink whose broker is away does; payloads as flowbus's sinks write
// them; running a pipeline from YAML in the test's process; and reading
// back every record of a Kafka topic, which the Kafka sink's tests and the
// fault suite use too.
package srctest

import (
	"context"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/flowbus/flowbus/codec"
	"github.com/flowbus/flowbus/internal/sinktest"
	"github.com/flowbus/flowbus/pipeline"
	"github.com/segmentio/kafka-go"
)

// Collector is the `test-collect` sink: it counts every flow it delivers
// by uuid, and LostEvents. It gives up on its first fail_first batches.
type Collector struct {
	FailFirst int `yaml:"fail_first" doc:"batches to give up on first"`

	mu     sync.Mutex
	seen   map[string]int
	lost   uint64
	writes int
	failed int
}

// Write implements pipeline.Sink.
func (c *Collector) Write(_ context.Context, b *pipeline.Batch) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.writes++
	if c.writes <= c.FailFirst {
		c.failed += b.Len()
		return b.Len(), nil
	}
	for i := range b.Events {
		e := &b.Events[i]
		switch {
		case e.Flow != nil:
			c.seen[e.Flow.Uuid]++
		case e.Lost != nil && !e.Reported:
			c.lost += e.Lost.NumEventsLost
		}
	}
	return 0, nil
}

// Close implements pipeline.Sink.
func (c *Collector) Close(context.Context) error { return nil }

// Seen returns a copy of the deliveries by uuid, and the events the
// LostEvents passed through counted.
func (c *Collector) Seen() (map[string]int, uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	m := make(map[string]int, len(c.seen))
	for k, v := range c.seen {
		m[k] = v
	}
	return m, c.lost
}

// Distinct is the number of distinct flows delivered.
func (c *Collector) Distinct() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.seen)
}

var collectors sync.Map // by component name

func init() {
	pipeline.RegisterSink(pipeline.Spec{Type: "test-collect", Summary: "test sink that records deliveries"}, func(b *pipeline.Build, c *Collector) (*Collector, error) {
		c.seen = map[string]int{}
		collectors.Store(b.Name, c)
		return c, nil
	})
}

// Sink returns the collector built under name by the last pipeline.
func Sink(name string) *Collector {
	c, _ := collectors.Load(name)
	return c.(*Collector)
}

// Uuid is the uuid of flow i (sinktest.Flow).
func Uuid(i int) string {
	b := sinktest.Batch(i, 1)
	defer b.Release()
	return b.Events[0].Flow.Uuid
}

// Payload is flow i (sinktest.Flow) as the encoder writes it.
func Payload(t testing.TB, enc codec.Encoder, i int) []byte {
	b := sinktest.Batch(i, 1)
	defer b.Release()
	p, err := enc.Append(nil, &b.Events[0])
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// Running is a pipeline running in the test's process.
type Running struct {
	Stop func() *pipeline.Summary
}

// Start loads the pipeline in src and runs it until Stop.
func Start(t testing.TB, src string) *Running {
	t.Helper()
	path := filepath.Join(t.TempDir(), "pipeline.yaml")
	if err := os.WriteFile(path, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	p, err := pipeline.Load(path, pipeline.Options{})
	if err != nil {
		t.Fatalf("load:\n%v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	type result struct {
		s   *pipeline.Summary
		err error
	}
	done := make(chan result, 1)
	go func() {
		s, err := p.Run(ctx)
		done <- result{s, err}
	}()
	var once sync.Once
	var sum *pipeline.Summary
	stop := func() *pipeline.Summary {
		once.Do(func() {
			cancel()
			select {
			case r := <-done:
				if r.err != nil {
					t.Errorf("run: %v", r.err)
				}
				sum = r.s
			case <-time.After(time.Minute):
				t.Errorf("the pipeline did not stop within a minute")
			}
		})
		return sum
	}
	t.Cleanup(func() { stop() })
	return &Running{Stop: stop}
}

// Eventually waits up to a minute for cond.
func Eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(time.Minute); !cond(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

// Topic says which partitions of a topic ReadTopic reads, and how it
// reaches the broker. The zero value reads every partition the broker
// reports, through kafka.DefaultDialer.
type Topic struct {
	// Partitions, when above zero, are read as 0 to Partitions-1 without
	// asking the broker which there are.
	Partitions int
	// Dialer reaches the broker (SASL, TLS); nil is kafka.DefaultDialer.
	Dialer *kafka.Dialer
}

// ReadTopic calls each with every record of topic on broker, partition by
// partition, in offset order, up to each partition's end offset at the
// time it gets to it.
func ReadTopic(t testing.TB, broker, topic string, o Topic, each func(partition int, m kafka.Message)) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	dialer := o.Dialer
	if dialer == nil {
		dialer = kafka.DefaultDialer
	}
	var parts []int
	if o.Partitions > 0 {
		for p := range o.Partitions {
			parts = append(parts, p)
		}
	} else {
		found, err := dialer.LookupPartitions(ctx, "tcp", broker, topic)
		if err != nil {
			t.Fatalf("partitions of %s: %v", topic, err)
		}
		for _, p := range found {
			parts = append(parts, p.ID)
		}
	}
	for _, p := range parts {
		conn, err := dialer.DialLeader(ctx, "tcp", broker, topic, p)
		if err != nil {
			t.Fatal(err)
		}
		last, err := conn.ReadLastOffset()
		conn.Close()
		if err != nil {
			t.Fatal(err)
		}
		if last == 0 {
			continue
		}
		r := kafka.NewReader(kafka.ReaderConfig{Brokers: []string{broker}, Topic: topic, Partition: p, Dialer: dialer, MaxWait: 50 * time.Millisecond})
		for n := int64(0); n < last; n++ {
			m, err := r.ReadMessage(ctx)
			if err != nil {
				r.Close()
				t.Fatalf("read %s/%d: %v", topic, p, err)
			}
			each(p, m)
		}
		r.Close()
	}
}
