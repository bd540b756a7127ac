package pipeline_test

import (
	"context"
	"fmt"
	"testing"

	"google.golang.org/protobuf/types/known/timestamppb"

	flowpb "github.com/flowbus/flowbus/flow"
	"github.com/flowbus/flowbus/pipeline"
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
	pipeline.RegisterSource(pipeline.Spec{Type: "bench-source", Summary: "benchmark source"}, func(b *pipeline.Build, _ *struct{}) (*benchSource, error) {
		return &benchSource{n: benchN}, nil
	})
	pipeline.RegisterSink(pipeline.Spec{Type: "bench-nop", Summary: "benchmark sink"}, func(b *pipeline.Build, _ *struct{}) (nopSink, error) {
		return nopSink{}, nil
	})
	pipeline.RegisterTransform(pipeline.Spec{Type: "bench-pass", Summary: "benchmark transform"}, pipeline.DropsNone, func(b *pipeline.Build, _ *struct{}) (passTransform, error) {
		return passTransform{}, nil
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
