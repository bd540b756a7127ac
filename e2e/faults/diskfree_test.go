package faults

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"

	"google.golang.org/protobuf/encoding/protodelim"

	"github.com/flowbus/flowbus/flow/observer"
	"github.com/flowbus/flowbus/internal/bintest"
)

// A disk that fills up and frees again under the file sink: the file reads
// cleanly to its end, holds exactly the delivered flows, and the LostEvents
// in it account for every lost one.
func TestDiskFullThenFreed(t *testing.T) {
	dir := t.TempDir()
	if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, "size=4m"); err != nil {
		t.Fatalf("mount tmpfs (needs root): %v", err)
	}
	t.Cleanup(func() { syscall.Unmount(dir, 0) })
	filler := filepath.Join(dir, "filler")
	if err := os.WriteFile(filler, make([]byte, 3<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "events.pb")
	const total = 3000
	cfg := writeConfig(t, t.TempDir(), fmt.Sprintf(`
metrics: {listen: ""}
lost_event_interval: 100ms
sources:
  in: {type: generate, count: %d, rate: 3000, seed: 1}
sinks:
  out: {type: file, path: %s, encoding: protobuf, inputs: [in]}
`, total, out))
	cmd := bintest.Command(binary, "run", "-c", cfg)
	stderrPipe, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		sc := bufio.NewScanner(stderrPipe)
		freed := false
		for sc.Scan() {
			stderr.WriteString(sc.Text() + "\n")
			if !freed && strings.Contains(sc.Text(), "cannot write events") {
				freed = true
				os.Remove(filler) // space returns
			}
		}
	}()
	wg.Wait()
	if err := cmd.Wait(); err != nil {
		t.Fatalf("exit: %v\n%s", err, stderr.String())
	}
	tot := parseSummary(t, stderr.String()).Total
	received, delivered, lost := tot.Received, tot.Delivered, tot.Lost
	if lost == 0 {
		t.Fatalf("the disk never filled:\n%s", stderr.String())
	}
	f, err := os.Open(out)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	r := bufio.NewReader(f)
	var flows, lostInFile uint64
	for {
		m := new(observer.GetFlowsResponse)
		err := protodelim.UnmarshalFrom(r, m)
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("record %d: %v", flows, err)
		}
		if l := m.GetLostEvents(); l != nil {
			lostInFile += l.NumEventsLost
		} else {
			flows++
		}
	}
	t.Logf("received=%d delivered=%d lost=%d; file: %d flows, LostEvents for %d", received, delivered, lost, flows, lostInFile)
	if received != total || flows != delivered || lostInFile != lost {
		t.Errorf("file holds %d flows and LostEvents for %d; summary delivered=%d lost=%d", flows, lostInFile, delivered, lost)
	}
}
