// Package srctest helps the tests of the broker sources (kafka, nats): a
// sink that records which flows it delivered, and can give up on batches
// as a sink whose broker is away does; payloads as flowbus's sinks write
// them; running a pipeline from YAML in the test's process; and reading
// back every record of a Kafka topic, which the Kafka sink's tests and the
// fault suite use too.
package srctest

import (
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
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
	seen   map[string]*int
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
			// The map keeps a copy: the flow's strings may share storage
			// its batch reuses. Counting through a pointer keeps it (an
			// assignment to an existing key stores the new key string).
			if n, ok := c.seen[e.Flow.Uuid]; ok {
				*n++
			} else {
				one := 1
				c.seen[strings.Clone(e.Flow.Uuid)] = &one
			}
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
		m[k] = *v
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
		c.seen = map[string]*int{}
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
	// Pipeline is the pipeline running (its Handler serves /readyz).
	Pipeline *pipeline.Pipeline
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
	return &Running{Stop: stop, Pipeline: p}
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
		if err := readPartition(ctx, dialer, broker, topic, p, each); err != nil {
			t.Fatalf("read %s/%d: %v", topic, p, err)
		}
	}
}

// readPartition reads partition p of topic from its first offset to its
// end offset, fetch by fetch on one connection. kafka-go's Reader would
// do it too, but it fetches ahead on a goroutine of its own that Close
// waits for, and it gives a fetch's response no longer than MaxWait to
// arrive: a short MaxWait fails where the broker is slow to build a
// response of a megabyte (kfake under the race detector), a long one
// makes every Close wait that long for the fetch past the end.
func readPartition(ctx context.Context, dialer *kafka.Dialer, broker, topic string, p int, each func(partition int, m kafka.Message)) error {
	conn, err := dialer.DialLeader(ctx, "tcp", broker, topic, p)
	if err != nil {
		return err
	}
	defer conn.Close()
	first, last, err := conn.ReadOffsets()
	if err != nil {
		return err
	}
	if _, err := conn.Seek(first, kafka.SeekAbsolute); err != nil {
		return err
	}
	deadline, _ := ctx.Deadline()
	for offset := first; offset < last; {
		if err := conn.SetReadDeadline(deadline); err != nil {
			return err
		}
		// The broker holds records from offset on, so it answers at
		// once; MaxWait bounds only its wait for data.
		batch := conn.ReadBatchWith(kafka.ReadBatchConfig{MinBytes: 1, MaxBytes: 10 << 20, MaxWait: 100 * time.Millisecond})
		for offset < last {
			m, err := batch.ReadMessage()
			if err != nil {
				break
			}
			each(p, m)
			offset = m.Offset + 1
		}
		if err := batch.Close(); err != nil && !errors.Is(err, io.EOF) {
			return err
		}
	}
	return nil
}
