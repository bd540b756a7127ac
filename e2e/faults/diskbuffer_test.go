package faults

import (
	"errors"
	"fmt"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/flowbus/flowbus/internal/sinktest"
)

// diskBufferConfig is generate → sink behind a disk buffer in dir. The
// sink gives up within a few attempts: the disk buffer, not the sink's
// retries, rides out the outage.
func diskBufferConfig(addr, dir string, count, seed int, sink string) string {
	return fmt.Sprintf(`
node_name: n1
lost_event_interval: 50ms
metrics: {listen: "%s"}
sources:
  gen: {type: generate, count: %d, rate: 10000, seed: %d}
sinks:
  bus:
    inputs: [gen]
    encoding: protobuf
    buffer: {type: disk, path: %q, max_bytes: 256MiB}
    max_attempts: 3
    backoff: {min: 10ms, max: 50ms}
    %s
`, addr, count, seed, dir, sink)
}

var seqStreamRE = regexp.MustCompile(`(?m)^n1/bus/(\d+): events=(\d+) last=(\d+) missing=(\d+) duplicates=(\d+)$`)

type seqStream struct{ events, last, missing, dups uint64 }

// checkSeq runs `flowbus check-seq` and returns its streams in the order
// of their epochs.
func checkSeq(t *testing.T, args ...string) []seqStream {
	t.Helper()
	out, err := exec.Command(binary, append([]string{"check-seq"}, args...)...).CombinedOutput()
	t.Logf("check-seq:\n%s", out)
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		t.Fatal(err)
	}
	var streams []seqStream
	for _, m := range seqStreamRE.FindAllStringSubmatch(string(out), -1) {
		var s seqStream
		for i, p := range []*uint64{&s.events, &s.last, &s.missing, &s.dups} {
			*p, _ = strconv.ParseUint(m[i+2], 10, 64)
		}
		streams = append(streams, s)
	}
	return streams
}

