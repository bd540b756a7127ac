package file_test

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"google.golang.org/protobuf/encoding/protodelim"
	"google.golang.org/protobuf/encoding/protojson"

	flowpb "github.com/flowbus/flowbus/flow"
	"github.com/flowbus/flowbus/flow/observer"
	"github.com/flowbus/flowbus/pipeline"
)

// tmpfs mounts a tmpfs of size bytes on a new temporary directory.
func tmpfs(t *testing.T, size string) string {
	t.Helper()
	dir := t.TempDir()
	if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, "size="+size); err != nil {
		t.Fatalf("mount tmpfs (needs root): %v", err)
	}
	t.Cleanup(func() {
		if err := syscall.Unmount(dir, 0); err != nil {
			t.Errorf("unmount %s: %v", dir, err)
		}
	})
	return dir
}

// flowBatch returns n flows numbered from first, of about size bytes each.
func flowBatch(first, n, size int) *pipeline.Batch {
	b := pipeline.NewBatch()
	pad := strings.Repeat("p", size)
	for i := range n {
		f := flowOf(b.Next())
		f.Uuid = pad
		f.PolicyMatchType = uint32(first + i)
	}
	return b
}

// lostBatch returns a batch of one reported LostEvent, as the runtime
// writes them.
func lostBatch(n uint64) *pipeline.Batch {
	b := pipeline.NewBatch()
	e := b.Next()
	e.Lost = &flowpb.LostEvent{Source: flowpb.LostEventSource_OBSERVER_EVENTS_QUEUE, NumEventsLost: n}
	e.Reported = true
	return b
}

// readRecords parses every record of a json or protobuf file; a torn or
// unparseable record fails the test.
func readRecords(t *testing.T, path, encoding string) []*observer.GetFlowsResponse {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var out []*observer.GetFlowsResponse
	if encoding == "protobuf" {
		r := bufio.NewReader(bytes.NewReader(data))
		for {
			m := new(observer.GetFlowsResponse)
			err := protodelim.UnmarshalFrom(r, m)
			if err == io.EOF {
				return out
			}
			if err != nil {
				t.Fatalf("record %d of %s: %v", len(out), path, err)
			}
			out = append(out, m)
		}
	}
	if len(data) > 0 && data[len(data)-1] != '\n' {
		t.Fatalf("%s does not end with a whole line: ...%q", path, data[max(0, len(data)-40):])
	}
	for i, l := range strings.Split(strings.TrimSuffix(string(data), "\n"), "\n") {
		if l == "" && len(data) == 0 {
			break
		}
		m := new(observer.GetFlowsResponse)
		if err := protojson.Unmarshal([]byte(l), m); err != nil {
			t.Fatalf("line %d of %s: %v: %.80q", i+1, path, err, l)
		}
		out = append(out, m)
	}
	return out
}

// TestDiskFull: a write that fails half-way on a full disk (ENOSPC) leaves
// no fragment: the file holds whole records after every failed write, the
// events of the failed write are reported as failed, and when space
// returns the LostEvent for them is written as a whole record.
func TestDiskFull(t *testing.T) {
	for _, enc := range []string{"json", "protobuf"} {
		t.Run(enc, func(t *testing.T) {
			dir := tmpfs(t, "256k")
			filler := filepath.Join(dir, "filler")
			if err := os.WriteFile(filler, make([]byte, 64<<10), 0o644); err != nil {
				t.Fatal(err)
			}
			path := filepath.Join(dir, "events.out")
			s := newSink(t, "path: "+path, enc, "")
			t.Cleanup(func() { s.Close(context.Background()) }) // before the unmount
			ctx := context.Background()
			delivered, failed, next := 0, 0, 0
			write := func(b *pipeline.Batch) int {
				defer b.Release()
				n, err := s.Write(ctx, b)
				if err != nil {
					t.Fatal(err)
				}
				return n
			}
			// Fill the disk: batches of 30 flows of ~1000 bytes.
			for failed == 0 {
				n := write(flowBatch(next, 30, 997))
				next += 30
				failed += n
				delivered += 30 - n
				got := readRecords(t, path, enc) // parseable after every write
				if len(got) != delivered {
					t.Fatalf("file holds %d records, %d delivered", len(got), delivered)
				}
			}
			// Still (nearly) full: whatever of the next batch fits is
			// written whole, the rest fails.
			n := write(flowBatch(next, 30, 997))
			failed += n
			delivered += 30 - n
			next += 30
			readRecords(t, path, enc)
			// The LostEvent for them is written whole, now or, once space
			// returns, when the runtime reports it again.
			n = write(lostBatch(uint64(failed)))
			readRecords(t, path, enc)
			if err := os.Remove(filler); err != nil {
				t.Fatal(err)
			}
			if n == 1 {
				if n := write(lostBatch(uint64(failed))); n != 0 {
					t.Fatalf("LostEvent after space returned: %d failed", n)
				}
			}
			if n := write(flowBatch(next, 10, 997)); n != 0 {
				t.Fatalf("Write after space returned: %d failed", n)
			}
			delivered += 10
			if err := s.Close(ctx); err != nil {
				t.Fatal(err)
			}
			got := readRecords(t, path, enc)
			if len(got) != delivered+1 {
				t.Fatalf("file holds %d records, want %d flows and 1 LostEvent", len(got), delivered)
			}
			var lost *flowpb.LostEvent
			flows, want := 0, uint32(0)
			for _, m := range got {
				if l := m.GetLostEvents(); l != nil {
					lost = l
					continue
				}
				if f := m.GetFlow(); f.PolicyMatchType != want {
					// Numbers skip exactly the failed events.
					if f.PolicyMatchType < want {
						t.Fatalf("flow %d after flow %d", f.PolicyMatchType, want-1)
					}
					want = f.PolicyMatchType
				}
				want++
				flows++
			}
			if lost == nil || lost.NumEventsLost != uint64(failed) {
				t.Errorf("LostEvent = %v, want %d lost", lost, failed)
			}
			if flows+failed != next+10 {
				t.Errorf("%d flows in the file + %d failed != %d written", flows, failed, next+10)
			}
		})
	}
}

