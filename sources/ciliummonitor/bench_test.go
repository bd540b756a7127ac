package ciliummonitor

import (
	"bytes"
	"context"
	"encoding/gob"
	"io"
	"log/slog"
	"testing"

	flowpb "github.com/flowbus/flowbus/flow"
	"github.com/flowbus/flowbus/flow/monitor"
	"github.com/flowbus/flowbus/pipeline"
)

// discard releases what it is given.
type discard struct{}

func (discard) Emit(_ context.Context, b *pipeline.Batch) error { b.Release(); return nil }
func (discard) Lost(flowpb.LostEventSource, int32, uint64)      {}

// BenchmarkConsume measures the source's work per payload: reading the
// gob stream and decoding a TCP/IPv4 trace sample into a batch.
func BenchmarkConsume(b *testing.B) {
	const perStream = 4096
	var buf bytes.Buffer
	enc := gob.NewEncoder(&buf)
	sample := traceSample(0, 0x10)
	for i := 0; i < perStream; i++ {
		if err := enc.Encode(&monitor.Payload{Type: monitor.PayloadSample, CPU: i % 2, Data: sample}); err != nil {
			b.Fatal(err)
		}
	}
	stream := buf.Bytes()
	s := &Source{batchSize: pipeline.DefaultBatchSize, node: "n", log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	m, err := newMetrics(nil)
	if err != nil {
		b.Fatal(err)
	}
	s.m = m
	rep := newReporter(s.log)
	b.ReportAllocs()
	b.SetBytes(int64(len(stream) / perStream))
	n := 0
	for b.Loop() {
		if n%perStream == 0 {
			b.StopTimer()
			r := bytes.NewReader(stream)
			b.StartTimer()
			if err := s.consume(context.Background(), r, discard{}, rep); err != nil {
				b.Fatal(err)
			}
		}
		n++
	}
}