// Kafka away for longer than any retry budget: flowbus is SIGKILLed in the
// middle of the outage with flows on disk; the next run, started while the
// broker is still away, delivers all of them once it is back (but for a
// record the kill tore, reported lost), and check-seq finds no gap,
// duplicates only at the crash seam.
func TestDiskBufferKafkaOutageSIGKILL(t *testing.T) {
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
	dir, addr := t.TempDir(), freeAddr(t)
	sink := fmt.Sprintf("type: kafka\n    brokers: [%s]\n    topic: flows", broker)
	p1 := start(t, writeConfig(t, t.TempDir(), diskBufferConfig(addr, dir, 0, 7, sink)), nil)
	in := func() float64 {
		return metric(addr, `flowbus_component_events_in_total{component="bus",kind="sink",type="kafka"}`)
	}
	p1.eventually("flows delivered before the outage", func() bool {
		return metric(addr, `flowbus_sink_messages_acked_total{component="bus",type="kafka"}`) >= 3000
	})
	down.Store(true)
	before := in()
	defer func() {
		if t.Failed() {
			t.Logf("in %v (before the outage %v), refused %d; first run's stderr:\n%s", in(), before, refused.Load(), p1.stderr)
		}
	}()
	// The sink's in counts a batch when the disk buffer takes it, before
	// the append: one batch (at most 512 events) may still be in memory
	// when the kill lands, and is lost with the process.
	p1.eventually("flows buffered on disk during the outage", func() bool { return in() >= before+10000+512 && refused.Load() >= 10 })
	p1.cmd.Process.Signal(syscall.SIGKILL)
	<-p1.done

	// The next run starts with the broker still away, then it comes back.
	addr2 := freeAddr(t)
	p2 := start(t, writeConfig(t, t.TempDir(), diskBufferConfig(addr2, dir, 30000, 8, sink)), nil)
	r0 := refused.Load()
	p2.eventually("refused produce requests after the restart", func() bool { return refused.Load() >= r0+3 })
	down.Store(false)
	stderr2 := p2.wait()
	s := parseSummary(t, stderr2)
	t.Logf("second run: %v", s.Total)
	// The kill may land in the middle of the record being appended: the
	// kernel can leave a write(2) half done when the process dies. The
	// next run finds that record torn and reports its events (one batch at
	// most) as lost; nothing else may be lost.
	torn := strings.Contains(stderr2, "torn record")
	if s.Total.Recovered < 10000 || s.Total.Buffered != 0 || s.Total.Delivered+s.Total.Lost != s.Total.Recovered+30000 ||
		(s.Total.Lost != 0 && (!torn || s.Total.Lost > 512)) {
		t.Errorf("second run: %v; stderr:\n%s", s.Total, stderr2)
	}
	payloads := topicPayloads(t, broker, "flows")
	flows, lost := sinktest.CountStream(t, payloads)
	if lost != s.Total.Lost {
		t.Errorf("LostEvents on the bus count %d, the summary %d", lost, s.Total.Lost)
	}
	streams := checkSeq(t, "--brokers", broker, "--topic", "flows")
	if len(streams) != 2 {
		t.Fatalf("check-seq found %d streams, want 2 (one per run)", len(streams))
	}
	first, second := streams[0], streams[1]
	// A torn record's loss goes out as a LostEvent record of the second
	// run, which carries a flowbus-seq like every record.
	lostRecords := uint64(len(payloads)) - flows
	if first.missing != 0 || second.missing != 0 || second.events != 30000+lostRecords || second.dups != 0 {
		t.Errorf("check-seq: first run %+v, second run %+v (%d LostEvent records)", first, second, lostRecords)
	}
	// Duplicates only at the crash seam: at most the batches in flight when
	// flowbus was killed (a batch is at most 512 events).
	if first.dups > 1024 || flows+lostRecords != first.events+first.dups+second.events {
		t.Errorf("%d flows on the bus; check-seq: first run %+v, second %+v", flows, first, second)
	}
	t.Logf("crash seam: %d duplicates; %d flows recovered from disk", first.dups, s.Total.Recovered)
}

// A JetStream server stops for longer than the sink's retry budget and
// starts again: nothing is lost, the summary reconciles, and check-seq
// finds every number once.
func TestDiskBufferNATSOutage(t *testing.T) {
	port, store, addr := freePort(t), t.TempDir(), freeAddr(t)
	srv := natsServer(t, port, store)
	sink := fmt.Sprintf(`type: nats
    url: %s
    subject: hubble.flows
    jetstream: {stream: HUBBLE, create: true}
    ack_timeout: 500ms`, natsURL(port))
	p := start(t, writeConfig(t, t.TempDir(), diskBufferConfig(addr, t.TempDir(), 80000, 7, sink)), nil)
	series := func(name string) float64 { return metric(addr, name+`{component="bus",type="nats"}`) }
	p.eventually("flows delivered before the outage", func() bool { return series("flowbus_sink_messages_acked_total") >= 3000 })
	srv.Shutdown()
	srv.WaitForShutdown()
	failed := series("flowbus_sink_messages_failed_total")
	p.eventually("writes given up by the sink during the outage", func() bool { return series("flowbus_sink_messages_failed_total") >= failed+400 })
	srv = natsServer(t, port, store)
	s := parseSummary(t, p.wait())
	t.Logf("summary: %v", s.Total)
	if s.Total.Received != 80000 || s.Total.Delivered != 80000 || s.Total.Lost != 0 || s.Total.Buffered != 0 {
		t.Errorf("summary %v", s.Total)
	}
	streams := checkSeq(t, "--nats-url", srv.ClientURL(), "--stream", "HUBBLE")
	if len(streams) != 1 || streams[0].events != 80000 || streams[0].missing != 0 {
		t.Errorf("check-seq: %+v", streams)
	}
}
