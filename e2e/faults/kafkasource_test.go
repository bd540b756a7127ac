package faults

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/flowbus/flowbus/internal/srctest"

	"github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/flowbus/flowbus/codec"
	"github.com/flowbus/flowbus/flow/flowjson"
	"github.com/flowbus/flowbus/flow/observer"
	"github.com/flowbus/flowbus/internal/sinktest"
	"github.com/flowbus/flowbus/internal/sinkutil"
	"github.com/flowbus/flowbus/pipeline"
)

// kafkaSourceConfig is kafka → file (json), committing every 100ms.
func kafkaSourceConfig(broker, out string) string {
	return fmt.Sprintf(`
node_name: agg
metrics: {listen: ""}
sources:
  bus:
    type: kafka
    brokers: [%s]
    topics: [flows]
    group: aggregator
    commit_interval: 100ms
    session_timeout: 6s
    rebalance_timeout: 6s
sinks:
  lake:
    type: file
    inputs: [bus]
    path: %s
`, broker, out)
}

// position is where a record is in the topic.
type position struct {
	partition int
	offset    int64
}

// recordPositions maps the uuid of every record of topic to its position.
func recordPositions(t *testing.T, broker, topic string, partitions int) map[string]position {
	t.Helper()
	dec := codec.NewDecoder()
	out := map[string]position{}
	srctest.ReadTopic(t, broker, topic, srctest.Topic{Partitions: partitions}, func(p int, m kafka.Message) {
		b := pipeline.NewBatch()
		defer b.Release()
		e := b.Next()
		if _, err := dec.Decode(string(m.Headers[0].Value), m.Value, e); err != nil {
			t.Fatal(err)
		}
		out[e.Flow.Uuid] = position{p, m.Offset}
	})
	return out
}

// committedOffsets returns the group's committed offset per partition.
func committedOffsets(t *testing.T, broker, group, topic string, partitions int) map[int]int64 {
	t.Helper()
	c := &kafka.Client{Addr: kafka.TCP(broker), Timeout: 10 * time.Second}
	ps := make([]int, partitions)
	for i := range ps {
		ps[i] = i
	}
	r, err := c.OffsetFetch(context.Background(), &kafka.OffsetFetchRequest{GroupID: group, Topics: map[string][]int{topic: ps}})
	if err != nil {
		t.Fatal(err)
	}
	out := map[int]int64{}
	for _, p := range r.Topics[topic] {
		out[p.Partition] = max(p.CommittedOffset, 0)
	}
	return out
}

// fileUuids counts the flows of a Hubble export file by uuid (a torn last
// line is ignored: the next run cuts it off).
func fileUuids(t *testing.T, path string) map[string]int {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	out := map[string]int{}
	for len(data) > 0 {
		line, rest, complete := bytes.Cut(data, []byte("\n"))
		data = rest
		if !complete {
			break
		}
		var ev observer.ExportEvent
		if err := flowjson.Unmarshal(line, &ev); err != nil {
			t.Fatalf("%s: a line does not parse: %v", path, err)
		}
		if f := ev.GetFlow(); f != nil {
			out[f.Uuid]++
		}
	}
	return out
}

// The aggregation tier is SIGKILLed in the middle of the stream and
// started again: every record reaches the file at least once, and the
// only duplicates are records of the window that was delivered but not
// committed when the process died.
func TestKafkaSourceSIGKILL(t *testing.T) {
	const partitions, total = 3, 40000
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.Ports(0), kfake.SeedTopics(partitions, "flows"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	broker := c.ListenAddrs()[0]
	out := filepath.Join(t.TempDir(), "flows.json")
	cfg := writeConfig(t, t.TempDir(), kafkaSourceConfig(broker, out))

	// The nodes publish all along, in batches.
	produced := make(chan struct{})
	go func() {
		defer close(produced)
		w := &kafka.Writer{Addr: kafka.TCP(broker), Topic: "flows", Balancer: &kafka.RoundRobin{}, BatchSize: 1000, BatchTimeout: 5 * time.Millisecond}
		defer w.Close()
		for first := 0; first < total; first += 1000 {
			msgs := make([]kafka.Message, 0, 1000)
			b := sinktest.Batch(first, 1000)
			for i := range b.Events {
				v, err := codec.Protobuf{}.Append(nil, &b.Events[i])
				if err != nil {
					t.Error(err)
					return
				}
				msgs = append(msgs, kafka.Message{Value: v, Headers: []kafka.Header{{Key: sinkutil.HeaderContentType, Value: []byte(codec.ContentTypeProtobuf)}}})
			}
			b.Release()
			if err := w.WriteMessages(context.Background(), msgs...); err != nil {
				t.Error(err)
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
	}()

	t0 := time.Now()
	p := start(t, cfg, nil)
	p.eventually("flows in the file", func() bool { return lineCount(out) >= 10000 })
	p.signal(syscall.SIGKILL)
	<-p.done
	t.Logf("killed %s after the start", time.Since(t0))
	commits := committedOffsets(t, broker, "aggregator", "flows", partitions)
	before := fileUuids(t, out)

	p2 := start(t, cfg, nil)
	<-produced
	t.Logf("produced %d records in %s", total, time.Since(t0))
	t0 = time.Now()
	for lineCount(out) < total || len(fileUuids(t, out)) < total {
		if time.Since(t0) > time.Minute {
			t.Fatalf("after a minute the file has %d lines, %d distinct flows of %d; stderr:\n%s", lineCount(out), len(fileUuids(t, out)), total, p2.stderr)
		}
		time.Sleep(200 * time.Millisecond)
	}
	p2.signal(syscall.SIGTERM)
	stderr := p2.wait()
	parseSummary(t, stderr)

	pos := recordPositions(t, broker, "flows", partitions)
	after := fileUuids(t, out)
	var window, dups int
	for id := range before {
		if pp := pos[id]; pp.offset >= commits[pp.partition] {
			window++
		}
	}
	for id, n := range after {
		if n == 1 {
			continue
		}
		dups += n - 1
		pp, ok := pos[id]
		if !ok {
			t.Fatalf("flow %s is not in the topic", id)
		}
		if pp.offset < commits[pp.partition] || n > 2 {
			t.Errorf("flow %s (partition %d offset %d, committed %d) delivered %d times: only the uncommitted window may come twice",
				id, pp.partition, pp.offset, commits[pp.partition], n)
		}
	}
	if dups > window {
		t.Errorf("%d duplicates, more than the %d records delivered but not committed at the kill", dups, window)
	}
	t.Logf("killed after %d flows in the file; committed then: %v; uncommitted window %d records; duplicates after the restart: %d", len(before), commits, window, dups)
}
