package kafka

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"
	"google.golang.org/protobuf/proto"

	flowpb "github.com/flowbus/flowbus/flow"
	"github.com/flowbus/flowbus/flow/observer"
	"github.com/flowbus/flowbus/internal/sinktest"
	"github.com/flowbus/flowbus/internal/sinkutil"
	"github.com/flowbus/flowbus/internal/srctest"
	"github.com/flowbus/flowbus/pipeline"
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

func newSink(t testing.TB, encoding, cfg string) *Sink {
	t.Helper()
	s, err := pipeline.Make(sinktest.Build("kafka", encoding), sinktest.Node(t, cfg), New)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close(context.Background()) })
	if err := s.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	return s
}

func counter(c prometheus.Counter) float64 {
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		panic(err)
	}
	return m.GetCounter().GetValue()
}

// readAll reads every record of topic with a kafka-go Reader, partition by
// partition, up to the partition's end offset at the time of the call.
func readAll(t testing.TB, broker, topic string, dialer *kafka.Dialer) map[int][]kafka.Message {
	t.Helper()
	out := map[int][]kafka.Message{}
	srctest.ReadTopic(t, broker, topic, srctest.Topic{Dialer: dialer}, func(p int, m kafka.Message) { out[p] = append(out[p], m) })
	return out
}

func header(m kafka.Message, k string) (string, bool) {
	for _, h := range m.Headers {
		if h.Key == k {
			return string(h.Value), true
		}
	}
	return "", false
}

func TestTopicsKeysHeaders(t *testing.T) {
	c := newCluster(t, kfake.SeedTopics(3, "hubble.flows.FORWARDED", "hubble.flows.DROPPED", "hubble.lost"))
	broker := c.ListenAddrs()[0]
	s := newSink(t, "protobuf", fmt.Sprintf(`
brokers: [%s]
topic: hubble.flows.{{ verdict }}
lost_topic: hubble.lost
key: connection
`, broker))
	b := sinktest.Batch(0, 200)
	sinktest.AddLost(b, 7, false)
	sinktest.AddLost(b, 3, true)
	b.SetSeq(1764777600123456, 1001)
	defer b.Release()
	failed, err := s.Write(context.Background(), b)
	if failed != 0 || err != nil {
		t.Fatalf("Write: failed=%d err=%v", failed, err)
	}

	perTopic := map[string]int{}
	for i := 0; i < 200; i++ {
		f := b.Events[i].Flow
		perTopic["hubble.flows."+f.Verdict.String()]++
	}
	partOfKey := map[string]int{}
	uuids := map[string]bool{}
	for topic, want := range perTopic {
		got := 0
		for p, msgs := range readAll(t, broker, topic, nil) {
			for _, m := range msgs {
				got++
				var env observer.GetFlowsResponse
				if err := proto.Unmarshal(m.Value, &env); err != nil {
					t.Fatalf("unmarshal: %v", err)
				}
				f := env.GetFlow()
				if f == nil || "hubble.flows."+f.Verdict.String() != topic {
					t.Fatalf("record in %s: %v", topic, f)
				}
				uuids[f.Uuid] = true
				want, _ := sinkutil.AppendConnectionKey(nil, f)
				if string(m.Key) != string(want) {
					t.Errorf("key %q, want %q", m.Key, want)
				}
				if q, ok := partOfKey[string(m.Key)]; ok && q != p {
					t.Errorf("key %q in partitions %d and %d", m.Key, q, p)
				}
				partOfKey[string(m.Key)] = p
				if !m.Time.Equal(f.Time.AsTime().Truncate(time.Millisecond)) {
					t.Errorf("record time %v, want %v", m.Time, f.Time.AsTime())
				}
				for k, v := range map[string]string{"content-type": "application/x-protobuf", "flowbus-schema": "observer.GetFlowsResponse", "flowbus-node": "node-1"} {
					if h, _ := header(m, k); h != v {
						t.Errorf("header %s = %q, want %q", k, h, v)
					}
				}
				rate, ok := header(m, "flowbus-sample-rate")
				n := 0
				fmt.Sscanf(f.Uuid[len(f.Uuid)-12:], "%d", &n)
				if seq, _ := header(m, "flowbus-seq"); seq != fmt.Sprintf("node-1/test/1764777600123456/%d", 1001+n) {
					t.Errorf("flow %d: flowbus-seq %q", n, seq)
				}
				if wantRate := n%10 == 9; ok != wantRate || (ok && rate != "4") {
					t.Errorf("flow %d: sample-rate header %q (present %v)", n, rate, ok)
				}
				if murmur2Partition(m.Key, 3) != p {
					t.Errorf("key %q in partition %d, murmur2 says %d", m.Key, p, murmur2Partition(m.Key, 3))
				}
			}
		}
		if got != want {
			t.Errorf("%s: %d records, want %d", topic, got, want)
		}
	}
	if len(uuids) != 200 {
		t.Errorf("%d distinct flows, want 200", len(uuids))
	}
	// Both directions of every connection share a key: 100 connections.
	if len(partOfKey) != 100 {
		t.Errorf("%d distinct keys, want 100 (one per connection)", len(partOfKey))
	}
	lost := 0
	for _, msgs := range readAll(t, broker, "hubble.lost", nil) {
		for _, m := range msgs {
			var env observer.GetFlowsResponse
			if err := proto.Unmarshal(m.Value, &env); err != nil || env.GetLostEvents() == nil {
				t.Fatalf("lost record: %v %v", err, &env)
			}
			if m.Key != nil {
				t.Errorf("LostEvent has key %q", m.Key)
			}
			lost += int(env.GetLostEvents().NumEventsLost)
		}
	}
	if lost != 10 {
		t.Errorf("LostEvents carry %d, want 10", lost)
	}
	if a := counter(s.m.Acked); a != 202 {
		t.Errorf("acked %v, want 202", a)
	}
}

