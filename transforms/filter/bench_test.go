package filter_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"testing"

	"gopkg.in/yaml.v3"

	flowpb "github.com/flowbus/flowbus/flow"
	"github.com/flowbus/flowbus/flowfilter"
	"github.com/flowbus/flowbus/internal/testflow"
	"github.com/flowbus/flowbus/pipeline"
	"github.com/flowbus/flowbus/transforms/filter"
)

// BenchmarkProcess measures the transform on full batches of generated
// flows (one batch per op); ns/flow is the cost per flow.
func BenchmarkProcess(b *testing.B) {
	r := rand.New(rand.NewPCG(3, 4))
	flows := make([]*flowpb.Flow, pipeline.DefaultBatchSize)
	for i := range flows {
		flows[i] = testflow.Random(r)
	}
	var doc yaml.Node
	if err := yaml.Unmarshal([]byte(`[{verdict: [DROPPED]}, {source_pod: [kube-system/], protocol: [udp]},
		{experimental: {cel_expression: ["has(_flow.l4.TCP) && _flow.l4.TCP.destination_port == 443u"]}}]`), &doc); err != nil {
		b.Fatal(err)
	}
	allow, err := flowfilter.ParseFilters(doc.Content[0])
	if err != nil {
		b.Fatal(err)
	}
	f, err := flowfilter.New(allow, nil)
	if err != nil {
		b.Fatal(err)
	}
	tr := filter.NewTransform(f)
	batch := pipeline.NewBatch()
	b.ReportAllocs()
	n := 0
	for b.Loop() {
		batch.Truncate(0)
		for _, fl := range flows {
			batch.Next().Flow = fl
		}
		tr.Process(batch)
		n += len(flows)
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(n), "ns/flow")
}

// BenchmarkFileFilterDiscard runs the whole pipeline file → filter →
// discard on a corpus of Hubble JSON lines; ns/op is per event.
func BenchmarkFileFilterDiscard(b *testing.B) {
	path := filepath.Join(b.TempDir(), "flows.jsonl")
	const lines = 20000
	writeCorpus(b, path, lines)
	for _, tc := range []struct{ name, filter string }{
		{"no-filter", "    allow: []"},
		{"typed-and-cel", e2eFilter},
	} {
		b.Run(tc.name, func(b *testing.B) {
			cfg := fmt.Sprintf("metrics: {listen: \"\"}\nsources: {in: {type: file, path: %q}}\ntransforms:\n  f:\n    type: filter\n    inputs: [in]\n%s\nsinks: {out: {type: discard, inputs: [f]}}\n", path, tc.filter)
			b.ReportAllocs()
			var events uint64
			for b.Loop() {
				p, err := loadPipeline(b, cfg)
				if err != nil {
					b.Fatal(err)
				}
				s, err := p.Run(context.Background())
				if err != nil {
					b.Fatal(err)
				}
				events += s.Total.Received
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(events), "ns/event")
			b.ReportMetric(float64(events)/b.Elapsed().Seconds(), "events/s")
		})
	}
}
