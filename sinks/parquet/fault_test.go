package parquet_test

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/flowbus/flowbus/internal/bintest"
)

var binary string

func TestMain(m *testing.M) { bintest.Main(m, "../..", &binary) }

// run runs `flowbus run -c cfg` to its end and returns its exit error and
// stderr.
func run(t *testing.T, cfg string) (error, string) {
	t.Helper()
	cmd := exec.Command(binary, "run", "-c", cfg)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	err := cmd.Run()
	return err, stderr.String()
}

var summaryRE = regexp.MustCompile(`(?m)^flowbus: received=(\d+) delivered=(\d+) filtered=(\d+) sampled=(\d+) rate_limited=(\d+) lost=(\d+)`)

// summary returns received, delivered and lost of the exit summary and
// checks that it reconciles.
func summary(t *testing.T, stderr string) (received, delivered, lost int) {
	t.Helper()
	m := summaryRE.FindStringSubmatch(stderr)
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

func writeFile(t *testing.T, path, s string) string {
	t.Helper()
	if err := os.WriteFile(path, []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// flowRows counts the flow rows (not LostEvents) DuckDB reads under dir;
// DuckDB failing on any visible file fails the test.
func flowRows(t *testing.T, dir string) int {
	t.Helper()
	if len(visible(t, dir)) == 0 {
		return 0
	}
	rows := query(t, "SELECT count(*) AS n FROM read_parquet('"+dir+"/**/*.parquet', hive_partitioning = true) WHERE lost_source IS NULL")
	n, _ := strconv.Atoi(fmt.Sprint(rows[0]["n"]))
	return n
}

// visible lists the .parquet files under dir; hidden lists the rest.
func visible(t *testing.T, dir string) []string {
	var out []string
	for _, f := range files(t, dir) {
		if strings.HasSuffix(f, ".parquet") && !strings.HasPrefix(filepath.Base(f), ".") {
			out = append(out, f)
		}
	}
	return out
}

func hidden(t *testing.T, dir string) []string {
	var out []string
	for _, f := range files(t, dir) {
		if strings.HasPrefix(filepath.Base(f), ".") {
			out = append(out, f)
		}
	}
	return out
}

// SIGTERM completes every open file: the rows in the files are the
// delivered flows, and no temporary file is left.
func TestSIGTERM(t *testing.T) {
	dir := t.TempDir()
	out := filepath.Join(dir, "lake")
	cfg := writeFile(t, filepath.Join(dir, "p.yaml"), fmt.Sprintf(`
node_name: n1
metrics: {listen: ""}
sources:
  gen: {type: generate, count: 0, rate: 20000, seed: 3}
sinks:
  lake: {type: parquet, inputs: [gen], path: "%s/dt={{ time.date }}/hr={{ time.hour }}", max_age: 1s}
`, out))
	cmd := exec.Command(binary, "run", "-c", cfg)
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
	_, delivered, lost := summary(t, stderr.String())
	if h := hidden(t, out); len(h) > 0 {
		t.Errorf("temporary files left after SIGTERM: %v", h)
	}
	if got := flowRows(t, out); delivered == 0 || got != delivered || lost != 0 {
		t.Errorf("the files hold %d flows; summary: delivered %d, lost %d", got, delivered, lost)
	}
}

// SIGKILL while writing leaves only hidden temporary files besides the
// complete ones, which DuckDB reads; the next start removes them.
func TestSIGKILL(t *testing.T) {
	dir := t.TempDir()
	out := filepath.Join(dir, "lake")
	cfg := writeFile(t, filepath.Join(dir, "p.yaml"), fmt.Sprintf(`
node_name: n1
metrics: {listen: ""}
sources:
  gen: {type: generate, count: 0, rate: 50000, seed: 3}
sinks:
  lake: {type: parquet, inputs: [gen], path: "%s/dt={{ time.date }}/hr={{ time.hour }}", max_age: 1s, row_group_rows: 5000}
`, out))
	cmd := exec.Command(binary, "run", "-c", cfg)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for len(visible(t, out)) == 0 || len(hidden(t, out)) == 0 {
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			t.Fatalf("no complete file and open file at once: %v", files(t, out))
		}
		time.Sleep(20 * time.Millisecond)
	}
	cmd.Process.Kill()
	cmd.Wait()
	if len(hidden(t, out)) == 0 {
		t.Fatalf("the kill left no unfinished file; the test proves nothing: %v", files(t, out))
	}
	if n := flowRows(t, out); n == 0 {
		t.Errorf("DuckDB reads no rows from %v", visible(t, out))
	}

	// The next run removes the unfinished files of its node.
	cfg = writeFile(t, filepath.Join(dir, "p.yaml"), fmt.Sprintf(`
node_name: n1
metrics: {listen: ""}
sources:
  gen: {type: generate, count: 10, seed: 3}
sinks:
  lake: {type: parquet, inputs: [gen], path: "%s/dt={{ time.date }}/hr={{ time.hour }}"}
`, out))
	if err, stderr := run(t, cfg); err != nil {
		t.Fatalf("flowbus: %v\n%s", err, stderr)
	} else if !strings.Contains(stderr, "removed an unfinished file") {
		t.Errorf("the restart did not say it removed unfinished files:\n%s", stderr)
	}
	if h := hidden(t, out); len(h) > 0 {
		t.Errorf("unfinished files left after a restart: %v", h)
	}
}

// A full disk (a 3 MiB tmpfs): files that cannot be completed are
// removed and their rows reported lost; every visible file is complete and
// the visible rows are the delivered flows.
func TestDiskFull(t *testing.T) {
	dir := t.TempDir()
	mnt := filepath.Join(dir, "small")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mount("tmpfs", mnt, "tmpfs", 0, "size=3m"); err != nil {
		t.Fatalf("mount a tmpfs (the test needs root): %v", err)
	}
	t.Cleanup(func() { syscall.Unmount(mnt, 0) })
	cfg := writeFile(t, filepath.Join(dir, "p.yaml"), fmt.Sprintf(`
node_name: n1
metrics: {listen: ""}
lost_event_interval: 50ms
sources:
  gen: {type: generate, count: 200000, seed: 5}
sinks:
  lake: {type: parquet, inputs: [gen], path: "%s/dt={{ time.date }}", max_size_mb: 1, row_group_rows: 4000}
`, mnt))
	err, stderr := run(t, cfg)
	if err != nil {
		t.Logf("flowbus exited with %v (a file could not be completed at shutdown)", err)
	}
	_, delivered, lost := summary(t, stderr)
	if !strings.Contains(stderr, "no space left on device") {
		t.Errorf("no clear disk-full error in the log:\n%.2000s", stderr)
	}
	if h := hidden(t, mnt); len(h) > 0 {
		t.Errorf("temporary files left: %v", h)
	}
	got := flowRows(t, mnt)
	t.Logf("delivered %d, lost %d, in files %d", delivered, lost, got)
	if lost == 0 || got != delivered {
		t.Errorf("the files hold %d flows; summary: delivered %d, lost %d", got, delivered, lost)
	}
}

// A value that renders a path element as `..`, and a directory that
// cannot be created, lose their events with a clear error; the other
// events are delivered and nothing is written outside the path.
func TestBadPaths(t *testing.T) {
	dir := t.TempDir()
	out := filepath.Join(dir, "lake")
	if err := os.MkdirAll(out, 0o755); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(out, "blocked"), "a file where a directory would go")
	line := func(ns string) string {
		return fmt.Sprintf(`{"flow":{"time":"2025-11-25T12:00:00Z","verdict":"FORWARDED","source":{"namespace":%q},"node_name":"n1"},"node_name":"n1","time":"2025-11-25T12:00:00Z"}`+"\n", ns)
	}
	in := writeFile(t, filepath.Join(dir, "in.json"), line("default")+line("..")+line("blocked")+line("default")+line("."))
	cfg := writeFile(t, filepath.Join(dir, "p.yaml"), fmt.Sprintf(`
node_name: n1
metrics: {listen: ""}
sources:
  in: {type: file, path: %s}
sinks:
  lake: {type: parquet, inputs: [in], path: "%s/{{ source.namespace }}"}
`, in, out))
	err, stderr := run(t, cfg)
	if err != nil {
		t.Fatalf("flowbus: %v\n%s", err, stderr)
	}
	received, delivered, lost := summary(t, stderr)
	if received != 5 || delivered != 2 || lost != 3 {
		t.Errorf("received %d, delivered %d, lost %d; want 5, 2, 3\n%s", received, delivered, lost, stderr)
	}
	if !strings.Contains(stderr, `has a \"..\" element`) && !strings.Contains(stderr, `has a ".." element`) {
		t.Errorf("no clear error for the .. path:\n%s", stderr)
	}
	for _, f := range files(t, dir) {
		if strings.HasSuffix(f, ".parquet") && !strings.HasPrefix(f, "lake/") {
			t.Errorf("a file outside the path: %s", f)
		}
	}
	if got := flowRows(t, filepath.Join(out, "default")); got != 2 {
		t.Errorf("%d flows in lake/default, want 2", got)
	}

	// A path whose fixed part cannot be written fails at start, clearly.
	cfg = writeFile(t, filepath.Join(dir, "p.yaml"), fmt.Sprintf(`
metrics: {listen: ""}
sources:
  in: {type: file, path: %s}
sinks:
  lake: {type: parquet, inputs: [in], path: "%s/blocked/dt={{ time.date }}"}
`, in, out))
	err, stderr = run(t, cfg)
	if err == nil || !strings.Contains(stderr, "cannot create the directory") {
		t.Errorf("an unwritable path: exit %v\n%s", err, stderr)
	}
}