func TestKeys(t *testing.T) {
	c := newCluster(t, kfake.SeedTopics(1, "k"))
	broker := c.ListenAddrs()[0]
	tests := []struct {
		key  string
		want func(f *flowpb.Flow) string
	}{
		{"source_pod", func(f *flowpb.Flow) string { return f.Source.Namespace + "/" + f.Source.PodName }},
		{"'{{ source.namespace }}-{{ verdict }}'", func(f *flowpb.Flow) string { return f.Source.Namespace + "-" + f.Verdict.String() }},
		{"destination.pod_name", func(f *flowpb.Flow) string { return f.Destination.PodName }},
		{"none", func(*flowpb.Flow) string { return "" }},
	}
	total := 0
	for _, tt := range tests {
		s := newSink(t, "json", fmt.Sprintf("brokers: [%s]\ntopic: k\nkey: %s\n", broker, tt.key))
		b := sinktest.Batch(total, 10)
		if failed, err := s.Write(context.Background(), b); failed != 0 || err != nil {
			t.Fatal(failed, err)
		}
		msgs := readAll(t, broker, "k", nil)[0][total:]
		for i, m := range msgs {
			if want := tt.want(b.Events[i].Flow); string(m.Key) != want {
				t.Errorf("key %s: got %q, want %q", tt.key, m.Key, want)
			}
			if h, _ := header(m, "content-type"); h != "application/json" {
				t.Errorf("content-type %q", h)
			}
		}
		b.Release()
		total += 10
	}
}

func TestCompression(t *testing.T) {
	codecs := []string{"none", "gzip", "snappy", "lz4", "zstd"}
	c := newCluster(t, kfake.SeedTopics(2, codecs...))
	broker := c.ListenAddrs()[0]
	for _, codec := range codecs {
		t.Run(codec, func(t *testing.T) {
			s := newSink(t, "json", fmt.Sprintf("brokers: [%s]\ntopic: %s\ncompression: %s\n", broker, codec, codec))
			b := sinktest.Batch(0, 300)
			defer b.Release()
			if failed, err := s.Write(context.Background(), b); failed != 0 || err != nil {
				t.Fatal(failed, err)
			}
			n := 0
			for _, msgs := range readAll(t, broker, codec, nil) {
				for _, m := range msgs {
					n++
					if !strings.HasPrefix(string(m.Value), `{"flow":{`) || !strings.HasSuffix(string(m.Value), "}\n") {
						t.Fatalf("value %q", m.Value)
					}
				}
			}
			if n != 300 {
				t.Errorf("%d records, want 300", n)
			}
		})
	}
}

