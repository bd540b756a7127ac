package file_test

import (
	"context"
	"io"
	"log/slog"
	"testing"

	"github.com/flowbus/flowbus/codec"
	"github.com/flowbus/flowbus/internal/cputime"
	"github.com/flowbus/flowbus/pipeline"
	filesink "github.com/flowbus/flowbus/sinks/file"
	"github.com/flowbus/flowbus/sources/generate"
)

// generated returns a batch of n generated flows.
func generated(n int) *pipeline.Batch {
	g := generate.NewGenerator(1)
	b := pipeline.NewBatch()
	for i := range n {
		g.Fill(b.Next(), 1_764_072_000_000_000_000+int64(i))
	}
	return b
}

// benchmarkEncode measures encoding one generated flow into a reused buffer.
func benchmarkEncode(b *testing.B, name string) {
	enc, err := codec.New(name)
	if err != nil {
		b.Fatal(err)
	}
	batch := generated(512)
	defer batch.Release()
	var buf []byte
	var bytes int
	b.ReportAllocs()
	cpu := cpuTime()
	i := 0
	for b.Loop() {
		buf, err = enc.Append(buf[:0], &batch.Events[i%512])
		if err != nil {
			b.Fatal(err)
		}
		bytes += len(buf)
		i++
	}
	b.ReportMetric(float64(bytes)/float64(i), "bytes/flow")
	b.ReportMetric(float64(cpuTime()-cpu)/float64(i), "cpu-ns/op")
}

// cpuTime is the CPU time the process used, in ns: on a shared machine it
// shows the cost of a benchmark better than the wall-clock time does.
func cpuTime() int64 { return int64(cputime.Process()) }

func BenchmarkEncodeJSON(b *testing.B)     { benchmarkEncode(b, "json") }
func BenchmarkEncodeProtobuf(b *testing.B) { benchmarkEncode(b, "protobuf") }

// benchmarkSink measures the file sink writing batches of generated flows
// to /dev/null, per flow.
func benchmarkSink(b *testing.B, encoding string) {
	s, err := pipeline.Make(&pipeline.Build{Name: "out", Encoding: encoding,
		Log: slog.New(slog.NewTextHandler(io.Discard, nil))}, node(b, "path: /dev/null"), filesink.New)
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	if err := s.Start(ctx); err != nil {
		b.Fatal(err)
	}
	defer s.Close(ctx)
	batch := generated(512)
	defer batch.Release()
	b.ReportAllocs()
	cpu := cpuTime()
	n := 0
	for b.Loop() {
		if failed, err := s.Write(ctx, batch); failed != 0 || err != nil {
			b.Fatal(failed, err)
		}
		n += batch.Len()
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(n), "ns/flow")
	b.ReportMetric(float64(cpuTime()-cpu)/float64(n), "cpu-ns/flow")
}

func BenchmarkSinkJSON(b *testing.B)     { benchmarkSink(b, "json") }
func BenchmarkSinkProtobuf(b *testing.B) { benchmarkSink(b, "protobuf") }
