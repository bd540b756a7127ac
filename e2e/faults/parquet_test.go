package faults

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/flowbus/flowbus/internal/bintest"
	"github.com/flowbus/flowbus/internal/duckdbtest"
)

// pqRun runs `flowbus run -c cfg` to its end and returns its stderr and
// exit error.
func pqRun(t *testing.T, cfg string) (string, error) {
	t.Helper()
	cmd := bintest.Command(binary, "run", "-c", cfg)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	err := cmd.Run()
	return stderr.String(), err
}

var pqSummaryRE = regexp.MustCompile(`(?m)^flowbus: received=(\d+) delivered=(\d+) filtered=(\d+) sampled=(\d+) rate_limited=(\d+) lost=(\d+)`)

// pqSummary returns received, delivered and lost of the exit summary and
// checks that it reconciles.
func pqSummary(t *testing.T, stderr string) (received, delivered, lost int) {
	t.Helper()
	m := pqSummaryRE.FindStringSubmatch(stderr)
	if m == nil {
		t.Fatalf("no summary in stderr:\n%s", stderr)
	}
	n := make([]int, 6)
	for i := range n {
		n[i], _ = strconv.Atoi(m[i+1])
	}
	if n[0] != n[1]+n[2]+n[3]+n[4]+n[5] {
		t.Errorf("the summary does not reconcile: %s", m[0])
	}
	return n[0], n[1], n[5]
}

func pqWriteFile(t *testing.T, path, s string) string {
	t.Helper()
	if err := os.WriteFile(path, []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// pqFlowRows counts the flow rows (not LostEvents) DuckDB reads under dir;
// DuckDB failing on any visible file fails the test.
func pqFlowRows(t *testing.T, dir string) int {
	t.Helper()
	if len(pqVisible(t, dir)) == 0 {
		return 0
	}
	rows := duckdbtest.Query(t, "SELECT count(*) AS n FROM read_parquet('"+dir+"/**/*.parquet', hive_partitioning = true) WHERE lost_source IS NULL")
	n, _ := strconv.Atoi(fmt.Sprint(rows[0]["n"]))
	return n
}

// pqFiles lists the files under dir, relative to it.
func pqFiles(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			rel, _ := filepath.Rel(dir, p)
			out = append(out, rel)
		}
		return nil
	})
	sort.Strings(out)
	return out
}

// pqVisible lists the .parquet files under dir; pqHidden the hidden ones.
func pqVisible(t *testing.T, dir string) []string {
	var out []string
	for _, f := range pqFiles(t, dir) {
		if strings.HasSuffix(f, ".parquet") && !strings.HasPrefix(filepath.Base(f), ".") {
			out = append(out, f)
		}
	}
	return out
}

func pqHidden(t *testing.T, dir string) []string {
	var out []string
	for _, f := range pqFiles(t, dir) {
		if strings.HasPrefix(filepath.Base(f), ".") {
			out = append(out, f)
		}
	}
	return out
}

// SIGTERM completes every open file: the rows in the files are the
// delivered flows, and no temporary file is left.
func TestParquetSIGTERM(t *testing.T) {
	dir := t.TempDir()
	out := filepath.Join(dir, "lake")
	cfg := pqWriteFile(t, filepath.Join(dir, "p.yaml"), fmt.Sprintf(`
node_name: n1
metrics: {listen: ""}
sources:
  gen: {type: generate, count: 0, rate: 20000, seed: 3}
sinks:
  lake: {type: parquet, inputs: [gen], path: "%s/dt={{ time.date }}/hr={{ time.hour }}", max_age: 1s}
`, out))
	cmd := bintest.Command(binary, "run", "-c", cfg)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(2500 * time.Millisecond)
	cmd.Process.Signal(syscall.SIGTERM)
	if err := cmd.Wait(); err != nil {
		t.Fatalf("flowbus: %v\n%s", err, stderr.String())
	}
	_, delivered, lost := pqSummary(t, stderr.String())
	if h := pqHidden(t, out); len(h) > 0 {
		t.Errorf("temporary files left after SIGTERM: %v", h)
	}
	if got := pqFlowRows(t, out); delivered == 0 || got != delivered || lost != 0 {
		t.Errorf("the files hold %d flows; summary: delivered %d, lost %d", got, delivered, lost)
	}
}

// SIGKILL while writing leaves only hidden temporary files besides the
// complete ones, which DuckDB reads; the next start removes them.
func TestParquetSIGKILL(t *testing.T) {
	dir := t.TempDir()
	out := filepath.Join(dir, "lake")
	cfg := pqWriteFile(t, filepath.Join(dir, "p.yaml"), fmt.Sprintf(`
node_name: n1
metrics: {listen: ""}
sources:
  gen: {type: generate, count: 0, rate: 50000, seed: 3}
sinks:
  lake: {type: parquet, inputs: [gen], path: "%s/dt={{ time.date }}/hr={{ time.hour }}", max_age: 1s, row_group_rows: 5000}
`, out))
	cmd := bintest.Command(binary, "run", "-c", cfg)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for len(pqVisible(t, out)) == 0 || len(pqHidden(t, out)) == 0 {
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			t.Fatalf("no complete file and open file at once: %v", pqFiles(t, out))
		}
		time.Sleep(20 * time.Millisecond)
	}
	cmd.Process.Kill()
	cmd.Wait()
	if len(pqHidden(t, out)) == 0 {
		t.Fatalf("the kill left no unfinished file; the test proves nothing: %v", pqFiles(t, out))
	}
	if n := pqFlowRows(t, out); n == 0 {
		t.Errorf("DuckDB reads no rows from %v", pqVisible(t, out))
	}

	// The next run removes the unfinished files of its node.
	cfg = pqWriteFile(t, filepath.Join(dir, "p.yaml"), fmt.Sprintf(`
node_name: n1
metrics: {listen: ""}
sources:
  gen: {type: generate, count: 10, seed: 3}
sinks:
  lake: {type: parquet, inputs: [gen], path: "%s/dt={{ time.date }}/hr={{ time.hour }}"}
`, out))
	if stderr, err := pqRun(t, cfg); err != nil {
		t.Fatalf("flowbus: %v\n%s", err, stderr)
	} else if !strings.Contains(stderr, "removed an unfinished file") {
		t.Errorf("the restart did not say it removed unfinished files:\n%s", stderr)
	}
	if h := pqHidden(t, out); len(h) > 0 {
		t.Errorf("unfinished files left after a restart: %v", h)
	}
}

