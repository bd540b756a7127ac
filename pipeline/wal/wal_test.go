package wal

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

func open(t *testing.T, dir string, o Options) (*Log, []Corrupt) {
	t.Helper()
	if o.MaxBytes == 0 {
		o.MaxBytes = 1 << 20
	}
	l, c, err := Open(dir, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l, c
}

func rec(i int) []byte {
	return []byte(fmt.Sprintf("record %04d %s", i, bytes.Repeat([]byte{'x'}, 100)))
}

func appendN(t *testing.T, l *Log, from, n int) {
	t.Helper()
	for i := from; i < from+n; i++ {
		if _, err := l.Append(rec(i)); err != nil {
			t.Fatal(err)
		}
	}
}

// readAll reads every record, acknowledging each when ack is set.
func readAll(t *testing.T, l *Log, ack bool) []string {
	t.Helper()
	var out []string
	for {
		r, ok, err := l.Next()
		if err != nil {
			t.Fatal(err)
		}
		if !ok {
			return out
		}
		out = append(out, string(r.Payload[:11]))
		if ack {
			if err := l.Ack(r.Index); err != nil {
				t.Fatal(err)
			}
		}
	}
}

func TestAppendAckReopen(t *testing.T) {
	dir := t.TempDir()
	l, _ := open(t, dir, Options{SegmentBytes: 1000})
	appendN(t, l, 0, 30)
	got := readAll(t, l, false)
	if len(got) != 30 || got[0] != "record 0000" || got[29] != "record 0029" {
		t.Fatalf("read %v", got)
	}
	// Acknowledge the first 12; the rest come back after a reopen.
	if err := l.Ack(12); err != nil {
		t.Fatal(err)
	}
	segs, _ := filepath.Glob(filepath.Join(dir, "*.seg"))
	l.Close()
	l2, c := open(t, dir, Options{SegmentBytes: 1000})
	if len(c) != 0 {
		t.Fatalf("corrupt: %+v", c)
	}
	got = readAll(t, l2, true)
	if len(got) != 18 || got[0] != "record 0012" { // indexes count from 1
		t.Fatalf("after reopen: %v", got)
	}
	appendN(t, l2, 30, 2)
	if got := readAll(t, l2, true); len(got) != 2 || got[0] != "record 0030" {
		t.Fatalf("appended after reopen: %v", got)
	}
	if n, _ := l2.Pending(); n != 0 {
		t.Errorf("pending %d", n)
	}
	left, _ := filepath.Glob(filepath.Join(dir, "*.seg"))
	if len(segs) < 3 || len(left) != 1 {
		t.Errorf("segments: %d before, %d left after acknowledging everything", len(segs), len(left))
	}
}

func lastSeg(t *testing.T, dir string) string {
	segs, _ := filepath.Glob(filepath.Join(dir, "*.seg"))
	for i := len(segs) - 1; i >= 0; i-- {
		if fi, _ := os.Stat(segs[i]); fi.Size() > int64(len(magic)) {
			return segs[i]
		}
	}
	t.Fatal("no segment with records")
	return ""
}

func TestTornTail(t *testing.T) {
	dir := t.TempDir()
	l, _ := open(t, dir, Options{})
	appendN(t, l, 0, 10)
	l.Close()
	seg := lastSeg(t, dir)
	fi, _ := os.Stat(seg)
	if err := os.Truncate(seg, fi.Size()-30); err != nil {
		t.Fatal(err)
	}
	l2, c := open(t, dir, Options{})
	if len(c) != 1 || c[0].Reason != "torn record" || c[0].Index != 10 || !bytes.HasPrefix(c[0].Partial, []byte("record 0009")) {
		t.Fatalf("corrupt: %+v", c)
	}
	if got := readAll(t, l2, true); len(got) != 9 {
		t.Fatalf("read %v", got)
	}
	// The log goes on in a new segment.
	appendN(t, l2, 10, 1)
	if got := readAll(t, l2, true); len(got) != 1 || got[0] != "record 0010" {
		t.Fatalf("after the torn tail: %v", got)
	}
}

func TestCorruptMiddle(t *testing.T) {
	for _, tc := range []struct {
		name   string
		at     int64 // offset of the damage from the start of record 3
		reason string
		read   int
	}{
		{"payload", 20, "checksum mismatch", 9},
		{"length", 0, "implausible record length", 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			l, _ := open(t, dir, Options{})
			appendN(t, l, 0, 10)
			l.Close()
			seg := lastSeg(t, dir)
			f, _ := os.OpenFile(seg, os.O_RDWR, 0)
			recLen := int64(frame + len(rec(0)))
			f.WriteAt([]byte{0xff, 0xff, 0xff, 0xff}, int64(len(magic))+3*recLen+tc.at)
			f.Close()
			l2, c := open(t, dir, Options{})
			if len(c) != 1 || c[0].Reason != tc.reason || c[0].Index != 4 {
				t.Fatalf("corrupt: %+v", c)
			}
			if got := readAll(t, l2, true); len(got) != tc.read {
				t.Fatalf("read %d records: %v", len(got), got)
			}
		})
	}
}

