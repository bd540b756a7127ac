package kafka

import (
	"context"
	"fmt"
	"testing"

	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/flowbus/flowbus/internal/sinktest"
	"github.com/flowbus/flowbus/pipeline"
)

// BenchmarkWrite: generated flows → kfake (in process, 3 partitions),
// batches of 512, acks all. One op is one flow.
func BenchmarkWrite(b *testing.B) {
	for _, bc := range []struct{ encoding, compression, key string }{
		{"protobuf", "none", "none"},
		{"protobuf", "lz4", "connection"},
		{"json", "none", "connection"},
	} {
		b.Run(fmt.Sprintf("%s/%s/key=%s", bc.encoding, bc.compression, bc.key), func(b *testing.B) {
			c := newCluster(b, kfake.SeedTopics(3, "bench"))
			s := newSink(b, bc.encoding, fmt.Sprintf("brokers: [%s]\ntopic: bench\ncompression: %s\nkey: %s\n", c.ListenAddrs()[0], bc.compression, bc.key))
			sinktest.BenchWrite(b, pipeline.DefaultBatchSize, func(bt *pipeline.Batch) (int, error) {
				return s.Write(context.Background(), bt)
			})
		})
	}
}
