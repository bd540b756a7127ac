package e2e

import (
	"context"
	"fmt"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kfake"

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
// generate → protobuf → kafka path (kfake in process, acknowledging
// without storing): "none" is the plain generate source, "ack" the same
// with an Ack on every batch, resolved when the kafka sink's Write
// returns. One op is one flow.
func BenchmarkGenerateKafkaAck(b *testing.B) {
	for _, typ := range []string{"generate", "test-acked-generate"} {
		name := map[string]string{"generate": "none", "test-acked-generate": "ack"}[typ]
		b.Run(name, func(b *testing.B) {
			c := newKafka(b, kfake.BlackholeProduce())
			ackedBatches.Store(0)
			ackedOK.Store(0)
			measure(b, 1, b.N, func(int) string {
				return fmt.Sprintf(`
metrics: {listen: ""}
sources: {g: {type: %s, count: %d, seed: 1}}
sinks:
  k: {type: kafka, inputs: [g], brokers: [%q], topic: flows, encoding: protobuf}
`, typ, b.N, c.ListenAddrs()[0])
			}, lossless)
			if n, ok := ackedBatches.Load(), ackedOK.Load(); n != ok {
				b.Fatalf("%d batches emitted with an Ack, %d acked", n, ok)
			}
		})
	}
}

// runUntil runs the pipeline in cfg until its sinks delivered n events,
// reporting flows/s (to the last delivery, the shutdown excluded),
// cpu-ns/flow, allocs/flow and B/flow.
func runUntil(b *testing.B, cfg string, n int) {
	p, err := Build(cfg, b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	runtime.GC()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
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
	cancel()
	<-done
	flows := float64(n)
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
// protobuf records (generated flows, produced before the timer starts)
// consumed by the kafka source (consumer group, offsets committed after
// acknowledgement) into discard; kfake in process, 3 partitions. One op is
// one record.
func BenchmarkKafkaSourceDiscard(b *testing.B) {
	c := newKafka(b)
	broker := c.ListenAddrs()[0]
	w := &kafka.Writer{Addr: kafka.TCP(broker), Topic: "flows", Balancer: &kafka.RoundRobin{}, BatchSize: 5000, BatchTimeout: 5 * time.Millisecond}
	ps := payloads(b, b.N)
	hdr := []kafka.Header{{Key: sinkutil.HeaderContentType, Value: []byte(codec.ContentTypeProtobuf)}}
	for i := 0; i < len(ps); i += 5000 {
		msgs := make([]kafka.Message, 0, 5000)
		for _, p := range ps[i:min(i+5000, len(ps))] {
			msgs = append(msgs, kafka.Message{Value: p, Headers: hdr})
		}
		if err := w.WriteMessages(context.Background(), msgs...); err != nil {
			b.Fatal(err)
		}
	}
	w.Close()
	runUntil(b, fmt.Sprintf(`
metrics: {listen: ""}
sources:
  k: {type: kafka, brokers: [%q], topics: [flows], group: bench}
sinks: {d: {type: discard, inputs: [k]}}
`, broker), b.N)
}

// BenchmarkJetStreamSourceDiscard is the aggregation tier's JetStream
// figure: protobuf messages (published before the timer starts, memory
// storage) consumed by a durable pull consumer, each acked after
// acknowledgement, into discard; nats-server in process. One op is one
// message.
func BenchmarkJetStreamSourceDiscard(b *testing.B) {
	srv, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, NoLog: true, NoSigs: true, JetStream: true, StoreDir: b.TempDir()})
	if err != nil {
		b.Fatal(err)
	}
	go srv.Start()
	if !srv.ReadyForConnections(10 * time.Second) {
		b.Fatal("nats-server not ready")
	}
	defer func() { srv.Shutdown(); srv.WaitForShutdown() }()
	nc, err := nats.Connect(srv.ClientURL())
	if err != nil {
		b.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(10000))
	if _, err := js.CreateStream(context.Background(), jetstream.StreamConfig{Name: "HUBBLE", Subjects: []string{"hubble.>"}, Storage: jetstream.MemoryStorage}); err != nil {
		b.Fatal(err)
	}
	for i, p := range payloads(b, b.N) {
		m := &nats.Msg{Subject: "hubble.flows", Data: p, Header: nats.Header{sinkutil.HeaderContentType: []string{codec.ContentTypeProtobuf}}}
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
  n: {type: nats, url: %q, jetstream: {stream: HUBBLE, durable: bench, max_ack_pending: 20000}}
sinks: {d: {type: discard, inputs: [n]}}
`, srv.ClientURL()), b.N)
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
