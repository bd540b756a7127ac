package nats

import (
	"context"
	"fmt"
	"os"
	"testing"

	"github.com/flowbus/flowbus/internal/sinktest"
	"github.com/flowbus/flowbus/pipeline"
)

// BenchmarkWrite: generated flows → the embedded server, batches of 512.
// JetStream: file stream, every PubAck awaited, Nats-Msg-Id on every
// message. One op is one flow. jetstream-late lets Write return before the
// PubAcks (Batch.LateDelivery), as the runtime does with memory buffers. With FLOWBUS_BENCH_NATS_URL set, the sink
// publishes to that server instead (to measure the client side alone).
func BenchmarkWrite(b *testing.B) {
	for _, bc := range []struct{ encoding, mode string }{
		{"protobuf", "jetstream"},
		{"protobuf", "jetstream-late"},
		{"json", "jetstream"},
		{"protobuf", "core"},
	} {
		b.Run(bc.encoding+"/"+bc.mode, func(b *testing.B) {
			js := "jetstream: {stream: BENCH, create: true, max_pending: 4000}"
			if bc.mode == "core" {
				js = ""
			}
			late := bc.mode == "jetstream-late"
			server := fmt.Sprintf("url: embedded\nembedded: {port: -1, store_dir: %s}", b.TempDir())
			if u := os.Getenv("FLOWBUS_BENCH_NATS_URL"); u != "" {
				server = "url: " + u
			}
			s := newSink(b, bc.encoding, fmt.Sprintf("%s\nsubject: hubble.flows.{{ verdict }}\n%s\n", server, js))
			sinktest.BenchWrite(b, pipeline.DefaultBatchSize, func(bt *pipeline.Batch) (int, error) {
				bt.SetLateDelivery(late)
				return s.Write(context.Background(), bt)
			})
			if late {
				// The last batches in flight resolve (outside the timing).
				if err := s.Close(context.Background()); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