func TestCorruptAck(t *testing.T) {
	dir := t.TempDir()
	l, _ := open(t, dir, Options{})
	appendN(t, l, 0, 5)
	l.Ack(2)
	l.Close()
	os.WriteFile(filepath.Join(dir, "ack"), []byte("garbage garbage"), 0o600)
	l2, _ := open(t, dir, Options{})
	// Nothing is known acknowledged: every record comes again (duplicates,
	// not losses).
	if got := readAll(t, l2, true); len(got) != 5 {
		t.Fatalf("read %v", got)
	}
}

func TestFull(t *testing.T) {
	dir := t.TempDir()
	size := int64(len(magic) + 5*(frame+len(rec(0))))
	l, _ := open(t, dir, Options{MaxBytes: size, SegmentBytes: size})
	appendN(t, l, 0, 5)
	if _, err := l.Append(rec(5)); !errors.Is(err, ErrFull) {
		t.Fatalf("append to a full log: %v", err)
	}
	// Once everything is acknowledged, the active segment rolls over and
	// its space is free again.
	readAll(t, l, true)
	if _, err := l.Append(rec(5)); err != nil {
		t.Fatalf("append after acknowledging everything: %v", err)
	}
}

func TestDropOldest(t *testing.T) {
	dir := t.TempDir()
	recLen := int64(frame + len(rec(0)))
	seg := int64(len(magic)) + 4*recLen
	l, _ := open(t, dir, Options{MaxBytes: 3 * seg, SegmentBytes: seg})
	appendN(t, l, 0, 12)
	if _, err := l.Append(rec(12)); !errors.Is(err, ErrFull) {
		t.Fatalf("want full: %v", err)
	}
	// One record in flight.
	r, _, _ := l.Next()
	dropped, err := l.DropOldest()
	if err != nil || len(dropped) != 3 || !bytes.HasPrefix(dropped[0], []byte("record 0001")) {
		t.Fatalf("dropped %d, %v", len(dropped), err)
	}
	// The rest of the segment in flight is given up, but the segment stays
	// until its record in flight is acknowledged.
	if _, err := l.Append(rec(12)); !errors.Is(err, ErrFull) {
		t.Fatalf("the segment with the record in flight is kept: %v", err)
	}
	// The next drop frees a whole segment, behind the record in flight.
	if dropped, _ := l.DropOldest(); len(dropped) != 4 {
		t.Fatalf("dropped %d", len(dropped))
	}
	if _, err := l.Append(rec(12)); err != nil {
		t.Fatalf("append after dropping a segment: %v", err)
	}
	l.Ack(r.Index)
	got := readAll(t, l, true)
	if len(got) != 5 || got[0] != "record 0008" {
		t.Fatalf("read %v", got)
	}
	// With nothing in flight, a drop frees the segment at once; the active
	// segment rolls over to be dropped.
	appendN(t, l, 13, 2)
	dropped, _ = l.DropOldest()
	if len(dropped) != 2 {
		t.Fatalf("dropped %d", len(dropped))
	}
	if n, _ := l.Pending(); n != 0 {
		t.Errorf("pending %d", n)
	}
}

func TestLocked(t *testing.T) {
	dir := t.TempDir()
	open(t, dir, Options{})
	if _, _, err := Open(dir, Options{MaxBytes: 1 << 20}); err == nil {
		t.Fatal("a second Open of the same directory succeeded")
	}
}

