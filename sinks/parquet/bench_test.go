package parquet_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/flowbus/flowbus/internal/cputime"
	"github.com/flowbus/flowbus/pipeline"
	"github.com/flowbus/flowbus/sources/generate"
)

// BenchmarkParquet measures the sink writing batches of 512 generated
// flows (one minute of flows per hour partition) to zstd Parquet files:
// per flow, the CPU time (cpu-ns/op, and flows/s of CPU time) and the
// bytes on disk once the files are complete. "sorted" is the default,
// rows written in ordered runs (sort_rows), "sorted_better" with
// compression_level better, "sorted_4096" in shorter runs, and "arrival"
// writes them as they come (sort_rows: 0).
func BenchmarkParquet(b *testing.B) {
	for _, c := range []struct{ name, opts string }{
		{"sorted", ""},
		{"sorted_better", "compression_level: better\n"},
		{"sorted_4096", "sort_rows: 4096\n"},
		{"arrival", "sort_rows: 0\n"},
	} {
		b.Run(c.name, func(b *testing.B) { benchParquet(b, c.opts) })
	}
}

func benchParquet(b *testing.B, opts string) {
	dir := b.TempDir()
	lost := 0
	s := newSink(b, fmt.Sprintf("path: %s/dt={{ time.date }}/hr={{ time.hour }}\n%s", dir, opts), &lost)
	g := generate.NewGenerator(1)
	const per = 512
	batches := make([]*pipeline.Batch, 64)
	for k := range batches {
		batches[k] = pipeline.NewBatch()
		for i := range per {
			g.Fill(batches[k].Next(), t0+int64(k*per+i)*1_000_000)
		}
	}
	ctx := context.Background()
	b.ReportAllocs()
	cpu := cpuTime()
	n := 0
	for b.Loop() {
		if failed, err := s.Write(ctx, batches[n%len(batches)]); failed != 0 || err != nil {
			b.Fatal(failed, err)
		}
		n++
	}
	if err := s.Close(ctx); err != nil {
		b.Fatal(err)
	}
	used := cpuTime() - cpu
	for _, bt := range batches {
		bt.Release()
	}
	var size int64
	filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			fi, _ := d.Info()
			size += fi.Size()
		}
		return nil
	})
	flows := float64(n * per)
	b.ReportMetric(float64(size)/flows, "disk-bytes/flow")
	b.ReportMetric(float64(used)/flows, "cpu-ns/flow")
	b.ReportMetric(flows/(float64(used)/1e9), "flows/cpu-s")
}

func cpuTime() int64 { return int64(cputime.Process()) }
