package file

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// numbered returns lines from..to-1, all of the same length, each naming
// its number in node_name.
func numbered(from, to int) string {
	var b strings.Builder
	for i := from; i < to; i++ {
		fmt.Fprintf(&b, `{"flow":{"verdict":"FORWARDED"},"node_name":"%08d"}`+"\n", i)
	}
	return b.String()
}

// followTest runs a source following path in dir, polling every poll.
type followTest struct {
	testSource
	c      *collector
	cancel context.CancelFunc
	done   chan error
}

func startFollow(t *testing.T, dir string, poll time.Duration, c *collector) *followTest {
	t.Helper()
	s := newTestSource(t, "path: events.log\nfollow: true", dir)
	s.poll = poll
	ctx, cancel := context.WithCancel(context.Background())
	if err := s.Start(ctx); err != nil {
		t.Fatal(err)
	}
	ft := &followTest{testSource: s, c: c, cancel: cancel, done: make(chan error, 1)}
	go func() { ft.done <- s.Run(ctx, c) }()
	t.Cleanup(func() { ft.stop(t) })
	return ft
}

func (ft *followTest) stop(t *testing.T) {
	t.Helper()
	if ft.cancel == nil {
		return
	}
	ft.cancel()
	ft.cancel = nil
	if err := <-ft.done; err != nil {
		t.Fatal(err)
	}
}

// checkNumbers checks that the collector got each of 0..total-1 exactly
// once, apart from the lost ones.
func (ft *followTest) checkNumbers(t *testing.T, total int) {
	t.Helper()
	ft.c.mu.Lock()
	defer ft.c.mu.Unlock()
	seen := map[string]int{}
	for _, e := range ft.c.events {
		seen[e.NodeName]++
	}
	for name, n := range seen {
		if n != 1 {
			t.Errorf("line %s received %d times", name, n)
		}
	}
	if len(ft.c.events)+int(ft.c.lost) != total {
		t.Errorf("received %d + lost %d, want %d lines", len(ft.c.events), ft.c.lost, total)
	}
}

func appendFile(t *testing.T, path, s string) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteString(s); err != nil {
		t.Fatal(err)
	}
}

// TestFollowTruncateRegrow: the file is truncated and written past the read
// position between two polls. The source notices (the bytes before its
// position changed) and reads the new content from its start.
func TestFollowTruncateRegrow(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "events.log")
	appendFile(t, path, "")
	ft := startFollow(t, dir, 300*time.Millisecond, newCollector())
	appendFile(t, path, numbered(0, 1000))
	ft.c.waitFor(t, 1000)
	// Within one poll: truncate, and write more than there was.
	if err := os.Truncate(path, 0); err != nil {
		t.Fatal(err)
	}
	appendFile(t, path, numbered(1000, 2100))
	ft.c.waitFor(t, 2100)
	waitCounter(t, ft.m.reopened.WithLabelValues("truncated"), 1)
	ft.stop(t)
	ft.checkNumbers(t, 2100)
	if ft.c.lost != 0 {
		t.Errorf("lost %d", ft.c.lost)
	}
}

// TestFollowCopyTruncate: logrotate's copytruncate copies the file and
// truncates it; the lines written since the last poll are read from the
// copy, then the file from its start.
func TestFollowCopyTruncate(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "events.log")
	appendFile(t, path, "")
	ft := startFollow(t, dir, 300*time.Millisecond, newCollector())
	appendFile(t, path, numbered(0, 4000))
	ft.c.waitFor(t, 4000)
	// Not yet read: 1000 lines, then the copy and the truncation, then
	// 5000 lines.
	appendFile(t, path, numbered(4000, 5000))
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path+".1", data, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(path, 0); err != nil {
		t.Fatal(err)
	}
	appendFile(t, path, numbered(5000, 10000))
	ft.c.waitFor(t, 10000)
	ft.stop(t)
	ft.checkNumbers(t, 10000)
	if ft.c.lost != 0 {
		t.Errorf("lost %d", ft.c.lost)
	}
}

// TestFollowWriteAfterRename: the writer goes on writing to the file after
// it was renamed, until it reopens the path. The source reads the old file
// for a grace period after the rotation.
func TestFollowWriteAfterRename(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "events.log")
	w, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	ft := startFollow(t, dir, 5*time.Millisecond, newCollector())
	io.WriteString(w, numbered(0, 1000))
	ft.c.waitFor(t, 1000)
	if err := os.Rename(path, path+".1"); err != nil {
		t.Fatal(err)
	}
	appendFile(t, path, numbered(1000, 2000))
	ft.c.waitFor(t, 2000)
	waitCounter(t, ft.m.reopened.WithLabelValues("rotated"), 1)
	// The writer has not reopened yet.
	io.WriteString(w, numbered(2000, 2500))
	ft.c.waitFor(t, 2500)
	ft.stop(t)
	ft.checkNumbers(t, 2500)
}

// TestFollowTruncatedUnread: the file is truncated while the source is
// held back by a full pipeline, before it read what it had seen. The
// bytes it knows existed are reported as lost, so that received + lost
// matches what was written.
func TestFollowTruncatedUnread(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "events.log")
	// 10000 lines of 61 bytes: more than one read of the line reader.
	appendFile(t, path, numbered(0, 10000))
	c := newCollector()
	c.gate = make(chan struct{})
	ft := startFollow(t, dir, 50*time.Millisecond, c)
	c.gate <- struct{}{} // the source is in its first Emit
	if err := os.Truncate(path, 0); err != nil {
		t.Fatal(err)
	}
	close(c.gate)
	waitCounter(t, ft.m.reopened.WithLabelValues("truncated"), 1)
	ft.stop(t)
	ft.checkNumbers(t, 10000)
	if c.lost == 0 {
		t.Error("nothing reported lost")
	}
	t.Logf("received %d, lost %d", len(c.events), c.lost)
	if !strings.Contains(ft.log.String(), "file truncated before all its lines were read") {
		t.Errorf("no log line:\n%s", ft.log.String())
	}
}
