// Package bintest builds the flowbus binary once for the tests that run it
// as a process (signals, exit codes, the summary on stderr).
package bintest

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

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