// TestBrokerErrorsRetried: the broker refuses the first produce requests
// with a retriable error; every record ends up delivered exactly once per
// successful attempt.
func TestBrokerErrorsRetried(t *testing.T) {
	c := newCluster(t, kfake.SeedTopics(1, "r"))
	broker := c.ListenAddrs()[0]
	var refused atomic.Int32
	c.ControlKey(int16(kmsg.Produce), func(req kmsg.Request) (kmsg.Response, error, bool) {
		c.KeepControl()
		if refused.Load() >= 2 {
			return nil, nil, false
		}
		refused.Add(1)
		return produceError(req, 6 /* NOT_LEADER_OR_FOLLOWER */), nil, true
	})
	s := newSink(t, "protobuf", fmt.Sprintf("brokers: [%s]\ntopic: r\nmax_attempts: 5\nbackoff: {min: 1ms, max: 5ms}\n", broker))
	b := sinktest.Batch(0, 100)
	defer b.Release()
	if failed, err := s.Write(context.Background(), b); failed != 0 || err != nil {
		t.Fatalf("failed=%d err=%v", failed, err)
	}
	if n := len(readAll(t, broker, "r", nil)[0]); n != 100 {
		t.Errorf("%d records, want 100", n)
	}
	if r := counter(s.m.Retried); r != 200 {
		t.Errorf("retried %v, want 200", r)
	}
	if a := counter(s.m.Acked); a != 100 {
		t.Errorf("acked %v, want 100", a)
	}
}

// TestBrokerErrorsGiveUp: the broker refuses everything; after max_attempts
// the sink reports exactly the counted events as failed.
func TestBrokerErrorsGiveUp(t *testing.T) {
	c := newCluster(t, kfake.SeedTopics(1, "g"))
	broker := c.ListenAddrs()[0]
	var requests, refuse atomic.Int32
	refuse.Store(1 << 30)
	c.ControlKey(int16(kmsg.Produce), func(req kmsg.Request) (kmsg.Response, error, bool) {
		c.KeepControl()
		if requests.Add(1) > refuse.Load() {
			return nil, nil, false
		}
		return produceError(req, 19 /* NOT_ENOUGH_REPLICAS */), nil, true
	})
	s := newSink(t, "json", fmt.Sprintf("brokers: [%s]\ntopic: g\nmax_attempts: 3\nbackoff: {min: 1ms, max: 2ms}\n", broker))
	b := sinktest.Batch(0, 50)
	defer b.Release()
	failed, err := s.Write(context.Background(), b)
	if err != nil || failed != 50 {
		t.Fatalf("failed=%d err=%v, want 50", failed, err)
	}
	if n := requests.Load(); n != 3 {
		t.Errorf("%d produce requests, want 3", n)
	}
	if f := counter(s.m.Failed); f != 50 {
		t.Errorf("failed metric %v, want 50", f)
	}

	// A batch of flowbus's own LostEvents is given up after max_attempts
	// too (the runtime reports the losses again at the next flush); while
	// they fail, the next LostEvent batch gets one attempt, and the first
	// that is delivered ends the condition.
	requests.Store(0)
	lostB := pipeline.NewBatch()
	defer lostB.Release()
	sinktest.AddLost(lostB, 5, true)
	if failed, err = s.Write(context.Background(), lostB); err != nil || failed != 1 {
		t.Fatalf("refused LostEvent: failed=%d err=%v, want 1", failed, err)
	}
	if n := requests.Load(); n != 3 {
		t.Errorf("%d produce requests, want 3", n)
	}
	if s.Ready() == nil {
		t.Error("ready while LostEvents are refused")
	}
	requests.Store(0)
	if failed, err = s.Write(context.Background(), lostB); err != nil || failed != 1 {
		t.Fatalf("refused LostEvent again: failed=%d err=%v, want 1", failed, err)
	}
	if n := requests.Load(); n != 1 {
		t.Errorf("%d produce requests while LostEvents fail, want 1", n)
	}
	requests.Store(0)
	refuse.Store(0)
	if failed, err = s.Write(context.Background(), lostB); err != nil || failed != 0 {
		t.Fatalf("accepted LostEvent: failed=%d err=%v, want 0", failed, err)
	}
	if err := s.Ready(); err != nil {
		t.Errorf("Ready once a LostEvent was delivered: %v", err)
	}
	msgs := readAll(t, broker, "g", nil)[0]
	if len(msgs) != 1 || !strings.Contains(string(msgs[0].Value), `"lost_events"`) {
		t.Fatalf("topic holds %d records, want the LostEvent only", len(msgs))
	}

	// A LostEvent still refused when the context ends counts as failed, so
	// the runtime reports its losses again.
	refuse.Store(1 << 30)
	s.retry.MaxAttempts = 1 << 30
	b3 := pipeline.NewBatch()
	defer b3.Release()
	sinktest.AddLost(b3, 5, true)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	failed, err = s.Write(ctx, b3)
	if !errors.Is(err, context.DeadlineExceeded) || failed != 1 {
		t.Fatalf("cancelled LostEvent: failed=%d err=%v, want 1", failed, err)
	}
}

