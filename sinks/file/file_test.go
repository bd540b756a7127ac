package file_test

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protodelim"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"gopkg.in/yaml.v3"

	flowpb "github.com/flowbus/flowbus/flow"
	"github.com/flowbus/flowbus/flow/observer"
	"github.com/flowbus/flowbus/pipeline"
	filesink "github.com/flowbus/flowbus/sinks/file"
	filesource "github.com/flowbus/flowbus/sources/file"
)

const corpus = "../../sources/file/testdata/export.jsonl"

func node(t testing.TB, cfg string) *yaml.Node {
	t.Helper()
	var n yaml.Node
	if err := yaml.Unmarshal([]byte(cfg), &n); err != nil {
		t.Fatal(err)
	}
	return n.Content[0]
}

func newSink(t testing.TB, cfg, encoding, dir string) pipeline.Sink {
	t.Helper()
	s, err := pipeline.Make(&pipeline.Build{Name: "out", Type: "file", Encoding: encoding, Dir: dir,
		Log: slog.New(slog.NewTextHandler(io.Discard, nil))}, node(t, cfg), filesink.New)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	return s
}

// flowOf returns e's Flow storage, reset.
func flowOf(e *pipeline.Event) *flowpb.Flow {
	f := e.FlowStorage()
	proto.Reset(f)
	return f
}

// sinkOutput is a pipeline.Output that writes every batch to a sink.
type sinkOutput struct {
	t      testing.TB
	s      pipeline.Sink
	failed int
}

func (o *sinkOutput) Emit(ctx context.Context, b *pipeline.Batch) error {
	defer b.Release()
	failed, err := o.s.Write(ctx, b)
	o.failed += failed
	return err
}

func (o *sinkOutput) Lost(flowpb.LostEventSource, int32, uint64) {}

// copyFile runs a file source on in into the sink.
func copyFile(t *testing.T, in string, s pipeline.Sink) {
	t.Helper()
	src, err := pipeline.Make(&pipeline.Build{Name: "in", Type: "file", Dir: ".",
		Log: slog.New(slog.NewTextHandler(io.Discard, nil))}, node(t, "path: "+in), filesource.New)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := src.Start(ctx); err != nil {
		t.Fatal(err)
	}
	out := &sinkOutput{t: t, s: s}
	if err := src.Run(ctx, out); err != nil {
		t.Fatal(err)
	}
	if out.failed != 0 {
		t.Fatalf("%d events failed", out.failed)
	}
	if err := s.Close(ctx); err != nil {
		t.Fatal(err)
	}
}

// corpusEvents returns the flow and lost_events lines of the corpus.
func corpusEvents(t *testing.T) []string {
	t.Helper()
	data, err := os.ReadFile(corpus)
	if err != nil {
		t.Fatal(err)
	}
	var lines []string
	for _, l := range strings.SplitAfter(string(data), "\n") {
		if strings.HasPrefix(l, `{"flow"`) || strings.HasPrefix(l, `{"lost_events"`) {
			lines = append(lines, l)
		}
	}
	return lines
}

// TestCopyJSON: file source → file sink (json) reproduces every flow and
// lost_events line of a Hubble export file byte for byte.
func TestCopyJSON(t *testing.T) {
	dir := t.TempDir()
	s := newSink(t, "path: out/events.log", "json", dir)
	copyFile(t, corpus, s)
	got, err := os.ReadFile(filepath.Join(dir, "out", "events.log"))
	if err != nil {
		t.Fatal(err)
	}
	want := strings.Join(corpusEvents(t), "")
	if string(got) != want {
		t.Errorf("output differs from the input's events:\n got %s\nwant %s", got, want)
	}
	fi, _ := os.Stat(filepath.Join(dir, "out", "events.log"))
	if fi.Mode().Perm() != 0o644&^umask() {
		t.Errorf("mode = %v", fi.Mode())
	}
}