// FuzzScan feeds arbitrary segment contents to recovery: it never panics,
// and every byte is accounted for as an intact or corrupt record.
func FuzzScan(f *testing.F) {
	var seg []byte
	seg = append(seg, magic...)
	for i := 0; i < 3; i++ {
		p := rec(i)
		var h [frame]byte
		putFrame(h[:], p)
		seg = append(append(seg, h[:]...), p...)
	}
	f.Add(seg)
	f.Add(seg[:len(seg)-7])
	f.Add([]byte(magic))
	f.Add([]byte("FBWAL001\xff\xff\xff\xff\x00\x00\x00\x00"))
	f.Fuzz(func(t *testing.T, data []byte) {
		good := 0
		scan(data, func(off int64, n int32) {
			if off < int64(len(magic)) || off+frame+int64(n) > int64(len(data)) {
				t.Fatalf("record at %d of %d bytes outside the data (%d bytes)", off, n, len(data))
			}
			good++
		}, func(c Corrupt) {
			if c.Offset < 0 || c.Offset > int64(len(data)) || len(c.Partial) > 64 {
				t.Fatalf("corrupt record %+v", c)
			}
		})
	})
}

// A file system that fills up under the log: the append that does not fit
// fails with ENOSPC and leaves nothing of itself behind (its partial write
// is undone), so the log reopens with every record before it intact, and
// appends again once acknowledged records free the space.
func TestFullFileSystem(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("mounting a tmpfs needs root")
	}
	dir := t.TempDir()
	if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, "size=256k"); err != nil {
		t.Fatalf("mount tmpfs: %v", err)
	}
	t.Cleanup(func() { syscall.Unmount(dir, 0) })
	big := func(i int) []byte {
		return append([]byte(fmt.Sprintf("record %04d ", i)), bytes.Repeat([]byte{'y'}, 10000)...)
	}
	l, _, err := Open(dir, Options{MaxBytes: 64 << 20, Sync: SyncNever})
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for ; ; n++ {
		_, err := l.Append(big(n))
		if err == nil {
			continue
		}
		if !errors.Is(err, syscall.ENOSPC) {
			t.Fatalf("append %d: %v, want ENOSPC", n, err)
		}
		break
	}
	if n == 0 {
		t.Fatal("the first append already failed")
	}
	l.Close()
	l2, corrupt := open(t, dir, Options{MaxBytes: 64 << 20, Sync: SyncNever})
	if len(corrupt) != 0 {
		t.Fatalf("%d corrupt records after a full file system: %+v", len(corrupt), corrupt[0])
	}
	got := readAll(t, l2, true)
	if len(got) != n || got[0] != "record 0000" || got[n-1] != fmt.Sprintf("record %04d", n-1) {
		t.Fatalf("reopened log holds %d records (%v ... ), want %d", len(got), got[:min(len(got), 1)], n)
	}
	if _, err := l2.Append(big(n)); err != nil {
		t.Fatalf("append after acknowledging everything: %v", err)
	}
}

// A restart on a file system that is full: the log opens (its records are
// still read and acknowledged), an Append reports ENOSPC until there is
// room again, and appends after that.
func TestReopenOnFullFileSystem(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("mounting a tmpfs needs root")
	}
	dir := t.TempDir()
	if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, "size=256k"); err != nil {
		t.Fatalf("mount tmpfs: %v", err)
	}
	t.Cleanup(func() { syscall.Unmount(dir, 0) })
	o := Options{MaxBytes: 64 << 20, Sync: SyncNever}
	l, _, err := Open(dir, o)
	if err != nil {
		t.Fatal(err)
	}
	appendN(t, l, 0, 5)
	l.Close()
	filler := filepath.Join(dir, "filler")
	f, err := os.Create(filler)
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := f.Write(make([]byte, 4096)); err != nil {
			break
		}
	}
	f.Close()
	l2, corrupt, err := Open(dir, o)
	if err != nil {
		t.Fatalf("open on a full file system: %v", err)
	}
	defer l2.Close()
	if len(corrupt) != 0 {
		t.Fatalf("corrupt records: %+v", corrupt)
	}
	if got := readAll(t, l2, true); len(got) != 5 || got[0] != "record 0000" {
		t.Fatalf("read %v", got)
	}
	if _, err := l2.Append(rec(5)); !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("append on a full file system: %v, want ENOSPC", err)
	}
	os.Remove(filler)
	if _, err := l2.Append(rec(5)); err != nil {
		t.Fatalf("append after space returned: %v", err)
	}
	if got := readAll(t, l2, false); len(got) != 1 || got[0] != "record 0005" {
		t.Fatalf("read %v", got)
	}
}
