package faults

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// SIGKILL while the file sink rotates: flowbus writes as fast as it can
// into a file rotated every megabyte (many rotations a second) and is
// killed once several backups exist, three times over. Every rotated file
// parses completely; the live file parses except, at most, one torn final
// line, which a reader detects by its missing newline.
func TestSIGKILLDuringRotation(t *testing.T) {
	for run := range 3 {
		t.Run(fmt.Sprint(run), func(t *testing.T) {
			dir := t.TempDir()
			out := filepath.Join(dir, "flows.json")
			cfg := writeConfig(t, dir, fmt.Sprintf(`
metrics: {listen: ""}
sources:
  gen: {type: generate, seed: %d}
sinks:
  out: {type: file, inputs: [gen], path: %s, rotate: {max_size_mb: 1, max_backups: 1000}}
`, run+10, out))
			p := start(t, cfg, nil)
			backups := func() []string {
				m, _ := filepath.Glob(filepath.Join(dir, "flows-*.json"))
				return m
			}
			eventually(t, "rotations", func() bool { return len(backups()) >= 4+run })
			p.signal(syscall.SIGKILL)
			<-p.done

			var flows uint64
			for _, b := range backups() {
				ex := readExport(t, b)
				if ex.torn {
					t.Errorf("rotated file %s has a torn line", b)
				}
				if fi, _ := os.Stat(b); fi.Size() > 1<<20 {
					t.Errorf("rotated file %s has %d bytes, more than max_size_mb", b, fi.Size())
				}
				flows += ex.flows
			}
			if _, err := os.Stat(out); err == nil {
				ex := readExport(t, out)
				flows += ex.flows
				t.Logf("%d rotated files, live file torn: %v", len(backups()), ex.torn)
			}
			if flows == 0 {
				t.Errorf("no flows")
			}
			entries, _ := os.ReadDir(dir)
			for _, e := range entries {
				if n := e.Name(); n != "pipeline.yaml" && n != "flows.json" && !strings.HasPrefix(n, "flows-") {
					t.Errorf("unexpected file %s", n)
				}
			}
		})
	}
}