func umask() os.FileMode {
	dir, _ := os.MkdirTemp("", "umask")
	defer os.RemoveAll(dir)
	f, _ := os.OpenFile(filepath.Join(dir, "f"), os.O_CREATE, 0o777)
	fi, _ := f.Stat()
	f.Close()
	return 0o777 &^ fi.Mode().Perm()
}

// TestCopyProtobuf: the protobuf output is length-delimited
// GetFlowsResponse messages equal to the input's events.
func TestCopyProtobuf(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "events.pb")
	s := newSink(t, "path: "+path, "protobuf", "")
	copyFile(t, corpus, s)
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	r := bufio.NewReader(f)
	lines := corpusEvents(t)
	for i, line := range lines {
		want := new(observer.GetFlowsResponse)
		if err := protojson.Unmarshal([]byte(line), want); err != nil {
			t.Fatalf("line %d: %v", i, err)
		}
		got := new(observer.GetFlowsResponse)
		if err := protodelim.UnmarshalFrom(r, got); err != nil {
			t.Fatalf("message %d: %v", i, err)
		}
		if !proto.Equal(got, want) {
			t.Errorf("message %d:\n got %v\nwant %v", i, got, want)
		}
	}
	if _, err := r.ReadByte(); err != io.EOF {
		t.Errorf("trailing data after %d messages", len(lines))
	}
}

// TestProtobufLengths covers one-, two- and three-byte length prefixes.
func TestProtobufLengths(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "events.pb")
	s := newSink(t, "path: "+path, "protobuf", "")
	sizes := []int{0, 10, 100, 200, 16000, 17000, 3 << 20}
	b := pipeline.NewBatch()
	defer b.Release()
	for _, n := range sizes {
		e := b.Next()
		f := flowOf(e)
		f.Uuid = strings.Repeat("u", n)
		e.NodeName = "n"
	}
	if failed, err := s.Write(context.Background(), b); failed != 0 || err != nil {
		t.Fatalf("Write = %d, %v", failed, err)
	}
	s.Close(context.Background())
	data, _ := os.ReadFile(path)
	r := bytes.NewReader(data)
	for _, n := range sizes {
		m := new(observer.GetFlowsResponse)
		if err := protodelim.UnmarshalFrom(r, m); err != nil {
			t.Fatal(err)
		}
		if len(m.GetFlow().GetUuid()) != n || m.NodeName != "n" {
			t.Errorf("size %d: got uuid of %d bytes, node %q", n, len(m.GetFlow().GetUuid()), m.NodeName)
		}
	}
	if r.Len() != 0 {
		t.Errorf("%d trailing bytes", r.Len())
	}
}

var backupName = regexp.MustCompile(`^events-\d{4}-\d{2}-\d{2}T\d{2}-\d{2}-\d{2}\.\d{3}\.log(\.gz)?$`)

// writeLines writes n numbered flows of about size bytes each, in
// batches of per events.
func writeLines(t *testing.T, s pipeline.Sink, n, per, size int) {
	t.Helper()
	pad := strings.Repeat("p", size-60)
	for i := 0; i < n; {
		b := pipeline.NewBatch()
		for j := 0; j < per && i < n; j++ {
			e := b.Next()
			f := flowOf(e)
			f.Uuid = pad
			f.NodeName = string(rune('a' + i%26))
			f.PolicyMatchType = uint32(i)
			i++
		}
		if failed, err := s.Write(context.Background(), b); failed != 0 || err != nil {
			t.Fatalf("Write = %d, %v", failed, err)
		}
		b.Release()
	}
}

// readAll returns the files of dir (backups oldest first, then the
// current file), decompressed.
func readAll(t *testing.T, dir string) (files []string, sizes []int, data []byte) {
	t.Helper()
	entries, _ := os.ReadDir(dir)
	var backups []string
	for _, e := range entries {
		if e.Name() == "events.log" {
			continue
		}
		if !backupName.MatchString(e.Name()) {
			t.Errorf("unexpected file %s", e.Name())
		}
		backups = append(backups, e.Name())
	}
	sort.Strings(backups) // the timestamp sorts by time
	for _, name := range append(backups, "events.log") {
		raw, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		if strings.HasSuffix(name, ".gz") {
			zr, err := gzip.NewReader(bytes.NewReader(raw))
			if err != nil {
				t.Fatal(err)
			}
			if raw, err = io.ReadAll(zr); err != nil {
				t.Fatal(err)
			}
		}
		files = append(files, name)
		sizes = append(sizes, len(raw))
		data = append(data, raw...)
	}
	return files, sizes, data
}

