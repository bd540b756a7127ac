package parquet_test

import (
	"path/filepath"
	"runtime"
	"testing"

	"github.com/flowbus/flowbus/pipeline"
	"github.com/flowbus/flowbus/pipeline/config"
	_ "github.com/flowbus/flowbus/sinks/file"
	_ "github.com/flowbus/flowbus/sources/generate"
)

// The documented data-lake pipeline loads and builds.
func TestExample(t *testing.T) {
	_, file, _, _ := runtime.Caller(0)
	dir := t.TempDir()
	t.Setenv("LAKE_DIR", filepath.Join(dir, "lake"))
	t.Setenv("SIEM_FILE", filepath.Join(dir, "ocsf.json"))
	c, err := config.Load(filepath.Join(filepath.Dir(file), "..", "..", "docs", "examples", "data-lake.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := pipeline.New(c, pipeline.Options{}); err != nil {
		t.Fatal(err)
	}
}
