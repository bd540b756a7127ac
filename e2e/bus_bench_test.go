package e2e

import (
	"context"
	"flag"
	"fmt"
	"os"
	"runtime"
	"runtime/debug"
	"runtime/pprof"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/segmentio/kafka-go"

	"github.com/flowbus/flowbus/codec"
	"github.com/flowbus/flowbus/internal/sinkutil"
	"github.com/flowbus/flowbus/pipeline"
	"github.com/flowbus/flowbus/sources/generate"
)

// ackedGenerate is the generate source with an Ack on every batch, as an
// acknowledging source (kafka, nats) attaches one: the benchmarks compare
// it with plain generate to measure what acknowledgements cost the
// runtime.
type ackedGenerate struct {
	*generate.Source
}

// ackedOutput attaches an Ack to every batch it emits.
type ackedOutput struct {
	pipeline.Output
}

var ackedBatches, ackedOK atomic.Int64

func (o ackedOutput) Emit(ctx context.Context, b *pipeline.Batch) error {
	ackedBatches.Add(1)
	b.SetAck(pipeline.NewAck(func(ok bool) {
		if ok {
			ackedOK.Add(1)
		}
	}))
	return o.Output.Emit(ctx, b)
}

func (s ackedGenerate) Run(ctx context.Context, out pipeline.Output) error {
	return s.Source.Run(ctx, ackedOutput{out})
}

func init() {
	pipeline.RegisterSource(pipeline.Spec{Type: "test-acked-generate", Summary: "generate, with an Ack on every batch (benchmarks)"},
		func(b *pipeline.Build, o *generate.Options) (ackedGenerate, error) {
			s, err := generate.New(b, o)
			return ackedGenerate{s}, err
		})
}

// BenchmarkGenerateKafkaAck is the cost of acknowledgements on the
// generate → protobuf → kafka path (kfake in another process,
// acknowledging without storing): "none" is the plain generate source,
// "ack" the same with an Ack on every batch, resolved when the kafka
// sink's Write returns. -count runs each one its count of times in a row:
// to compare them under the same load, run the benchmark several times
// with -count 1, so that the two alternate. One op is one flow.
func BenchmarkGenerateKafkaAck(b *testing.B) {
	for _, typ := range []string{"generate", "test-acked-generate"} {
		name := map[string]string{"generate": "none", "test-acked-generate": "ack"}[typ]
		b.Run(name, func(b *testing.B) {
			br := startBroker(b, brokerKfakeBlackhole)
			ackedBatches.Store(0)
			ackedOK.Store(0)
			runUntil(b, fmt.Sprintf(`
metrics: {listen: ""}
sources: {g: {type: %s, count: %d, seed: 1}}
sinks:
  k: {type: kafka, inputs: [g], brokers: [%q], topic: flows, encoding: protobuf}
`, typ, b.N, br.Addr), b.N, br)
			if n, ok := ackedBatches.Load(), ackedOK.Load(); n != ok {
				b.Fatalf("%d batches emitted with an Ack, %d acked", n, ok)
			}
		})
	}
}

// timedProfile, when set, is where runUntil writes a CPU profile of its
// timed part alone (-cpuprofile also holds the records' production).
var timedProfile = flag.String("e2e.timedprofile", "", "write a CPU profile of the bus benchmarks' timed part to this file")

// gcPercent, when set, is the GOGC of this process during the bus
// benchmarks' timed part, as GOGC=N in the environment of a flowbus
// process would set it; the broker's process, started with this one's
// environment, keeps its own.
var gcPercent = flag.Int("e2e.gogc", 0, "GOGC of flowbus's process in the bus benchmarks' timed part (0: as the environment says)")