// TestPartialRecordErrors: one of two partitions fails once; only its
// records are retried.
func TestPartialPartitionErrors(t *testing.T) {
	c := newCluster(t, kfake.SeedTopics(2, "p"))
	broker := c.ListenAddrs()[0]
	var once atomic.Bool
	c.ControlKey(int16(kmsg.Produce), func(req kmsg.Request) (kmsg.Response, error, bool) {
		c.KeepControl()
		pr := req.(*kmsg.ProduceRequest)
		if pr.Topics[0].Partitions[0].Partition == 1 && once.CompareAndSwap(false, true) {
			return produceError(req, 7 /* REQUEST_TIMED_OUT */), nil, true
		}
		return nil, nil, false
	})
	s := newSink(t, "json", fmt.Sprintf("brokers: [%s]\ntopic: p\nkey: connection\nbackoff: {min: 1ms, max: 2ms}\n", broker))
	b := sinktest.Batch(0, 100)
	defer b.Release()
	if failed, err := s.Write(context.Background(), b); failed != 0 || err != nil {
		t.Fatal(failed, err)
	}
	got := readAll(t, broker, "p", nil)
	if n := len(got[0]) + len(got[1]); n != 100 {
		t.Errorf("%d records, want 100", n)
	}
	if r := counter(s.m.Retried); r != float64(len(got[1])) {
		t.Errorf("retried %v, want %d (partition 1)", r, len(got[1]))
	}
}

func produceError(req kmsg.Request, code int16) kmsg.Response {
	pr := req.(*kmsg.ProduceRequest)
	resp := pr.ResponseKind().(*kmsg.ProduceResponse)
	for _, rt := range pr.Topics {
		st := kmsg.NewProduceResponseTopic()
		st.Topic = rt.Topic
		st.TopicID = rt.TopicID
		for _, rp := range rt.Partitions {
			sp := kmsg.NewProduceResponseTopicPartition()
			sp.Partition = rp.Partition
			sp.ErrorCode = code
			st.Partitions = append(st.Partitions, sp)
		}
		resp.Topics = append(resp.Topics, st)
	}
	return resp
}

// TestOutage: with the broker gone, Write gives up after max_attempts with
// every counted event failed and the sink unready; a new broker on the same
// port makes it ready again.
func TestOutage(t *testing.T) {
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(1, "o"))
	if err != nil {
		t.Fatal(err)
	}
	broker := c.ListenAddrs()[0]
	s := newSink(t, "json", fmt.Sprintf("brokers: [%s]\ntopic: o\nmax_attempts: 2\nbatch_timeout: 500ms\nbackoff: {min: 1ms, max: 2ms}\n", broker))
	b := sinktest.Batch(0, 20)
	defer b.Release()
	if failed, err := s.Write(context.Background(), b); failed != 0 || err != nil {
		t.Fatal(failed, err)
	}
	if err := s.Ready(); err != nil {
		t.Fatalf("Ready: %v", err)
	}
	c.Close()
	failed, err := s.Write(context.Background(), b)
	if err != nil || failed != 20 {
		t.Fatalf("during outage: failed=%d err=%v, want 20", failed, err)
	}
	if err := s.Ready(); err == nil {
		t.Fatal("Ready() = nil during the outage")
	}
	// ctx cancelled while retrying: failed counts the rest, err says why.
	s.retry.MaxAttempts = 100
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	failed, err = s.Write(ctx, b)
	if !errors.Is(err, context.DeadlineExceeded) || failed != 20 {
		t.Fatalf("cancelled: failed=%d err=%v", failed, err)
	}

	_, port, _ := strings.Cut(broker, ":")
	var p int
	fmt.Sscanf(port, "%d", &p)
	c2 := newCluster(t, kfake.SeedTopics(1, "o"), kfake.Ports(p))
	_ = c2
	s.retry.MaxAttempts = 20
	if failed, err := s.Write(context.Background(), b); failed != 0 || err != nil {
		t.Fatalf("after restart: failed=%d err=%v", failed, err)
	}
	if err := s.Ready(); err != nil {
		t.Fatalf("Ready after restart: %v", err)
	}
}