// A full disk (a 3 MiB tmpfs): files that cannot be completed are
// removed and their rows reported lost; every visible file is complete and
// the visible rows are the delivered flows.
func TestParquetDiskFull(t *testing.T) {
	dir := t.TempDir()
	mnt := filepath.Join(dir, "small")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mount("tmpfs", mnt, "tmpfs", 0, "size=3m"); err != nil {
		t.Fatalf("mount a tmpfs (the test needs root): %v", err)
	}
	t.Cleanup(func() { syscall.Unmount(mnt, 0) })
	cfg := pqWriteFile(t, filepath.Join(dir, "p.yaml"), fmt.Sprintf(`
node_name: n1
metrics: {listen: ""}
lost_event_interval: 50ms
sources:
  gen: {type: generate, count: 200000, seed: 5}
sinks:
  lake: {type: parquet, inputs: [gen], path: "%s/dt={{ time.date }}", max_size_mb: 1, row_group_rows: 4000}
`, mnt))
	stderr, err := pqRun(t, cfg)
	if err != nil {
		t.Logf("flowbus exited with %v (a file could not be completed at shutdown)", err)
	}
	_, delivered, lost := pqSummary(t, stderr)
	if !strings.Contains(stderr, "no space left on device") {
		t.Errorf("no clear disk-full error in the log:\n%.2000s", stderr)
	}
	if h := pqHidden(t, mnt); len(h) > 0 {
		t.Errorf("temporary files left: %v", h)
	}
	got := pqFlowRows(t, mnt)
	t.Logf("delivered %d, lost %d, in files %d", delivered, lost, got)
	if lost == 0 || got != delivered {
		t.Errorf("the files hold %d flows; summary: delivered %d, lost %d", got, delivered, lost)
	}
}

// A value that renders a path element as `..`, and a directory that
// cannot be created, lose their events with a clear error; the other
// events are delivered and nothing is written outside the path.
func TestParquetBadPaths(t *testing.T) {
	dir := t.TempDir()
	out := filepath.Join(dir, "lake")
	if err := os.MkdirAll(out, 0o755); err != nil {
		t.Fatal(err)
	}
	pqWriteFile(t, filepath.Join(out, "blocked"), "a file where a directory would go")
	line := func(ns string) string {
		return fmt.Sprintf(`{"flow":{"time":"2025-11-25T12:00:00Z","verdict":"FORWARDED","source":{"namespace":%q},"node_name":"n1"},"node_name":"n1","time":"2025-11-25T12:00:00Z"}`+"\n", ns)
	}
	in := pqWriteFile(t, filepath.Join(dir, "in.json"), line("default")+line("..")+line("blocked")+line("default")+line("."))
	cfg := pqWriteFile(t, filepath.Join(dir, "p.yaml"), fmt.Sprintf(`
node_name: n1
metrics: {listen: ""}
sources:
  in: {type: file, path: %s}
sinks:
  lake: {type: parquet, inputs: [in], path: "%s/{{ source.namespace }}"}
`, in, out))
	stderr, err := pqRun(t, cfg)
	if err != nil {
		t.Fatalf("flowbus: %v\n%s", err, stderr)
	}
	received, delivered, lost := pqSummary(t, stderr)
	if received != 5 || delivered != 2 || lost != 3 {
		t.Errorf("received %d, delivered %d, lost %d; want 5, 2, 3\n%s", received, delivered, lost, stderr)
	}
	if !strings.Contains(stderr, `has a \"..\" element`) && !strings.Contains(stderr, `has a ".." element`) {
		t.Errorf("no clear error for the .. path:\n%s", stderr)
	}
	for _, f := range pqFiles(t, dir) {
		if strings.HasSuffix(f, ".parquet") && !strings.HasPrefix(f, "lake/") {
			t.Errorf("a file outside the path: %s", f)
		}
	}
	if got := pqFlowRows(t, filepath.Join(out, "default")); got != 2 {
		t.Errorf("%d flows in lake/default, want 2", got)
	}

	// A path whose fixed part cannot be written fails at start, clearly.
	cfg = pqWriteFile(t, filepath.Join(dir, "p.yaml"), fmt.Sprintf(`
metrics: {listen: ""}
sources:
  in: {type: file, path: %s}
sinks:
  lake: {type: parquet, inputs: [in], path: "%s/blocked/dt={{ time.date }}"}
`, in, out))
	stderr, err = pqRun(t, cfg)
	if err == nil || !strings.Contains(stderr, "cannot create the directory") {
		t.Errorf("an unwritable path: exit %v\n%s", err, stderr)
	}
}
