package faults

// A sink whose broker is down at start starts unready and keeps retrying
// (no crash loop), and a Kafka lost_topic that does not exist does not
// wedge the sink.

import (
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"
	"google.golang.org/protobuf/proto"

	"github.com/flowbus/flowbus/flow/observer"

	"github.com/flowbus/flowbus/internal/sinktest"
)

// brokerDownAtStart runs generate → sink (block) with the broker away:
// flowbus must start, answer /healthz, report the sink unready on /readyz
// and keep running; up() then starts the broker, flowbus becomes ready,
// and after SIGTERM nothing is lost. It returns the summary's total.
func brokerDownAtStart(t *testing.T, sink string, up func()) summary {
	t.Helper()
	addr := freeAddr(t)
	cfg := writeConfig(t, t.TempDir(), fmt.Sprintf(`
node_name: n1
metrics: {listen: "%s"}
sources:
  gen: {type: generate, rate: 5000, seed: 8}
sinks:
  bus:
    inputs: [gen]
    encoding: protobuf
    buffer: {events: 4096, when_full: block}
    %s
`, addr, sink))
	p := start(t, cfg, nil)
	p.eventually("/healthz", func() bool { code, _ := get(addr, "/healthz"); return code == 200 })
	// The HTTP server answers before the pipeline runs ("not running");
	// once it runs, the sink is what keeps it unready.
	p.eventually("/readyz naming the sink", func() bool {
		code, body := get(addr, "/readyz")
		return code == 503 && strings.Contains(body, `sink "bus"`)
	})
	time.Sleep(time.Second)
	select {
	case <-p.done:
		t.Fatalf("flowbus exited with the broker down: %v\n%s", p.err, p.stderr)
	default:
	}
	up()
	p.eventually("/readyz once the broker is up", func() bool { code, _ := get(addr, "/readyz"); return code == 200 })
	p.eventually("deliveries", func() bool {
		return metric(addr, `flowbus_component_events_out_total{component="bus",kind="sink",type=`+sinkType(sink)+`}`) > 1000
	})
	p.signal(syscall.SIGTERM)
	s := parseSummary(t, p.wait())
	if s.Total.Lost != 0 {
		t.Errorf("block lost %d events while the broker was down at start", s.Total.Lost)
	}
	return s
}

func sinkType(sink string) string {
	if strings.HasPrefix(sink, "type: kafka") {
		return `"kafka"`
	}
	return `"nats"`
}

func TestKafkaBrokerDownAtStart(t *testing.T) {
	port := freePort(t)
	var c *kfake.Cluster
	s := brokerDownAtStart(t, fmt.Sprintf(`type: kafka
    brokers: [127.0.0.1:%d]
    topic: flows
    batch_timeout: 1s
    max_attempts: 1000
    backoff: {min: 10ms, max: 200ms}`, port), func() {
		var err error
		c, err = kfake.NewCluster(kfake.NumBrokers(1), kfake.Ports(port), kfake.SeedTopics(1, "flows"))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(c.Close)
	})
	sinktest.CheckStream(t, topicPayloads(t, fmt.Sprintf("127.0.0.1:%d", port), "flows"), s.Total)
}

func TestNATSBrokerDownAtStart(t *testing.T) {
	port, store := freePort(t), t.TempDir()
	s := brokerDownAtStart(t, fmt.Sprintf(`type: nats
    url: %s
    subject: hubble.flows.{{ verdict }}
    lost_subject: hubble.lost
    jetstream: {stream: HUBBLE, create: true}
    max_attempts: 1000
    backoff: {min: 10ms, max: 200ms}`, natsURL(port)), func() { natsServer(t, port, store) })
	sinktest.CheckStream(t, streamPayloads(t, natsURL(port), "HUBBLE"), s.Total)
}

// A Kafka lost_topic that does not exist (and may not be created): the
// broker refuses the first produce requests, so the first flows are lost
// and their LostEvent is due for a topic that is not there. The sink must
// not wedge on it: once the broker accepts again, flows are delivered, the
// run ends, the topic holds exactly the delivered flows, and the summary
// reconciles.
func TestKafkaMissingLostTopicDoesNotWedge(t *testing.T) {
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.Ports(0), kfake.SeedTopics(1, "flows"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	broker := c.ListenAddrs()[0]
	var down atomic.Bool
	down.Store(true)
	var refused atomic.Int64
	c.ControlKey(int16(kmsg.Produce), func(kmsg.Request) (kmsg.Response, error, bool) {
		c.KeepControl()
		if !down.Load() {
			return nil, nil, false
		}
		refused.Add(1)
		return nil, errors.New("broker down"), true
	})
	addr := freeAddr(t)
	cfg := writeConfig(t, t.TempDir(), outageConfig(addr, "block", fmt.Sprintf(`type: kafka
    brokers: [%s]
    topic: flows
    lost_topic: no.such.topic
    auto_create_topics: false
    batch_timeout: 2s
    max_attempts: 2
    backoff: {min: 5ms, max: 20ms}`, broker)))
	p := start(t, cfg, nil)
	acked := func() float64 { return metric(addr, `flowbus_sink_messages_acked_total{component="bus",type="kafka"}`) }
	p.eventually("refused produce requests", func() bool { return refused.Load() >= 4 })
	down.Store(false)
	p.eventually("flows delivered after the outage", func() bool { return acked() >= 5000 })
	s := parseSummary(t, p.wait())
	if s.Total.Lost == 0 || s.Total.Received != outageFlows {
		t.Errorf("summary %v", s.Total)
	}
	var flows uint64
	for _, p := range topicPayloads(t, broker, "flows") {
		var env observer.GetFlowsResponse
		if err := proto.Unmarshal(p, &env); err != nil {
			t.Fatal(err)
		}
		if env.GetFlow() != nil {
			flows++
		}
	}
	if flows != s.Total.Delivered {
		t.Errorf("topic flows holds %d records, summary delivered=%d", flows, s.Total.Delivered)
	}
}