// TestStartFailsWithoutBroker: with run --require-healthy, Start fails
// when no broker answers.
func TestStartFailsWithoutBroker(t *testing.T) {
	b := sinktest.Build("kafka", "json")
	b.RequireHealthy = true
	s, err := pipeline.Make(b, sinktest.Node(t, "brokers: [127.0.0.1:1]\ntopic: x\nbatch_timeout: 1s\n"), New)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close(context.Background())
	if err := s.Start(context.Background()); err == nil {
		t.Fatal("Start succeeded without a broker")
	}
	if s.Ready() == nil {
		t.Fatal("ready without a broker")
	}
}

func TestConfigErrors(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "pw"), []byte("s3cret\n"), 0o600)
	tests := []struct{ cfg, want string }{
		{"topic: x", `2:1: missing required key "brokers"`},
		{"brokers: [a:1]", `2:1: missing required key "topic"`},
		{"brokers: []\ntopic: x", "2:10: kafka: brokers is empty"},
		{"brokers: [a:1]\ntopic: x\nmax_attempts: 0", "4:15: kafka: max_attempts must be at least 1"},
		{"brokers: [a:1]\ntopic: x\nbatch_timeout: 0", "4:16: kafka: batch_timeout must be positive"},
		{"brokers: [a:1]\ntopic: x\nsasl: {mechanism: plain, username: u, password: p}", "4:49: kafka: sasl.password is not accepted: secrets come from files; put the password in a file and set sasl.password_file"},
		{"brokers: [a:1]\ntopic: x\nsasl: {mechanism: plain, username: u}", `4:7: missing required key "password_file"`},
		{"brokers: [a]\ntopic: x", `broker "a": want host:port`},
		{"brokers: [a:1]\ntopic: hubble.{{ nope }}", `3:18:`},
		{"brokers: [a:1]\ntopic: x\ncompression: brotli", "compression"},
		{"brokers: [a:1]\ntopic: x\nrequired_acks: some", "required_acks"},
		{"brokers: [a:1]\ntopic: x\nkey: '{{ source.nope }}'", `has no field "nope"`},
		{"brokers: [a:1]\ntopic: x\nsasl: {mechanism: plain, username: u, password_file: " + filepath.Join(dir, "missing") + "}", "kafka: sasl: password_file: cannot read the file it names: no such file or directory"},
		{"brokers: [a:1]\ntopic: x\nsasl: {mechanism: plain, username: u, password_file: hunter2-secret}", "sasl: password_file: cannot read the file it names"},
		{"brokers: [a:1]\ntopic: x\ntls: {ca_file: hunter2-secret}", "kafka: tls.ca_file: cannot read the file it names"},
		{"brokers: [a:1]\ntopic: x\ntls: {cert_file: c.pem, key_file: hunter2-secret}", "kafka: tls.cert_file: cannot read the file it names"},
		{"brokers: [a:1]\ntopic: x\nsasl: {mechanism: gssapi, username: u, password_file: " + filepath.Join(dir, "pw") + "}", "mechanism"},
		{"brokers: [a:1]\ntopic: x\ntls: {cert_file: c.pem}", "cert_file and key_file"},
		{"brokers: [a:1]\ntopic: x\nbogus: 1", "bogus"},
		{"brokers: [a:1]\ntopic: '..'", `3:9: ".." is not a valid Kafka topic`},
		{"brokers: [a:1]\ntopic: x\nlost_topic: .", `4:13: "." is not a valid Kafka topic`},
		{"brokers: [a:1]\ntopic: " + strings.Repeat("t", 250), "3:257: a Kafka topic is at most 249 characters"},
		{"brokers: [a:1]\ntopic: flows/x", "3:13: character '/' is not allowed"},
	}
	for _, tt := range tests {
		_, err := pipeline.Make(sinktest.Build("kafka", "json"), sinktest.Node(t, "\n"+tt.cfg), New)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%q: error %v, want %q", tt.cfg, err, tt.want)
		}
		if err != nil && (strings.Contains(tt.cfg, "password") && strings.Contains(err.Error(), "p}") || strings.Contains(err.Error(), "hunter2")) {
			t.Errorf("error leaks the password: %v", err)
		}
	}
	os.WriteFile(filepath.Join(dir, "pw"), []byte("s3cret\n"), 0o600)
	_, err := pipeline.Make(sinktest.Build("kafka", "json"), sinktest.Node(t, "brokers: [a:1]\ntopic: x\nsasl: {mechanism: plain, username: u, password_file: "+filepath.Join(dir, "pw")+"}"), New)
	if err != nil {
		t.Fatal(err)
	}
}