// runUntil runs the pipeline in cfg until its sinks delivered n events,
// reporting flows/s (to the last delivery, the shutdown excluded),
// cpu-ns/flow (this process: flowbus alone when the broker runs in
// another), allocs/flow, B/flow and, with a broker br,
// broker-cpu-ns/flow.
func runUntil(b *testing.B, cfg string, n int, br *broker) {
	p, err := Build(cfg, b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	if *gcPercent != 0 {
		defer debug.SetGCPercent(debug.SetGCPercent(*gcPercent))
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	runtime.GC()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	var brokerCPU0 time.Duration
	if br != nil {
		brokerCPU0 = br.CPUTime(b)
	}
	if *timedProfile != "" {
		f, err := os.Create(*timedProfile)
		if err != nil {
			b.Fatal(err)
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			b.Fatal(err)
		}
		defer pprof.StopCPUProfile()
	}
	cpu0 := CPUTime()
	b.ResetTimer()
	start := time.Now()
	done := make(chan *pipeline.Summary, 1)
	go func() {
		s, err := p.Run(ctx)
		if err != nil {
			b.Error(err)
		}
		done <- s
	}()
	for p.Summary().Total.Delivered < uint64(n) {
		if time.Since(start) > 5*time.Minute {
			b.Fatalf("delivered %d of %d in 5 minutes", p.Summary().Total.Delivered, n)
		}
		time.Sleep(time.Millisecond)
	}
	wall := time.Since(start)
	b.StopTimer()
	cpu := CPUTime() - cpu0
	runtime.ReadMemStats(&after)
	var brokerCPU time.Duration
	if br != nil {
		brokerCPU = br.CPUTime(b) - brokerCPU0
	}
	cancel()
	<-done
	flows := float64(n)
	if br != nil {
		b.ReportMetric(float64(brokerCPU.Nanoseconds())/flows, "broker-cpu-ns/flow")
	}
	b.ReportMetric(flows/wall.Seconds(), "flows/s")
	b.ReportMetric(float64(cpu.Nanoseconds())/flows, "cpu-ns/flow")
	b.ReportMetric(float64(after.Mallocs-before.Mallocs)/flows, "allocs/flow")
	b.ReportMetric(float64(after.TotalAlloc-before.TotalAlloc)/flows, "B/flow")
}

// payloads returns n generated flows encoded as protobuf envelopes.
func payloads(b *testing.B, n int) [][]byte {
	g := generate.NewGenerator(1)
	bt := pipeline.NewBatch()
	defer bt.Release()
	out := make([][]byte, 0, n)
	for len(out) < n {
		bt.Truncate(0)
		e := bt.Next()
		g.Fill(e, time.Now().UnixNano())
		v, err := codec.Protobuf{}.Append(nil, e)
		if err != nil {
			b.Fatal(err)
		}
		out = append(out, v)
	}
	return out
}

// BenchmarkKafkaSourceDiscard is the aggregation tier's Kafka figure:
// protobuf GetFlowsResponse records of generated (enriched) flows,
// produced before the timer starts, consumed by the kafka source (consumer
// group, offsets committed after acknowledgement) into discard. kfake runs
// in another process (1 broker, 3 partitions): cpu-ns/flow is flowbus's,
// broker-cpu-ns/flow kfake's. One op is one record.
func BenchmarkKafkaSourceDiscard(b *testing.B) {
	br := startBroker(b, brokerKfake)
	// Batches stay under 1 MB: kfake takes bigger ones, which real
	// brokers refuse and kafka-go's reader then stalls on.
	const perBatch = 1000
	w := &kafka.Writer{Addr: kafka.TCP(br.Addr), Topic: "flows", Balancer: &kafka.RoundRobin{}, BatchSize: perBatch, BatchBytes: 1 << 20, BatchTimeout: 5 * time.Millisecond}
	ps := payloads(b, b.N)
	hdr := []kafka.Header{{Key: sinkutil.HeaderContentType, Value: []byte(codec.ContentTypeProtobuf)}}
	msgs := make([]kafka.Message, 0, 3*perBatch)
	for i := 0; i < len(ps); i += cap(msgs) {
		msgs = msgs[:0]
		for _, p := range ps[i:min(i+cap(msgs), len(ps))] {
			msgs = append(msgs, kafka.Message{Value: p, Headers: hdr})
		}
		if err := w.WriteMessages(context.Background(), msgs...); err != nil {
			b.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		b.Fatal(err)
	}
	runUntil(b, fmt.Sprintf(`
metrics: {listen: ""}
sources:
  k: {type: kafka, brokers: [%q], topics: [flows], group: bench}
sinks: {d: {type: discard, inputs: [k]}}
`, br.Addr), b.N, br)
}

// BenchmarkJetStreamSourceDiscard is the aggregation tier's JetStream
// figure: protobuf GetFlowsResponse messages of generated (enriched)
// flows, published before the timer starts (memory storage), consumed by a
// durable pull consumer, each acked after acknowledgement, into discard.
// nats-server runs in another process: cpu-ns/flow is flowbus's,
// broker-cpu-ns/flow the server's. One op is one message.
func BenchmarkJetStreamSourceDiscard(b *testing.B) {
	br := startBroker(b, brokerNATS)
	nc, err := nats.Connect(br.Addr)
	if err != nil {
		b.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(10000))
	const stream = "HUBBLE"
	if _, err := js.CreateStream(context.Background(), jetstream.StreamConfig{Name: stream, Subjects: []string{stream + ".>"}, Storage: jetstream.MemoryStorage}); err != nil {
		b.Fatal(err)
	}
	for i, p := range payloads(b, b.N) {
		m := &nats.Msg{Subject: stream + ".flows", Data: p, Header: nats.Header{sinkutil.HeaderContentType: []string{codec.ContentTypeProtobuf}}}
		if _, err := js.PublishMsgAsync(m); err != nil {
			b.Fatal(err)
		}
		if i%5000 == 4999 {
			<-js.PublishAsyncComplete()
		}
	}
	<-js.PublishAsyncComplete()
	runUntil(b, fmt.Sprintf(`
metrics: {listen: ""}
sources:
  n: {type: nats, url: %q, jetstream: {stream: %s, durable: bench, max_ack_pending: 20000}}
sinks: {d: {type: discard, inputs: [n]}}
`, br.Addr, stream), b.N, br)
}

// BenchmarkGenerateDiscardAck isolates the runtime's share of the
// acknowledgements: generate → discard, without ("none") and with ("ack")
// an Ack on every batch. One op is one flow.
func BenchmarkGenerateDiscardAck(b *testing.B) {
	for _, typ := range []string{"generate", "test-acked-generate"} {
		name := map[string]string{"generate": "none", "test-acked-generate": "ack"}[typ]
		b.Run(name, func(b *testing.B) {
			measure(b, 1, b.N, func(int) string {
				return fmt.Sprintf(`
metrics: {listen: ""}
sources: {g: {type: %s, count: %d, seed: 1}}
sinks: {d: {type: discard, inputs: [g]}}
`, typ, b.N)
			}, lossless)
		})
	}
}
