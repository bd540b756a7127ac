package faults

import (
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

// A full disk: the file sink writes into a 2 MiB tmpfs until it is full.
// Every line in the file parses (no partial event is left behind), the
// file holds exactly the delivered flows, and the summary reconciles.
func TestDiskFull(t *testing.T) {
	dir := t.TempDir()
	mnt := filepath.Join(dir, "small")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mount("tmpfs", mnt, "tmpfs", 0, "size=2m"); err != nil {
		t.Fatalf("mount a 2 MiB tmpfs (the test needs root): %v", err)
	}
	t.Cleanup(func() { syscall.Unmount(mnt, 0) })
	out := filepath.Join(mnt, "flows.json")
	cfg := writeConfig(t, dir, fmt.Sprintf(`
lost_event_interval: 50ms
metrics: {listen: ""}
sources:
  gen: {type: generate, count: 20000, seed: 9}
sinks:
  out: {type: file, inputs: [gen], path: %s}
`, out))
	p := start(t, cfg, nil)
	s := parseSummary(t, p.wait())
	ex := readExport(t, out)
	t.Logf("summary %v; file: %d flows, LostEvents for %d, torn %v", s.Total, ex.flows, ex.lost, ex.torn)
	if s.Total.Lost == 0 || ex.torn || ex.flows != s.Total.Delivered || ex.lost > s.Total.Lost {
		t.Errorf("summary %v; the file holds %d flows and LostEvents for %d, torn %v", s.Total, ex.flows, ex.lost, ex.torn)
	}
}
