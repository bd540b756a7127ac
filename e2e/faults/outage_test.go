package faults

import (
	"errors"
	"fmt"
	"sync/atomic"
	"testing"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/flowbus/flowbus/internal/sinktest"
)

// outageCase is one broker outage in the middle of a finite stream.
type outageCase struct {
	whenFull string
	// sink is the sink's own keys; retries are generous with block (the
	// outage is shorter than the retry budget) and short with drop_newest.
	retries string
}

var outageCases = []outageCase{
	{"block", "max_attempts: 1000\n    backoff: {min: 10ms, max: 100ms}"},
	{"drop_newest", "max_attempts: 2\n    backoff: {min: 5ms, max: 20ms}"},
}

const outageFlows = 30000

// outageConfig is generate → sink, lost events reported every 50ms.
func outageConfig(addr, whenFull, sink string) string {
	return fmt.Sprintf(`
node_name: n1
lost_event_interval: 50ms
metrics: {listen: "%s"}
sources:
  gen: {type: generate, count: %d, rate: 15000, seed: 6}
sinks:
  bus:
    inputs: [gen]
    encoding: protobuf
    buffer: {events: 1024, when_full: %s}
    %s
`, addr, outageFlows, whenFull, sink)
}

// checkOutage checks the summary of an outage run: everything emitted was
// received and reconciles, block lost nothing, and the bus holds every
// delivered flow once and LostEvents that count the summary's lost.
func checkOutage(t *testing.T, whenFull, stderr string, payloads [][]byte) {
	t.Helper()
	s := parseSummary(t, stderr)
	t.Logf("%s: %v", whenFull, s.Total)
	if s.Total.Received != outageFlows {
		t.Errorf("received %d, want %d", s.Total.Received, outageFlows)
	}
	if whenFull == "block" {
		if s.Total.Lost != 0 {
			t.Errorf("block lost %d events", s.Total.Lost)
		}
		sinktest.CheckStream(t, payloads, s.Total)
		return
	}
	// A publish whose acknowledgement timed out is given up and counted as
	// lost, though the broker may have stored it: with drop_newest the bus
	// can hold up to `lost` more flows than were acknowledged, never fewer.
	flows, lost := sinktest.CountStream(t, payloads)
	if flows < s.Total.Delivered || flows > s.Total.Delivered+s.Total.Lost {
		t.Errorf("the bus holds %d flows, summary delivered=%d lost=%d", flows, s.Total.Delivered, s.Total.Lost)
	}
	if lost != s.Total.Lost {
		t.Errorf("LostEvents on the bus count %d, summary lost=%d", lost, s.Total.Lost)
	}
}

// A NATS server (JetStream, file store) stops in the middle of the stream
// and starts again on the same port and store.
func TestNATSOutageMidStream(t *testing.T) {
	for _, tc := range outageCases {
		t.Run(tc.whenFull, func(t *testing.T) {
			port, store, addr := freePort(t), t.TempDir(), freeAddr(t)
			srv := natsServer(t, port, store)
			cfg := writeConfig(t, t.TempDir(), outageConfig(addr, tc.whenFull, fmt.Sprintf(`type: nats
    url: %s
    subject: hubble.flows.{{ verdict }}
    lost_subject: hubble.lost
    jetstream: {stream: HUBBLE, create: true}
    ack_timeout: 500ms
    %s`, natsURL(port), tc.retries)))
			p := start(t, cfg, nil)
			series := func(name string) float64 {
				return metric(addr, name+`{component="bus",type="nats"}`)
			}
			p.eventually("flows delivered before the outage", func() bool { return series("flowbus_sink_messages_acked_total") >= 3000 })
			srv.Shutdown()
			srv.WaitForShutdown()
			retried := series("flowbus_sink_messages_retried_total")
			p.eventually("retries during the outage", func() bool { return series("flowbus_sink_messages_retried_total") >= retried+10 })
			srv = natsServer(t, port, store)
			stderr := p.wait()
			checkOutage(t, tc.whenFull, stderr, streamPayloads(t, srv.ClientURL(), "HUBBLE"))
		})
	}
}

// A Kafka broker (kfake) refuses every produce request in the middle of
// the stream (it closes the connection), then accepts them again.
func TestKafkaOutageMidStream(t *testing.T) {
	for _, tc := range outageCases {
		t.Run(tc.whenFull, func(t *testing.T) {
			c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.Ports(0), kfake.SeedTopics(1, "flows"))
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			broker := c.ListenAddrs()[0]
			var down atomic.Bool
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
			cfg := writeConfig(t, t.TempDir(), outageConfig(addr, tc.whenFull, fmt.Sprintf(`type: kafka
    brokers: [%s]
    topic: flows
    batch_timeout: 2s
    %s`, broker, tc.retries)))
			p := start(t, cfg, nil)
			p.eventually("flows delivered before the outage", func() bool {
				return metric(addr, `flowbus_sink_messages_acked_total{component="bus",type="kafka"}`) >= 3000
			})
			down.Store(true)
			p.eventually("refused produce requests", func() bool { return refused.Load() >= 20 })
			down.Store(false)
			stderr := p.wait()
			checkOutage(t, tc.whenFull, stderr, topicPayloads(t, broker, "flows"))
		})
	}
}