func TestMurmur2MatchesKafkaGo(t *testing.T) {
	var bal kafka.Murmur2Balancer
	parts := []int{0, 1, 2, 3, 4, 5, 6}
	for i := 0; i < 1000; i++ {
		key := []byte(fmt.Sprintf("key-%d-%s", i, strings.Repeat("x", i%7)))
		if got, want := murmur2Partition(key, 7), bal.Balance(kafka.Message{Key: key}, parts...); got != want {
			t.Fatalf("%q: %d, kafka-go %d", key, got, want)
		}
	}
}

var _ pipeline.Starter = (*Sink)(nil)
var _ pipeline.Readier = (*Sink)(nil)

// TestIdleProbe: an idle sink notices that its broker went away.
func TestIdleProbe(t *testing.T) {
	defer func(d time.Duration) { probeInterval = d }(probeInterval)
	probeInterval = 10 * time.Millisecond
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(1, "i"))
	if err != nil {
		t.Fatal(err)
	}
	s := newSink(t, "json", fmt.Sprintf("brokers: [%s]\ntopic: i\n", c.ListenAddrs()[0]))
	if err := s.Ready(); err != nil {
		t.Fatal(err)
	}
	c.Close()
	waitFor(t, "unready after the broker closed", func() bool { return s.Ready() != nil })
}

func TestRequiredAcks(t *testing.T) {
	c := newCluster(t, kfake.SeedTopics(1, "all", "one", "none"))
	broker := c.ListenAddrs()[0]
	for _, acks := range []string{"all", "one", "none"} {
		s := newSink(t, "json", fmt.Sprintf("brokers: [%s]\ntopic: %s\nrequired_acks: %s\n", broker, acks, acks))
		b := sinktest.Batch(0, 30)
		if failed, err := s.Write(context.Background(), b); failed != 0 || err != nil {
			t.Fatal(acks, failed, err)
		}
		b.Release()
		waitFor(t, "records of acks="+acks, func() bool { return len(readAll(t, broker, acks, nil)[0]) == 30 })
	}
}

// TestTopicCreation: templated topics that do not exist yet are created by
// a broker that allows it; when it does not, the records fail and are
// counted.
func TestTopicCreation(t *testing.T) {
	c := newCluster(t, kfake.AllowAutoTopicCreation(), kfake.DefaultNumPartitions(2))
	broker := c.ListenAddrs()[0]
	s := newSink(t, "json", fmt.Sprintf("brokers: [%s]\ntopic: auto.{{ verdict }}\n", broker))
	b := sinktest.Batch(0, 40)
	defer b.Release()
	if failed, err := s.Write(context.Background(), b); failed != 0 || err != nil {
		t.Fatal(failed, err)
	}
	n := 0
	for _, v := range []string{"FORWARDED", "DROPPED"} {
		for _, msgs := range readAll(t, broker, "auto."+v, nil) {
			n += len(msgs)
		}
	}
	if n != 40 {
		t.Errorf("%d records in auto-created topics, want 40", n)
	}

	s2 := newSink(t, "json", fmt.Sprintf("brokers: [%s]\ntopic: other.{{ verdict }}\nauto_create_topics: false\nmax_attempts: 2\nbackoff: {min: 1ms, max: 1ms}\n", broker))
	if failed, err := s2.Write(context.Background(), b); failed != 40 || err != nil {
		t.Fatalf("without auto-creation: failed=%d err=%v, want 40", failed, err)
	}
}

