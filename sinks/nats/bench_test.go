package nats

import (
	"context"
	"fmt"
	"testing"

	"github.com/flowbus/flowbus/pipeline"
	"github.com/flowbus/flowbus/sinks/internal/sinktest"
)

// BenchmarkWrite: generated flows → the embedded server, batches of 512.
// JetStream: file stream, every PubAck awaited, Nats-Msg-Id on every
// message. One op is one flow.
func BenchmarkWrite(b *testing.B) {
	for _, bc := range []struct{ encoding, mode string }{
		{"protobuf", "jetstream"},
		{"json", "jetstream"},
		{"protobuf", "core"},
	} {
		b.Run(bc.encoding+"/"+bc.mode, func(b *testing.B) {
			js := "jetstream: {stream: BENCH, create: true, max_pending: 4000}"
			if bc.mode == "core" {
				js = ""
			}
			s := newSink(b, bc.encoding, fmt.Sprintf("url: embedded\nembedded: {port: -1, store_dir: %s}\nsubject: hubble.flows.{{ verdict }}\n%s\n", b.TempDir(), js))
			sinktest.BenchWrite(b, pipeline.DefaultBatchSize, func(bt *pipeline.Batch) (int, error) {
				return s.Write(context.Background(), bt)
			})
		})
	}
}
