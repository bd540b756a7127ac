// Package bintest builds the binaries that tests run as processes: the
// flowbus binary, once per test package (signals, exit codes, the summary
// on stderr), and the interop tools .ci/tools/build makes from other
// projects' modules (the hubble CLI, Hubble Relay, Cilium's Hubble server).
package bintest

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"
)

// Tool returns the path of a tool built and cached by .ci/tools/build with
// args (e.g. "hubble", "hubble-relay"); the first build of a tool can take
// many minutes, later calls return the cached binary.
func Tool(tb testing.TB, args ...string) string {
	tb.Helper()
	_, file, _, _ := runtime.Caller(0)
	root := filepath.Join(filepath.Dir(file), "..", "..")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(root, ".ci", "tools", "build"), args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		tb.Fatalf(".ci/tools/build %s: %v\n%s", strings.Join(args, " "), err, stderr.String())
	}
	return strings.TrimSpace(string(out))
}

// Main builds the flowbus command in dir (relative to the test's package)
// into a temporary folder, sets *bin to its path, runs the tests and exits
// with their code. Call it from TestMain.
func Main(m *testing.M, dir string, bin *string) {
	tmp, err := os.MkdirTemp("", "flowbus-bin")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	*bin = filepath.Join(tmp, "flowbus")
	if out, err := exec.Command("go", "build", "-o", *bin, dir).CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "go build: %v\n%s", err, out)
		os.RemoveAll(tmp)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(tmp)
	os.Exit(code)
}