// TestLargeBatchSplit: a pipeline batch larger than the broker's
// message.max.bytes goes out in several produce requests.
func TestLargeBatchSplit(t *testing.T) {
	c := newCluster(t, kfake.SeedTopics(1, "big"), kfake.BrokerConfigs(map[string]string{"message.max.bytes": "100000"}))
	broker := c.ListenAddrs()[0]
	var requests atomic.Int32
	c.ControlKey(int16(kmsg.Produce), func(kmsg.Request) (kmsg.Response, error, bool) {
		c.KeepControl()
		requests.Add(1)
		return nil, nil, false
	})
	s := newSink(t, "json", fmt.Sprintf("brokers: [%s]\ntopic: big\nbatch_bytes: 90000\nmax_attempts: 1\n", broker))
	b := sinktest.Batch(0, 2000)
	defer b.Release()
	if failed, err := s.Write(context.Background(), b); failed != 0 || err != nil {
		t.Fatal(failed, err)
	}
	if n := len(readAll(t, broker, "big", nil)[0]); n != 2000 {
		t.Errorf("%d records, want 2000", n)
	}
	if r := requests.Load(); r < 5 {
		t.Errorf("%d produce requests, want the batch split", r)
	}
}

// TestThreeBrokers: partitions led by different brokers each get their
// records (produce requests are routed to the partition leaders).
func TestThreeBrokers(t *testing.T) {
	c, err := kfake.NewCluster(kfake.NumBrokers(3), kfake.SeedTopics(6, "multi"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	addrs := c.ListenAddrs()
	s := newSink(t, "protobuf", fmt.Sprintf("brokers: [%s, %s]\ntopic: multi\nkey: connection\n", addrs[0], addrs[1]))
	b := sinktest.Batch(0, 600)
	defer b.Release()
	if failed, err := s.Write(context.Background(), b); failed != 0 || err != nil {
		t.Fatal(failed, err)
	}
	got := readAll(t, addrs[2], "multi", nil)
	n := 0
	for p, msgs := range got {
		n += len(msgs)
		for _, m := range msgs {
			if murmur2Partition(m.Key, 6) != p {
				t.Fatalf("key %q in partition %d", m.Key, p)
			}
		}
	}
	if n != 600 || len(got) < 4 {
		t.Errorf("%d records over %d partitions, want 600 over most of 6", n, len(got))
	}
}

// TestUnkeyedSticky: the unkeyed records of one Write go to one partition
// in one request, and successive Writes take the partitions in turn.
func TestUnkeyedSticky(t *testing.T) {
	c := newCluster(t, kfake.SeedTopics(3, "sticky"))
	broker := c.ListenAddrs()[0]
	var requests atomic.Int32
	c.ControlKey(int16(kmsg.Produce), func(kmsg.Request) (kmsg.Response, error, bool) {
		c.KeepControl()
		requests.Add(1)
		return nil, nil, false
	})
	s := newSink(t, "json", fmt.Sprintf("brokers: [%s]\ntopic: sticky\n", broker))
	for i := 0; i < 6; i++ {
		b := sinktest.Batch(i*10, 10)
		if failed, err := s.Write(context.Background(), b); failed != 0 || err != nil {
			t.Fatal(failed, err)
		}
		b.Release()
	}
	if n := requests.Load(); n != 6 {
		t.Errorf("%d produce requests for 6 writes, want 6", n)
	}
	got := readAll(t, broker, "sticky", nil)
	for p := 0; p < 3; p++ {
		if len(got[p]) != 20 {
			t.Errorf("partition %d has %d records, want 20 (two writes of 10)", p, len(got[p]))
		}
	}
}

// TestNodeNamesKept: the sink remembers each node's header value under a
// copy of the name, not under the event's string, whose storage the
// batch reuses (then a remembered name would read as another).
func TestNodeNamesKept(t *testing.T) {
	c := newCluster(t, kfake.SeedTopics(1, "n"))
	broker := c.ListenAddrs()[0]
	s := newSink(t, "json", fmt.Sprintf("brokers: [%s]\ntopic: n\n", broker))
	names := sinktest.WriteNodes(t, s, "node-a", "node-b", "node-a", "node-c")
	var kept []string
	for k := range s.nodes {
		kept = append(kept, k)
	}
	slices.Sort(kept)
	if want := []string{"node-a", "node-b", "node-c"}; !slices.Equal(kept, want) {
		t.Errorf("nodes remembered as %q, want %q", kept, want)
	}
	for i, m := range readAll(t, broker, "n", nil)[0] {
		if h, _ := header(m, sinkutil.HeaderNode); h != names[i] {
			t.Errorf("record %d: node header %q, want %q", i, h, names[i])
		}
	}
}
