package pipeline_test

import (
	"context"
	"fmt"
	"testing"

	"google.golang.org/protobuf/types/known/timestamppb"
	"gopkg.in/yaml.v3"

	flowpb "github.com/flowbus/flowbus/flow"
	"github.com/flowbus/flowbus/pipeline"
	"github.com/flowbus/flowbus/pipeline/config"
)

// benchSource emits n events in full batches, doing as little work per
// event as a source can (it reuses the slots' Flow storage), so the
// benchmarks measure the runtime.
type benchSource struct{ n int }

var benchTime = timestamppb.Now()

func (s *benchSource) Run(ctx context.Context, out pipeline.Output) error {
	for i := 0; i < s.n; {
		b := pipeline.NewBatch()
		for j := 0; j < pipeline.DefaultBatchSize && i < s.n; j++ {
			e := b.Next()
			f := e.FlowStorage()
			f.Time = benchTime
			f.Verdict = flowpb.Verdict_FORWARDED
			e.Time = benchTime
			i++
		}
		if err := out.Emit(ctx, b); err != nil {
			return nil
		}
	}
	return nil
}

type nopSink struct{}

func (nopSink) Write(context.Context, *pipeline.Batch) (int, error) { return 0, nil }
func (nopSink) Close(context.Context) error                         { return nil }

type passTransform struct{}

func (passTransform) Process(*pipeline.Batch) {}

var benchN int

func init() {
	pipeline.RegisterSource("bench-source", func(b *pipeline.Build, n *yaml.Node) (pipeline.Source, error) {
		return &benchSource{n: benchN}, config.Decode(n, &struct{}{})
	})
	pipeline.RegisterSink("bench-nop", func(b *pipeline.Build, n *yaml.Node) (pipeline.Sink, error) {
		return nopSink{}, config.Decode(n, &struct{}{})
	})
	pipeline.RegisterTransform("bench-pass", pipeline.DropsNone, func(b *pipeline.Build, n *yaml.Node) (pipeline.Transform, error) {
		return passTransform{}, config.Decode(n, &struct{}{})
	})
}

// BenchmarkRuntime measures the runtime's cost per event: a source that
// does almost nothing, through buffers and goroutines, into sinks that do
// nothing. ns/op and allocs/op are per event.
func BenchmarkRuntime(b *testing.B) {
	for _, tc := range []struct{ name, graph string }{
		{"source-sink", `
sinks: {s: {type: bench-nop, inputs: [g]}}`},
		{"source-transform-sink", `
transforms: {t: {type: bench-pass, inputs: [g]}}
sinks: {s: {type: bench-nop, inputs: [t]}}`},
		{"source-2sinks", `
sinks:
  s1: {type: bench-nop, inputs: [g]}
  s2: {type: bench-nop, inputs: [g]}`},
	} {
		b.Run(tc.name, func(b *testing.B) {
			benchN = b.N
			p := load(b, fmt.Sprintf("metrics: {listen: \"\"}\nsources: {g: {type: bench-source}}\n%s\n", tc.graph))
			b.ReportAllocs()
			b.ResetTimer()
			s, err := p.Run(context.Background())
			b.StopTimer()
			if err != nil {
				b.Fatal(err)
			}
			if want := uint64(b.N * len(s.Sinks)); s.Total.Delivered != want {
				b.Fatalf("delivered %d, want %d", s.Total.Delivered, want)
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
		})
	}
}
