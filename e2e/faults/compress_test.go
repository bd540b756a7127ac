package faults

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protodelim"

	"github.com/flowbus/flowbus/flow/observer"
	"github.com/flowbus/flowbus/internal/bintest"
)

// SIGKILL while the file sink writes, rotates and compresses: every backup
// that exists is whole (a .gz appears only once complete; an unfinished
// compression is a .gz.tmp beside the plain backup), the current file can
// at most end in one torn record, and the next start cuts that record off,
// finishes the compression and prunes, so that every file reads cleanly.
func TestSIGKILLDuringCompressedRotation(t *testing.T) {
	dir := t.TempDir()
	out := filepath.Join(dir, "events.pb")
	config := func(count int) string {
		return writeConfig(t, dir, fmt.Sprintf(`
metrics: {listen: ""}
sources:
  in: {type: generate, count: %d, seed: 1}
sinks:
  out:
    type: file
    inputs: [in]
    encoding: protobuf
    path: %s
    rotate: {max_size_mb: 1, max_backups: 3, compress: true}
`, count, out))
	}
	endless := config(0)
	for round := range 3 {
		cmd := bintest.Command(binary, "run", "-c", endless)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		// Kill it once it has rotated a few times, at a moment that varies.
		for deadline := time.Now().Add(20 * time.Second); countBackups(t, dir) < 2+round; {
			if time.Now().After(deadline) {
				cmd.Process.Kill()
				cmd.Wait()
				t.Fatalf("no rotation:\n%s", stderr.String())
			}
			time.Sleep(time.Millisecond)
		}
		time.Sleep(time.Duration(round) * 7 * time.Millisecond)
		cmd.Process.Kill()
		cmd.Wait()
		checkRecordFiles(t, dir, true)
	}
	// A clean run afterwards repairs and finishes everything.
	cmd := bintest.Command(binary, "run", "-c", config(10))
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("run: %v\n%s", err, b)
	}
	if n := checkRecordFiles(t, dir, false); n > 3 {
		t.Errorf("%d backups, want max_backups = 3", n)
	}
}

// countBackups counts the rotated files in dir.
func countBackups(t *testing.T, dir string) int {
	entries, _ := os.ReadDir(dir)
	n := 0
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), "events-") {
			n++
		}
	}
	return n
}

// checkRecordFiles reads every file of the sink in dir and returns the
// number of backups. Complete backups must parse to their end; with
// killed, the current file may end in one torn record, and unfinished
// compressions (.gz.tmp) may exist.
func checkRecordFiles(t *testing.T, dir string, killed bool) int {
	t.Helper()
	entries, _ := os.ReadDir(dir)
	backups := 0
	for _, e := range entries {
		name, path := e.Name(), filepath.Join(dir, e.Name())
		if name == "pipeline.yaml" {
			continue
		}
		var r io.Reader
		f, err := os.Open(path)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		r = f
		switch {
		case strings.HasSuffix(name, ".gz.tmp"):
			if !killed {
				t.Errorf("%s left after a clean run", name)
			}
			continue
		case strings.HasSuffix(name, ".gz"):
			zr, err := gzip.NewReader(f)
			if err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			data, err := io.ReadAll(zr)
			if err != nil {
				t.Fatalf("%s is not a complete gzip file: %v", name, err)
			}
			r = bytes.NewReader(data)
			backups++
		case name != "events.pb":
			if !killed {
				t.Errorf("%s left uncompressed after a clean run", name)
			}
			backups++
		}
		br := bufio.NewReader(r)
		n := 0
		for {
			err := protodelim.UnmarshalFrom(br, new(observer.GetFlowsResponse))
			if err == io.EOF {
				break
			}
			if err != nil {
				if killed && name == "events.pb" && strings.Contains(err.Error(), "EOF") {
					t.Logf("%s: torn last record after %d records (cut off at the next start)", name, n)
					break
				}
				t.Fatalf("%s: record %d: %v", name, n, err)
			}
			n++
		}
	}
	return backups
}
