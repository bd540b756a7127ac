//go:build linux

package ebpf

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/flowbus/flowbus/bpf/bpftest"
	"github.com/flowbus/flowbus/pipeline"
	"github.com/flowbus/flowbus/pipeline/config"
	_ "github.com/flowbus/flowbus/sinks/discard"
	_ "github.com/flowbus/flowbus/sources/file"
)

// TestFailedStartDetaches: when a source started after this one fails to
// start, the runtime stops this one, and its programs detach at once
// instead of staying attached until the process exits.
func TestFailedStartDetaches(t *testing.T) {
	bpftest.RequireRoot(t)
	p := bpftest.NewPair(t)
	cfg := fmt.Sprintf(`metrics: {listen: ""}
sources:
  packets: {type: ebpf, interfaces: [%s], drops: false}
  missing: {type: file, path: %q}
sinks: {out: {type: discard, inputs: [packets, missing]}}
`, p.Host, filepath.Join(t.TempDir(), "missing.json"))
	c, err := config.Parse([]byte(cfg), func(string) (string, bool) { return "", false })
	if err != nil {
		t.Fatal(err)
	}
	pl, err := pipeline.New(c, pipeline.Options{})
	if err != nil {
		t.Fatal(err)
	}
	_, err = pl.Run(context.Background())
	if err == nil || !strings.Contains(err.Error(), `source "missing": start`) {
		t.Fatalf("Run: %v, want the file source's start error", err)
	}
	if n := tcxCount(t, p.HostIndex); n != 0 {
		t.Errorf("%d tcx links left on %s after the failed start", n, p.Host)
	}
}