// TestTornTail: a process killed during a write leaves a torn last record;
// the next start cuts it off, so the file stays readable to its end.
func TestTornTail(t *testing.T) {
	for _, enc := range []string{"json", "protobuf"} {
		t.Run(enc, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "events.out")
			s := newSink(t, "path: "+path, enc, "")
			b := flowBatch(0, 5, 100)
			if n, err := s.Write(context.Background(), b); n != 0 || err != nil {
				t.Fatal(n, err)
			}
			b.Release()
			s.Close(context.Background())
			whole, _ := os.ReadFile(path)
			// The first 40 bytes of a sixth record, as a killed write leaves.
			b = flowBatch(5, 1, 100)
			tmp := filepath.Join(dir, "one")
			one := newSink(t, "path: "+tmp, enc, "")
			one.Write(context.Background(), b)
			b.Release()
			one.Close(context.Background())
			rec, _ := os.ReadFile(tmp)
			torn := append(bytes.Clone(whole), rec[:40]...)
			if err := os.WriteFile(path, torn, 0o644); err != nil {
				t.Fatal(err)
			}

			s = newSink(t, "path: "+path, enc, "")
			b = flowBatch(6, 2, 100)
			if n, err := s.Write(context.Background(), b); n != 0 || err != nil {
				t.Fatal(n, err)
			}
			b.Release()
			s.Close(context.Background())
			got := readRecords(t, path, enc)
			var nums []uint32
			for _, m := range got {
				nums = append(nums, m.GetFlow().PolicyMatchType)
			}
			if len(nums) != 7 || nums[4] != 4 || nums[5] != 6 {
				t.Errorf("records %v, want 0..4 then 6, 7", nums)
			}
		})
	}
}

// TestForeignLastLine: a file whose last line is not a record of this sink
// and has no newline keeps it; the next record starts on a new line.
func TestForeignLastLine(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "events.log")
	os.WriteFile(path, []byte("# header\nnot json"), 0o644)
	s := newSink(t, "path: events.log", "json", dir)
	writeLines(t, s, 1, 1, 100)
	s.Close(context.Background())
	data, _ := os.ReadFile(path)
	if !strings.HasPrefix(string(data), "# header\nnot json\n{") {
		t.Errorf("got %q", data)
	}
}

// TestRotateLeftovers: a run killed while compressing leaves a partial
// .gz.tmp beside the plain backup, or a complete .gz beside it; the next
// start removes the partial file, compresses the backup and removes the
// plain copy, so that every .gz is complete.
func TestRotateLeftovers(t *testing.T) {
	dir := t.TempDir()
	line := `{"flow":{"uuid":"x"}}` + "\n"
	b1 := filepath.Join(dir, "events-2026-01-01T00-00-00.000.log")
	b2 := filepath.Join(dir, "events-2026-01-01T00-00-01.000.log")
	os.WriteFile(b1, []byte(line), 0o644)
	os.WriteFile(b1+".gz.tmp", []byte{0x1f, 0x8b, 8}, 0o644)
	os.WriteFile(b2, []byte(line), 0o644)
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write([]byte(line))
	zw.Close()
	os.WriteFile(b2+".gz", gz.Bytes(), 0o644)

	s := newSink(t, "path: events.log\nrotate: {max_size_mb: 1, compress: true}", "json", dir)
	if err := s.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	entries, _ := os.ReadDir(dir)
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	want := "events-2026-01-01T00-00-00.000.log.gz events-2026-01-01T00-00-01.000.log.gz events.log"
	if strings.Join(names, " ") != want {
		t.Fatalf("files %v, want %s", names, want)
	}
	for _, p := range []string{b1, b2} {
		data, err := readGzip(p + ".gz")
		if err != nil || string(data) != line {
			t.Errorf("%s: %q, %v", p, data, err)
		}
	}
}

