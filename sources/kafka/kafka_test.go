package kafka_test

import (
	"context"
	"errors"
	"fmt"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/flowbus/flowbus/codec"
	"github.com/flowbus/flowbus/internal/sinktest"
	"github.com/flowbus/flowbus/internal/sinkutil"
	"github.com/flowbus/flowbus/internal/srctest"
	"github.com/flowbus/flowbus/pipeline"
	srckafka "github.com/flowbus/flowbus/sources/kafka"
)

func newCluster(t testing.TB, opts ...kfake.Opt) *kfake.Cluster {
	t.Helper()
	opts = append([]kfake.Opt{kfake.NumBrokers(1), kfake.Ports(0)}, opts...)
	c, err := kfake.NewCluster(opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

// watchRequests counts the requests of key that c receives, calls each
// (when not nil) in c's control function before c handles one, and
// returns the count.
func watchRequests(c *kfake.Cluster, key kmsg.Key, each func()) *atomic.Int64 {
	n := new(atomic.Int64)
	c.ControlKey(int16(key), func(kmsg.Request) (kmsg.Response, error, bool) {
		c.KeepControl()
		n.Add(1)
		if each != nil {
			each()
		}
		return nil, nil, false
	})
	return n
}

// produce writes flows first..first+n-1 to topic, spread over its
// partitions, alternating json and protobuf records with the headers
// flowbus's kafka sink writes.
func produce(t testing.TB, broker, topic string, first, n int) {
	t.Helper()
	w := &kafka.Writer{Addr: kafka.TCP(broker), Topic: topic, Balancer: &kafka.RoundRobin{}, BatchSize: 1000, BatchTimeout: 10 * time.Millisecond, RequiredAcks: kafka.RequireAll}
	defer w.Close()
	msgs := make([]kafka.Message, 0, n)
	for i := first; i < first+n; i++ {
		var enc codec.Encoder = codec.Protobuf{}
		if i%2 == 1 {
			enc = codec.JSON{}
		}
		msgs = append(msgs, kafka.Message{Value: srctest.Payload(t, enc, i), Headers: []kafka.Header{
			{Key: sinkutil.HeaderContentType, Value: []byte(enc.ContentType())},
			{Key: sinkutil.HeaderSchema, Value: []byte(sinkutil.SchemaName)},
		}})
	}
	if err := w.WriteMessages(context.Background(), msgs...); err != nil {
		t.Fatal(err)
	}
}

func writeRaw(t testing.TB, broker, topic string, msgs ...kafka.Message) {
	t.Helper()
	w := &kafka.Writer{Addr: kafka.TCP(broker), Topic: topic, Balancer: &kafka.RoundRobin{}, BatchTimeout: 10 * time.Millisecond}
	defer w.Close()
	if err := w.WriteMessages(context.Background(), msgs...); err != nil {
		t.Fatal(err)
	}
}

// committed returns the group's committed offsets of topic, summed over
// its partitions (the number of records committed when they start at 0).
func committed(t testing.TB, broker, group, topic string, partitions int) int64 {
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
	var sum int64
	for _, p := range r.Topics[topic] {
		if p.CommittedOffset > 0 {
			sum += p.CommittedOffset
		}
	}
	return sum
}

func pipelineYAML(broker, topics, group, extra, sink string) string {
	return fmt.Sprintf(`
metrics: {listen: ""}
shutdown_timeout: 20s
sources:
  bus:
    type: kafka
    brokers: [%s]
    topics: %s
    group: %s
    commit_interval: 50ms
    session_timeout: 6s
    rebalance_timeout: 6s
%s
sinks:
  out:
    type: test-collect
    inputs: [bus]
%s
`, broker, topics, group, extra, sink)
}

// Every record is delivered once, json and protobuf alike; a LostEvent in
// the stream passes through once; malformed records are counted and
// skipped; the offsets of everything end committed.
func TestConsume(t *testing.T) {
	c := newCluster(t, kfake.SeedTopics(3, "flows"))
	broker := c.ListenAddrs()[0]
	produce(t, broker, "flows", 0, 3000)
	lost := pipeline.NewBatch()
	sinktest.AddLost(lost, 17, false)
	lostPayload, _ := codec.Protobuf{}.Append(nil, &lost.Events[0])
	lost.Release()
	writeRaw(t, broker, "flows",
		kafka.Message{Value: lostPayload, Headers: []kafka.Header{{Key: "content-type", Value: []byte(codec.ContentTypeProtobuf)}}},
		kafka.Message{Value: []byte("{not json"), Headers: []kafka.Header{{Key: "content-type", Value: []byte(codec.ContentTypeJSON)}}},
		kafka.Message{Value: []byte("<xml/>"), Headers: []kafka.Header{{Key: "content-type", Value: []byte("text/xml")}}},
		kafka.Message{Value: srctest.Payload(t, codec.JSON{}, 3000)}, // no header: sniffed
	)
	r := srctest.Start(t, pipelineYAML(broker, "[flows]", "g1", "", ""))
	out := srctest.Sink("out")
	srctest.Eventually(t, "every flow", func() bool { return out.Distinct() == 3001 })
	srctest.Eventually(t, "every offset committed", func() bool { return committed(t, broker, "g1", "flows", 3) == 3004 })
	sum := r.Stop()
	seen, lostN := out.Seen()
	for id, n := range seen {
		if n != 1 {
			t.Errorf("flow %s delivered %d times", id, n)
		}
	}
	if lostN != 17 {
		t.Errorf("LostEvents passed through count %d events, want 17", lostN)
	}
	if sum.Total.Received != 3002 || sum.Total.Delivered != 3002 || sum.Total.Lost != 0 {
		t.Errorf("summary %v: want 3002 received and delivered (3001 flows, 1 LostEvent), none lost", sum.Total)
	}
}

// A record batch larger than max_bytes still arrives, whole: the broker
// returns the first batch of a fetch even when it is over the limit.
func TestBatchOverMaxBytes(t *testing.T) {
	c := newCluster(t, kfake.SeedTopics(1, "flows"))
	broker := c.ListenAddrs()[0]
	produce(t, broker, "flows", 0, 1000) // batches of up to 1,000 records, far over 4 kB
	r := srctest.Start(t, pipelineYAML(broker, "[flows]", "g1", "    max_bytes: 4096", ""))
	out := srctest.Sink("out")
	srctest.Eventually(t, "every flow", func() bool { return out.Distinct() == 1000 })
	if sum := r.Stop(); sum.Total.Delivered != 1000 {
		t.Errorf("summary %v: want 1000 delivered", sum.Total)
	}
}

// A sink that gives up nacks: nothing after the nacked batch is committed,
// the consumer rejoins and reads the records again, so every record is
// delivered in the end and the offsets end committed.
func TestNackRedelivers(t *testing.T) {
	c := newCluster(t, kfake.SeedTopics(2, "flows"))
	broker := c.ListenAddrs()[0]
	produce(t, broker, "flows", 0, 2000)
	r := srctest.Start(t, pipelineYAML(broker, "[flows]", "g2", "", "    fail_first: 2"))
	out := srctest.Sink("out")
	srctest.Eventually(t, "every flow after the redelivery", func() bool { return out.Distinct() == 2000 })
	srctest.Eventually(t, "every offset committed", func() bool { return committed(t, broker, "g2", "flows", 2) == 2000 })
	sum := r.Stop()
	if sum.Total.Lost == 0 {
		t.Errorf("summary %v: the batches given up on are not counted lost", sum.Total)
	}
	t.Logf("summary: %v", sum.Total)
}

// A topic regex is matched against the brokers' topics.
func TestTopicRegex(t *testing.T) {
	c := newCluster(t, kfake.SeedTopics(1, "hubble.a", "hubble.b", "other"))
	broker := c.ListenAddrs()[0]
	produce(t, broker, "hubble.a", 0, 100)
	produce(t, broker, "hubble.b", 100, 100)
	produce(t, broker, "other", 200, 100)
	r := srctest.Start(t, pipelineYAML(broker, `{regex: 'hubble\..*'}`, "g3", "", ""))
	out := srctest.Sink("out")
	srctest.Eventually(t, "the flows of both hubble topics", func() bool { return out.Distinct() == 200 })
	time.Sleep(200 * time.Millisecond)
	r.Stop()
	seen, _ := out.Seen()
	for i := 200; i < 300; i++ {
		if seen[srctest.Uuid(i)] > 0 {
			t.Fatalf("flow %d of topic other was consumed", i)
		}
	}
}

// A topic created later that the regex matches is consumed after the next
// refresh, while the source waits for records of the topics it has.
func TestTopicRegexRefresh(t *testing.T) {
	c := newCluster(t, kfake.SeedTopics(1, "hubble.a"))
	broker := c.ListenAddrs()[0]
	produce(t, broker, "hubble.a", 0, 100)
	r := srctest.Start(t, pipelineYAML(broker, `{regex: 'hubble\..*'}`, "g7", "    topic_refresh: 200ms", ""))
	defer r.Stop()
	out := srctest.Sink("out")
	srctest.Eventually(t, "the flows of hubble.a", func() bool { return out.Distinct() == 100 })
	// The brokers are asked every topic_refresh (kafka-go's transport
	// would answer from a cache of 6s).
	metadata := watchRequests(c, kmsg.Metadata, nil)
	time.Sleep(2 * time.Second)
	if n := metadata.Load(); n < 4 {
		t.Errorf("%d metadata requests in 2s with topic_refresh 200ms", n)
	}
	created := time.Now()
	cl := &kafka.Client{Addr: kafka.TCP(broker), Timeout: 10 * time.Second}
	res, err := cl.CreateTopics(context.Background(), &kafka.CreateTopicsRequest{Topics: []kafka.TopicConfig{{Topic: "hubble.b", NumPartitions: 1, ReplicationFactor: 1}}})
	if err != nil {
		t.Fatal(err)
	}
	if err := res.Errors["hubble.b"]; err != nil {
		t.Fatal(err)
	}
	produce(t, broker, "hubble.b", 100, 100)
	srctest.Eventually(t, "the flows of hubble.b, created later", func() bool { return out.Distinct() == 200 })
	t.Logf("hubble.b's flows arrived %v after it was created", time.Since(created).Round(time.Millisecond))
}

// Two consumers in one group split a 6-partition topic; once the group is
// stable, each record is delivered exactly once by one of them.
func TestTwoConsumersSplit(t *testing.T) {
	c := newCluster(t, kfake.SeedTopics(6, "flows"))
	broker := c.ListenAddrs()[0]
	y := strings.Replace(pipelineYAML(broker, "[flows]", "g4", "", ""), "  out:", "  %s:", 1)
	srctest.Start(t, fmt.Sprintf(y, "a"))
	srctest.Start(t, fmt.Sprintf(y, "b"))
	a, b := srctest.Sink("a"), srctest.Sink("b")
	cl := &kafka.Client{Addr: kafka.TCP(broker), Timeout: 10 * time.Second}
	srctest.Eventually(t, "a stable group of two", func() bool {
		r, err := cl.DescribeGroups(context.Background(), &kafka.DescribeGroupsRequest{GroupIDs: []string{"g4"}})
		if err != nil || len(r.Groups) != 1 || r.Groups[0].GroupState != "Stable" || len(r.Groups[0].Members) != 2 {
			return false
		}
		n := 0
		for _, m := range r.Groups[0].Members {
			for _, tp := range m.MemberAssignments.Topics {
				n += len(tp.Partitions)
			}
		}
		return n == 6
	})
	produce(t, broker, "flows", 0, 6000)
	srctest.Eventually(t, "every flow", func() bool { return a.Distinct()+b.Distinct() == 6000 })
	srctest.Eventually(t, "every offset committed", func() bool { return committed(t, broker, "g4", "flows", 6) == 6000 })
	sa, _ := a.Seen()
	sb, _ := b.Seen()
	if len(sa) == 0 || len(sb) == 0 {
		t.Fatalf("one consumer got nothing: %d and %d flows", len(sa), len(sb))
	}
	for id, n := range sa {
		if n != 1 || sb[id] != 0 {
			t.Errorf("flow %s delivered %d times by a, %d by b", id, n, sb[id])
		}
	}
	t.Logf("a delivered %d flows, b %d", len(sa), len(sb))
}

func TestConfigErrors(t *testing.T) {
	for _, tc := range []struct{ yaml, want string }{
		{"brokers: [k:9092]\ntopics: []\ngroup: g\n", "topics is empty"},
		{"brokers: [k:9092]\ntopics: {regex: '('}\ngroup: g\n", "topics.regex"},
		{"brokers: [k:9092]\ntopics: {name: x}\ngroup: g\n", "want a list of names"},
		{"brokers: [k]\ntopics: [x]\ngroup: g\n", "want host:port"},
		{"brokers: [k:9092]\ntopics: [x]\ngroup: g\nstart: middle\n", "want earliest or latest"},
		{"brokers: [k:9092]\ntopics: [x]\n", "group"},
		{"brokers: [k:9092]\ntopics: [x]\ngroup: g\nsasl: {mechanism: plain, username: u, password: p, password_file: f}\n", "secrets come from files"},
	} {
		_, err := pipeline.Make(sinktest.Build("kafka", ""), sinktest.Node(t, tc.yaml), srckafka.New)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: error %v, want %q", tc.yaml, err, tc.want)
		}
	}
}

// A real sink gives up (the kafka sink, while its broker refuses every
// produce request): offsets stop short of the records it gave up on, and
// once the broker is back the consumer reads them again, so the output
// topic ends with every record.
func TestSinkGivesUpRedelivers(t *testing.T) {
	c := newCluster(t, kfake.SeedTopics(2, "flows", "out"))
	broker := c.ListenAddrs()[0]
	produce(t, broker, "flows", 0, 2000)
	var down atomic.Bool
	var refused atomic.Int64
	down.Store(true)
	c.ControlKey(int16(kmsg.Produce), func(kmsg.Request) (kmsg.Response, error, bool) {
		c.KeepControl()
		if !down.Load() {
			return nil, nil, false
		}
		refused.Add(1)
		return nil, errors.New("broker down"), true
	})
	r := srctest.Start(t, fmt.Sprintf(`
metrics: {listen: ""}
shutdown_timeout: 20s
sources:
  bus:
    type: kafka
    brokers: [%s]
    topics: [flows]
    group: g5
    commit_interval: 50ms
sinks:
  out:
    type: kafka
    inputs: [bus]
    brokers: [%s]
    topic: out
    encoding: protobuf
    batch_timeout: 1s
    max_attempts: 2
    backoff: {min: 10ms, max: 20ms}
`, broker, broker))
	srctest.Eventually(t, "produce requests refused", func() bool { return refused.Load() >= 10 })
	if n := committed(t, broker, "g5", "flows", 2); n != 0 {
		t.Errorf("%d offsets committed while the sink gave up on every record", n)
	}
	down.Store(false)
	srctest.Eventually(t, "every offset committed", func() bool { return committed(t, broker, "g5", "flows", 2) == 2000 })
	sum := r.Stop()
	seen := map[string]int{}
	for _, p := range topicPayloads(t, broker, "out", 2) {
		b := pipeline.NewBatch()
		e := b.Next()
		if _, err := codec.NewDecoder().Decode(codec.ContentTypeProtobuf, p, e); err != nil {
			t.Fatal(err)
		}
		if e.Flow != nil {
			seen[e.Flow.Uuid]++
		}
		b.Release()
	}
	for i := range 2000 {
		if seen[srctest.Uuid(i)] == 0 {
			t.Fatalf("flow %d never reached the output topic", i)
		}
	}
	t.Logf("summary %v; %d distinct flows in the output topic", sum.Total, len(seen))
}

// topicPayloads returns the values of every record of topic.
func topicPayloads(t *testing.T, broker, topic string, partitions int) [][]byte {
	t.Helper()
	var out [][]byte
	srctest.ReadTopic(t, broker, topic, srctest.Topic{Partitions: partitions}, func(_ int, m kafka.Message) { out = append(out, m.Value) })
	return out
}

// A broker that answers every fetch 150ms late (a distant or loaded
// broker): the source stays ready while the topic is idle, when a fetch
// is answered only after the broker waited for records in vain, and
// delivers what is produced afterwards.
func TestSlowBrokerStaysReady(t *testing.T) {
	c := newCluster(t, kfake.SeedTopics(1, "flows"))
	broker := c.ListenAddrs()[0]
	fetches := watchRequests(c, kmsg.Fetch, func() {
		c.SleepControl(func() { time.Sleep(150 * time.Millisecond) })
	})
	produce(t, broker, "flows", 0, 100)
	r := srctest.Start(t, pipelineYAML(broker, "[flows]", "g-slow", "", ""))
	out := srctest.Sink("out")
	srctest.Eventually(t, "the first flows", func() bool { return out.Distinct() == 100 })
	ready := r.Pipeline.Handler()
	unready := 0
	var reason string
	for start := time.Now(); time.Since(start) < 3*time.Second; time.Sleep(20 * time.Millisecond) {
		w := httptest.NewRecorder()
		ready.ServeHTTP(w, httptest.NewRequest("GET", "/readyz", nil))
		if w.Code != 200 {
			unready++
			reason = w.Body.String()
		}
	}
	if unready > 0 {
		t.Errorf("unready %d times while the topic was idle: %s", unready, reason)
	}
	produce(t, broker, "flows", 100, 100)
	srctest.Eventually(t, "the flows produced later", func() bool { return out.Distinct() == 200 })
	t.Logf("%d fetches; summary %v", fetches.Load(), r.Stop().Total)
}