// checkLines checks that data holds whole numbered lines from..to-1.
func checkLines(t *testing.T, data []byte, from, to int) {
	t.Helper()
	lines := strings.Split(strings.TrimSuffix(string(data), "\n"), "\n")
	if len(lines) != to-from {
		t.Fatalf("got %d lines, want %d", len(lines), to-from)
	}
	for i, l := range lines {
		f := new(flowpb.Flow)
		env := new(observer.GetFlowsResponse)
		if err := protojson.Unmarshal([]byte(l), env); err != nil {
			t.Fatalf("line %d is not whole: %v", i, err)
		}
		f = env.GetFlow()
		if int(f.PolicyMatchType) != from+i {
			t.Fatalf("line %d holds flow %d, want %d", i, f.PolicyMatchType, from+i)
		}
	}
}

// TestRotate: files rotate before a write would exceed max_size_mb, never
// split an event, keep max_backups backups named with a UTC timestamp.
func TestRotate(t *testing.T) {
	dir := t.TempDir()
	s := newSink(t, "path: events.log\nrotate: {max_size_mb: 1, max_backups: 10}", "json", dir)
	// 3000 lines of ~1000 bytes, in batches of 100: about 2.9 MiB.
	writeLines(t, s, 3000, 100, 1000)
	if err := s.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	files, sizes, data := readAll(t, dir)
	if len(files) < 3 {
		t.Errorf("files %v, want backups and the current file", files)
	}
	for i, n := range sizes {
		if n > 1<<20 {
			t.Errorf("%s has %d bytes, more than 1 MiB", files[i], n)
		}
		// Rotation happens when the next batch does not fit.
		if i < len(sizes)-1 && n < 1<<20-100*1024 {
			t.Errorf("%s has only %d bytes", files[i], n)
		}
	}
	checkLines(t, data, 0, 3000)
	for _, f := range files {
		fi, _ := os.Stat(filepath.Join(dir, f))
		if fi.Mode().Perm() != 0o644&^umask() {
			t.Errorf("%s mode = %v", f, fi.Mode())
		}
	}
}

// TestRotateBackupsCompress keeps the newest max_backups backups, gzipped.
func TestRotateBackupsCompress(t *testing.T) {
	dir := t.TempDir()
	s := newSink(t, "path: events.log\nrotate: {max_size_mb: 1, max_backups: 2, compress: true}", "json", dir)
	// A single batch larger than the limit is split at event boundaries.
	writeLines(t, s, 5000, 2500, 1000)
	// Compression and removal run in the background: wait for them.
	deadline := time.Now().Add(20 * time.Second)
	for {
		entries, _ := os.ReadDir(dir)
		gz, other := 0, 0
		for _, e := range entries {
			if strings.HasSuffix(e.Name(), ".gz") {
				gz++
			} else if e.Name() != "events.log" {
				other++
			}
		}
		if gz == 2 && other == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("backups: %d gzipped, %d plain", gz, other)
		}
		time.Sleep(10 * time.Millisecond)
	}
	s.Close(context.Background())
	_, _, data := readAll(t, dir)
	// 5000 lines of 1000 bytes fill 5 files of 1048 lines; the newest two
	// backups and the current file hold the last lines.
	n := strings.Count(string(data), "\n")
	checkLines(t, data, 5000-n, 5000)
	if n < 2*1000 {
		t.Errorf("only %d lines kept", n)
	}
}

