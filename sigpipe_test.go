package main

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// `flowbus run | head -1`: the reader of stdout goes away after one line.
// flowbus does not die of SIGPIPE: the file sink writing to stdout fails
// alone, its events are counted as lost (the summary reconciles), and the
// other sink of the same pipeline gets every event.
func TestStdoutReaderGone(t *testing.T) {
	dir := t.TempDir()
	out := filepath.Join(dir, "out.json")
	const total = 5000
	cfg := writeFile(t, "pipeline.yaml", fmt.Sprintf(`
metrics: {listen: ""}
sources:
  in: {type: generate, count: %d, seed: 1}
sinks:
  stdout: {type: file, path: "-", inputs: [in]}
  file: {type: file, path: %s, inputs: [in]}
`, total, out))
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(binary, "run", "-c", cfg)
	var stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = w, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	w.Close()
	// head -1: read one line, then go away.
	line, err := bufio.NewReader(r).ReadString('\n')
	if err != nil || !strings.HasPrefix(line, `{"flow":`) {
		t.Fatalf("first line %q, %v", line, err)
	}
	r.Close()
	if err := cmd.Wait(); err != nil {
		t.Fatalf("exit: %v (want 0)\nstderr:\n%s", err, stderr.String())
	}
	// The summary counts per sink: each of the two received every event.
	received, delivered, lost := summary(t, stderr.String())
	if received != 2*total || lost == 0 || lost >= total || delivered+lost != received {
		t.Errorf("received=%d delivered=%d lost=%d, want %d received and only the stdout sink's events lost", received, delivered, lost, 2*total)
	}
	if !strings.Contains(stderr.String(), "the reader of the pipe went away") {
		t.Errorf("no log line about the closed stdout:\n%s", stderr.String())
	}
	data, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(string(data), "\n"+`{"flow":`) + 1; n != total {
		t.Errorf("the file sink has %d flows, want %d", n, total)
	}
}
