package kafka_test

import (
	"path/filepath"
	"runtime"
	"testing"

	"github.com/flowbus/flowbus/pipeline"
	"github.com/flowbus/flowbus/pipeline/config"
	_ "github.com/flowbus/flowbus/sinks/file"
	_ "github.com/flowbus/flowbus/sinks/parquet"
	_ "github.com/flowbus/flowbus/sources/ebpf"
	_ "github.com/flowbus/flowbus/transforms/filter"
)

// TestExamples: the documented node and aggregation-tier pipelines load
// and build.
func TestExamples(t *testing.T) {
	_, file, _, _ := runtime.Caller(0)
	dir := filepath.Join(filepath.Dir(file), "..", "..", "docs", "examples")
	t.Setenv("LAKE_DIR", t.TempDir())
	for _, name := range []string{"node-ebpf-kafka.yaml", "aggregator-kafka-file.yaml", "aggregator-kafka-parquet-ocsf.yaml"} {
		t.Run(name, func(t *testing.T) {
			c, err := config.Load(filepath.Join(dir, name))
			if err != nil {
				t.Fatal(err)
			}
			if _, err := pipeline.New(c, pipeline.Options{}); err != nil {
				t.Fatal(err)
			}
		})
	}
}