func readGzip(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		return nil, err
	}
	data, err := io.ReadAll(zr)
	if err == nil {
		err = zr.Close()
	}
	if errors.Is(err, io.ErrUnexpectedEOF) {
		err = errors.New("truncated gzip")
	}
	return data, err
}

// TestCompressAtClose: with compress, backups are pruned to max_backups
// counting the compressed ones, and Close waits for the compression: after
// a clean exit every backup is a complete .gz and nothing else is left.
// The flows are hard to compress, so that gzip runs behind the rotations.
func TestCompressAtClose(t *testing.T) {
	dir := t.TempDir()
	s := newSink(t, "path: events.log\nrotate: {max_size_mb: 1, max_backups: 3, compress: true}", "json", dir)
	rnd := uint64(1)
	const total = 12000
	for i := 0; i < total; i += 100 {
		b := pipeline.NewBatch()
		for j := range 100 {
			f := flowOf(b.Next())
			var sb strings.Builder
			for range 60 { // 960 bytes of pseudo-random hex
				rnd = rnd*6364136223846793005 + 1442695040888963407
				fmt.Fprintf(&sb, "%016x", rnd)
			}
			f.Uuid = sb.String()
			f.PolicyMatchType = uint32(i + j)
		}
		if n, err := s.Write(context.Background(), b); n != 0 || err != nil {
			t.Fatal(n, err)
		}
		b.Release()
	}
	if err := s.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	entries, _ := os.ReadDir(dir)
	var gz []string
	for _, e := range entries {
		switch {
		case e.Name() == "events.log":
		case backupName.MatchString(e.Name()) && strings.HasSuffix(e.Name(), ".gz"):
			gz = append(gz, e.Name())
		default:
			t.Errorf("left after Close: %s", e.Name())
		}
	}
	if len(gz) != 3 {
		t.Errorf("%d compressed backups, want max_backups = 3: %v", len(gz), gz)
	}
	var all []byte
	for _, name := range gz {
		data, err := readGzip(filepath.Join(dir, name))
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		all = append(all, data...)
	}
	cur, _ := os.ReadFile(filepath.Join(dir, "events.log"))
	all = append(all, cur...)
	n := strings.Count(string(all), "\n")
	checkLines(t, all, total-n, total)
}

// TestStdoutClosed: when the reader of stdout went away (EPIPE), the sink
// reports every event of that write and of every later one as failed,
// without writing again.
func TestStdoutClosed(t *testing.T) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	r.Close()
	defer w.Close()
	old := os.Stdout
	os.Stdout = w
	s := newSink(t, "path: '-'", "json", "")
	os.Stdout = old
	for i := range 3 {
		b := flowBatch(0, 10, 100)
		n, err := s.Write(context.Background(), b)
		b.Release()
		if n != 10 || err != nil {
			t.Fatalf("Write %d = %d, %v; want 10 failed", i, n, err)
		}
	}
	if err := s.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
}

// TestCompressAbandonedAtClose: when Close's context ends before the
// compression is done, the partial .gz is removed and the plain backups
// stay: no truncated .gz is ever left.
func TestCompressAbandonedAtClose(t *testing.T) {
	dir := t.TempDir()
	s := newSink(t, "path: events.log\nrotate: {max_size_mb: 1, max_backups: 5, compress: true}", "json", dir)
	writeLines(t, s, 5000, 500, 1000)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := s.Close(ctx); err != nil {
		t.Fatal(err)
	}
	entries, _ := os.ReadDir(dir)
	backups := 0
	for _, e := range entries {
		name := e.Name()
		switch {
		case name == "events.log":
		case strings.HasSuffix(name, ".gz"):
			if _, err := readGzip(filepath.Join(dir, name)); err != nil {
				t.Errorf("%s: %v", name, err)
			}
			backups++
		case backupName.MatchString(name):
			backups++
		default:
			t.Errorf("left after Close: %s", name)
		}
	}
	if backups != 4 {
		t.Errorf("%d backups, want 4", backups)
	}
	_, _, data := readAll(t, dir)
	checkLines(t, data, 0, 5000)
}