// TestRotateAppends continues an existing file and rotates it when the
// next write would exceed the limit.
func TestRotateAppends(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "events.log")
	os.WriteFile(path, bytes.Repeat([]byte("x"), (1<<20)-500), 0o600)
	s := newSink(t, "path: events.log\nrotate: {max_size_mb: 1}", "json", dir)
	writeLines(t, s, 1, 1, 1000)
	s.Close(context.Background())
	entries, _ := os.ReadDir(dir)
	if len(entries) != 2 {
		t.Fatalf("files: %v", entries)
	}
	data, _ := os.ReadFile(path)
	checkLines(t, data, 0, 1)
}

// TestEventTooLarge: an event larger than max_size_mb is given up, the
// others are written.
func TestEventTooLarge(t *testing.T) {
	dir := t.TempDir()
	s := newSink(t, "path: events.log\nrotate: {max_size_mb: 1}", "json", dir)
	b := pipeline.NewBatch()
	defer b.Release()
	flowOf(b.Next()).Uuid = "small"
	flowOf(b.Next()).Uuid = strings.Repeat("u", 2<<20)
	flowOf(b.Next()).Uuid = "small"
	failed, err := s.Write(context.Background(), b)
	if failed != 1 || err != nil {
		t.Fatalf("Write = %d, %v; want 1 failed", failed, err)
	}
	s.Close(context.Background())
	data, _ := os.ReadFile(filepath.Join(dir, "events.log"))
	if strings.Count(string(data), "small") != 2 {
		t.Errorf("got %s", data)
	}
}

// TestWriteError reports every event a full disk refused as failed,
// LostEvents flowbus made itself included (the runtime reports them again).
func TestWriteError(t *testing.T) {
	s := newSink(t, "path: /dev/full", "json", "")
	b := pipeline.NewBatch()
	defer b.Release()
	flowOf(b.Next())
	flowOf(b.Next())
	e := b.Next()
	e.Lost, e.Reported = &flowpb.LostEvent{NumEventsLost: 1}, true
	failed, err := s.Write(context.Background(), b)
	if failed != 3 || err != nil {
		t.Fatalf("Write = %d, %v; want 3 failed", failed, err)
	}
}

// TestStdout writes to stdout.
func TestStdout(t *testing.T) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	old := os.Stdout
	os.Stdout = w
	s := newSink(t, "path: '-'", "json", "")
	os.Stdout = old
	b := pipeline.NewBatch()
	f := b.Next()
	flowOf(f).Verdict = flowpb.Verdict_FORWARDED
	f.NodeName = "n"
	s.Write(context.Background(), b)
	b.Release()
	s.Close(context.Background())
	w.Close()
	got, _ := io.ReadAll(r)
	if string(got) != `{"flow":{"verdict":"FORWARDED"},"node_name":"n"}`+"\n" {
		t.Errorf("stdout got %q", got)
	}
}

func TestConfig(t *testing.T) {
	tests := []struct{ cfg, enc, err string }{
		{"rotate: {max_size_mb: 1}", "json", `missing required key "path"`},
		{"path: '-'\nrotate: {max_size_mb: 1}", "json", "2:9: file sink: rotate needs a file"},
		{"path: x\nrotate: {max_size_mb: -1}", "json", "2:23: file sink: max_size_mb must be at least 1"},
		{"path: x\nrotate: {max_backups: 0}", "json", "2:23: file sink: max_backups must be at least 1"},
		{"path: ''", "json", "1:7: file sink: path is empty"},
		{"path: x\nrotate: {max_size: 1}", "json", "max_size"},
		{"path: x", "xml", "unknown encoding"},
	}
	for _, tt := range tests {
		_, err := pipeline.Make(&pipeline.Build{Name: "out", Encoding: tt.enc}, node(t, tt.cfg), filesink.New)
		if err == nil || !strings.Contains(err.Error(), tt.err) {
			t.Errorf("%q: err = %v, want %q", tt.cfg, err, tt.err)
		}
	}
	s, err := pipeline.Make(&pipeline.Build{Name: "out"}, node(t, "path: /proc/nonexistent/events.log"), filesink.New)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(context.Background()); err == nil {
		t.Error("Start on an invalid path succeeded")
	}
}
