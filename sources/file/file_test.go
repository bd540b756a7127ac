package file

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"gopkg.in/yaml.v3"

	"github.com/flowbus/flowbus/codec"
	flowpb "github.com/flowbus/flowbus/flow"
	"github.com/flowbus/flowbus/flow/observer"
	"github.com/flowbus/flowbus/internal/cputime"
	"github.com/flowbus/flowbus/pipeline"
)

// collector is a pipeline.Output that keeps a JSON line and a copy of
// every event it is given.
type collector struct {
	mu      sync.Mutex
	lines   []string
	events  []*observer.GetFlowsResponse
	batches int
	lost    uint64
	sizes   []int // InputBytes of each batch
	notify  chan struct{}
	// gate, when set, is received from before each Emit returns.
	gate chan struct{}
}

func newCollector() *collector { return &collector{notify: make(chan struct{}, 1)} }

func (c *collector) Emit(ctx context.Context, b *pipeline.Batch) error {
	defer b.Release()
	if c.gate != nil {
		<-c.gate
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.batches++
	c.sizes = append(c.sizes, b.InputBytes())
	for i := range b.Events {
		e := &b.Events[i]
		line, err := codec.JSON{}.Append(nil, e)
		if err != nil {
			return err
		}
		c.lines = append(c.lines, string(line))
		c.events = append(c.events, proto.Clone(codec.Envelope(e)).(*observer.GetFlowsResponse))
	}
	select {
	case c.notify <- struct{}{}:
	default:
	}
	return nil
}

func (c *collector) Lost(_ flowpb.LostEventSource, _ int32, n uint64) {
	c.mu.Lock()
	c.lost += n
	c.mu.Unlock()
}

func (c *collector) count() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.lines)
}

// waitFor polls until the collector holds n events.
func (c *collector) waitFor(t *testing.T, n int) {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for c.count() < n {
		select {
		case <-c.notify:
		case <-deadline:
			t.Fatalf("got %d events, want %d", c.count(), n)
		}
	}
}

type testSource struct {
	*Source
	reg *prometheus.Registry
	log *bytes.Buffer
}

func newTestSource(t *testing.T, cfg string, dir string) testSource {
	t.Helper()
	var node yaml.Node
	if err := yaml.Unmarshal([]byte(cfg), &node); err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	logs := &bytes.Buffer{}
	b := &pipeline.Build{Name: "in", Type: "file", Dir: dir, Metrics: reg,
		Log: slog.New(slog.NewTextHandler(&lockedWriter{w: logs}, nil))}
	src, err := pipeline.Make(b, node.Content[0], New)
	if err != nil {
		t.Fatal(err)
	}
	return testSource{src, reg, logs}
}

type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

func run(t *testing.T, s *Source) *collector {
	t.Helper()
	c := newCollector()
	ctx := context.Background()
	if err := s.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if err := s.Run(ctx, c); err != nil {
		t.Fatal(err)
	}
	return c
}

// wantLines returns the lines of a corpus file that hold flows or lost events.
func wantLines(t *testing.T, path string) []string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var want []string
	for _, l := range strings.SplitAfter(string(data), "\n") {
		if strings.HasPrefix(l, `{"flow"`) || strings.HasPrefix(l, `{"lost_events"`) {
			want = append(want, l)
		}
	}
	return want
}

// TestCorpusJSON reads a Hubble export file and re-encodes every flow and
// lost_events line: the output must be byte-identical to the input.
func TestCorpusJSON(t *testing.T) {
	s := newTestSource(t, "path: testdata/export.jsonl", ".")
	c := run(t, s.Source)
	want := wantLines(t, "testdata/export.jsonl")
	if len(c.lines) != len(want) {
		t.Fatalf("got %d events, want %d", len(c.lines), len(want))
	}
	for i := range want {
		if c.lines[i] != want[i] {
			t.Errorf("event %d:\n got %s\nwant %s", i, c.lines[i], want[i])
		}
	}
	for kind, n := range map[string]float64{"agent_event": 2, "debug_event": 2, "node_status": 1, "other": 1} {
		if got := counterValue(s.m.skipped[kindIndex(kind)]); got != n {
			t.Errorf("skipped %s = %v, want %v", kind, got, n)
		}
	}
	if got := counterValue(s.m.malformed); got != 0 {
		t.Errorf("malformed = %v, want 0", got)
	}
	if got := counterValue(s.m.lossy); got != 0 {
		t.Errorf("lossy = %v, want 0", got)
	}
}

func kindIndex(name string) lineKind {
	for k, n := range kindNames {
		if n == name {
			return lineKind(k)
		}
	}
	panic(name)
}

// TestEnvelopeKept checks that NodeName and Time are the line's, exactly as
// read, independent of the flow's own fields, and nil when absent.
func TestEnvelopeKept(t *testing.T) {
	dir := t.TempDir()
	lines := `{"flow":{"time":"2026-11-24T12:00:12Z","node_name":"prod/worker-1"},"node_name":"worker-1","time":"2026-11-24T12:00:13Z"}
{"flow":{"time":"2026-11-24T12:00:12Z","node_name":"a"}}
{"lost_events":{"num_events_lost":"1"},"node_name":"x"}
`
	path := filepath.Join(dir, "in.jsonl")
	if err := os.WriteFile(path, []byte(lines), 0o644); err != nil {
		t.Fatal(err)
	}
	s := newTestSource(t, "path: in.jsonl", dir)
	c := run(t, s.Source)
	if len(c.events) != 3 {
		t.Fatalf("got %d events", len(c.events))
	}
	e := c.events
	if e[0].NodeName != "worker-1" || e[0].Time.AsTime().Second() != 13 {
		t.Errorf("event 0 envelope = %q %v", e[0].NodeName, e[0].Time)
	}
	if e[1].NodeName != "" || e[1].Time != nil {
		t.Errorf("event 1 envelope = %q %v, want empty", e[1].NodeName, e[1].Time)
	}
	if e[2].NodeName != "x" || e[2].Time != nil || e[2].GetLostEvents().GetNumEventsLost() != 1 {
		t.Errorf("event 2 = %v", e[2])
	}
}

// TestMalformed counts and logs bad lines and keeps the good ones.
func TestMalformed(t *testing.T) {
	s := newTestSource(t, "path: testdata/malformed.jsonl", ".")
	c := run(t, s.Source)
	if got, want := len(c.lines), 5; got != want {
		t.Fatalf("got %d events, want %d:\n%s", got, want, strings.Join(c.lines, ""))
	}
	if got := counterValue(s.m.malformed); got != 9 {
		t.Errorf("malformed = %v, want 9", got)
	}
	if got := counterValue(s.m.lossy); got != 2 {
		t.Errorf("lossy = %v, want 2", got)
	}
	logs := s.log.String()
	// The first bad line is logged with its number, the rest summarised
	// when the source stops.
	for _, want := range []string{"skipping malformed line", "line=2", `text="{\"flow\":"`,
		"skipped more malformed lines", "count=8", "first_line=3", "last_line=14", "unknown to this schema"} {
		if !strings.Contains(logs, want) {
			t.Errorf("log lacks %q:\n%s", want, logs)
		}
	}
	if strings.Count(logs, "\n") > 4 {
		t.Errorf("too many log lines:\n%s", logs)
	}
	// The CRLF line is read without its '\r'.
	if last := c.lines[4]; last != `{"flow":{"time":"2026-11-24T12:00:02Z","verdict":"DROPPED"},"time":"2026-11-24T12:00:02Z"}`+"\n" {
		t.Errorf("last line = %s", last)
	}
	if got := c.events[3].GetFlow().GetVerdict(); got != flowpb.Verdict_DROPPED {
		t.Errorf("lossy line verdict = %v", got)
	}
}

// TestVariants reads lines written the other ways Hubble accepts
// (lowerCamel names, enums as numbers, whitespace): they decode to the same
// messages as the canonical line.
func TestVariants(t *testing.T) {
	canonical := `{"flow":{"time":"2026-11-24T12:00:00.500Z","verdict":"DROPPED","IP":{"source":"10.0.0.1","destination":"10.0.0.2","ipVersion":"IPv4"},"l4":{"TCP":{"source_port":1,"destination_port":2,"flags":{"SYN":true}}},"source":{"pod_name":"a"},"Type":"L3_L4","node_name":"n","drop_reason_desc":"POLICY_DENIED","is_reply":false,"socket_cookie":"42"},"node_name":"n","time":"2026-11-24T12:00:00.500Z"}`
	variants := []string{
		`{"flow":{"time":"2026-11-24T12:00:00.5Z","verdict":2,"IP":{"source":"10.0.0.1","destination":"10.0.0.2","ipVersion":1},"l4":{"TCP":{"sourcePort":1,"destinationPort":2,"flags":{"SYN":true}}},"source":{"podName":"a"},"Type":1,"nodeName":"n","dropReasonDesc":133,"isReply":false,"socketCookie":42},"nodeName":"n","time":"2026-11-24T13:00:00.500+01:00"}`,
		"  {\"flow\" : {\"socket_cookie\":\"42\", \"is_reply\":false,\"drop_reason_desc\":\"POLICY_DENIED\",\"node_name\":\"n\",\"Type\":\"L3_L4\",\"source\":{\"pod_name\":\"a\"},\"l4\":{\"TCP\":{\"destination_port\":2,\"source_port\":1,\"flags\":{\"SYN\":true}}},\"IP\":{\"ipVersion\":\"IPv4\",\"destination\":\"10.0.0.2\",\"source\":\"10.0.0.1\"},\"verdict\":\"DROPPED\",\"time\":\"2026-11-24T12:00:00.500000000Z\"},\n\t\"time\":\"2026-11-24T12:00:00.500Z\",\"node_name\":\"n\"}  ",
	}
	want := new(observer.GetFlowsResponse)
	if err := protojson.Unmarshal([]byte(canonical), want); err != nil {
		t.Fatal(err)
	}
	dec := newProtojsonDecoder()
	for i, v := range variants {
		b := pipeline.NewBatch()
		ev := b.Next()
		kind, lossy, err := dec.decode([]byte(v), ev)
		if err != nil || kind != kindFlow || lossy {
			t.Fatalf("variant %d: kind %v lossy %v err %v", i, kind, lossy, err)
		}
		if got := codec.Envelope(ev); !proto.Equal(got, want) {
			t.Errorf("variant %d:\n got %v\nwant %v", i, got, want)
		}
		line, _ := codec.JSON{}.Append(nil, ev)
		if string(line) != canonical+"\n" {
			t.Errorf("variant %d re-encoded:\n got %s\nwant %s", i, line, canonical)
		}
		b.Release()
	}
}

// TestLongLine reads lines of several megabytes, and skips one beyond the
// limit without holding it.
func TestLongLine(t *testing.T) {
	dir := t.TempDir()
	big := strings.Repeat("x", 5<<20)
	long := `{"flow":{"l7":{"http":{"headers":[{"key":"k","value":"` + big + `"}]}}},"node_name":"n"}` + "\n"
	var buf bytes.Buffer
	buf.WriteString(long)
	buf.WriteString(`{"flow":{},"node_name":"a"}` + "\n")
	buf.WriteString(`{"flow":{"uuid":"` + strings.Repeat("y", maxLineBytes) + `"}}` + "\n")
	buf.WriteString(long[:len(long)-1]) // last line without '\n'
	path := filepath.Join(dir, "long.jsonl")
	if err := os.WriteFile(path, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	s := newTestSource(t, "path: "+path, "")
	c := run(t, s.Source)
	if len(c.lines) != 3 {

		t.Fatalf("got %d events, want 3", len(c.lines))
	}
	if c.lines[0] != long || c.lines[2] != long || c.lines[1] != `{"flow":{},"node_name":"a"}`+"\n" {
		t.Error("long lines not reproduced")
	}
	if got := counterValue(s.m.malformed); got != 1 {
		t.Errorf("malformed = %v, want 1", got)
	}
	if !strings.Contains(s.log.String(), "line=3") {
		t.Errorf("log: %s", s.log.String())
	}
}

// TestBOM skips a byte order mark at the start of a file.
func TestBOM(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "bom.jsonl")
	os.WriteFile(path, []byte("\xef\xbb\xbf"+`{"flow":{},"node_name":"a"}`+"\n"), 0o644)
	s := newTestSource(t, "path: "+path, "")
	if c := run(t, s.Source); len(c.lines) != 1 {
		t.Fatalf("got %d events", len(c.lines))
	}
}

// TestBatches checks that events arrive in batches of DefaultBatchSize.
func TestBatches(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "many.jsonl")
	var buf bytes.Buffer
	n := 2*pipeline.DefaultBatchSize + 7
	for range n {
		buf.WriteString(`{"flow":{"verdict":"FORWARDED"},"node_name":"n"}` + "\n")
	}
	os.WriteFile(path, buf.Bytes(), 0o644)
	s := newTestSource(t, "path: "+path, "")
	c := run(t, s.Source)
	if len(c.lines) != n || c.batches != 3 {
		t.Fatalf("got %d events in %d batches", len(c.lines), c.batches)
	}
}

// TestBatchBytes: batches carry their lines' length, and a batch is cut at
// pipeline.DefaultBatchBytes of input (a buffer takes a batch whole, so
// 512 huge lines must not travel together).
func TestBatchBytes(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "big.jsonl")
	line := `{"flow":{"uuid":"` + strings.Repeat("u", 400<<10) + `"},"node_name":"n"}`
	os.WriteFile(path, []byte(strings.Repeat(line+"\n", 7)), 0o644)
	s := newTestSource(t, "path: "+path, "")
	c := run(t, s.Source)
	// 3 lines pass 1 MiB: batches of 3, 3 and 1.
	if len(c.lines) != 7 || c.batches != 3 {
		t.Fatalf("got %d events in %d batches, want 7 in 3", len(c.lines), c.batches)
	}
	for i, want := range []int{3 * len(line), 3 * len(line), len(line)} {
		if c.sizes[i] != want {
			t.Errorf("batch %d: InputBytes %d, want %d", i, c.sizes[i], want)
		}
	}
}

func TestConfig(t *testing.T) {
	tests := []struct {
		cfg, err string
	}{
		{"follow: true", `missing required key "path"`},
		{"path: '-'\nfollow: true", "2:9: file source: follow needs a file"},
		{"path: x\nbogus: 1", "bogus"},
	}
	for _, tt := range tests {
		var node yaml.Node
		if err := yaml.Unmarshal([]byte(tt.cfg), &node); err != nil {
			t.Fatal(err)
		}
		_, err := pipeline.Make(&pipeline.Build{Name: "in"}, node.Content[0], New)
		if err == nil || !strings.Contains(err.Error(), tt.err) {
			t.Errorf("%q: err = %v, want %q", tt.cfg, err, tt.err)
		}
	}
	s := newTestSource(t, "path: sub/in.jsonl", "/etc/flowbus")
	if s.path != "/etc/flowbus/sub/in.jsonl" {
		t.Errorf("path = %q", s.path)
	}
	s = newTestSource(t, "path: /missing/file", "")
	if err := s.Start(context.Background()); err == nil || !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Start on a missing file: %v", err)
	}
}

// TestStream reads a pipe: a partial batch is emitted as soon as the
// writer pauses, and the source stops when ctx ends even though the read
// blocks.
func TestStream(t *testing.T) {
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer pw.Close()
	defer pr.Close()
	s := newTestSource(t, "path: x", "")
	c := newCollector()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- s.readStream(ctx, c, pr, "pipe") }()
	for i := range 3 {
		io.WriteString(pw, `{"flow":{"verdict":"FORWARDED"},"node_name":"n"}`+"\n")
		c.waitFor(t, i+1)
	}
	io.WriteString(pw, `{"flow":{"verdict":"DROPPED"},`) // unfinished
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return after cancel")
	}
	if c.count() != 3 {
		t.Errorf("got %d events", c.count())
	}
}

// TestFIFO reads a named pipe, with and without follow.
func TestFIFO(t *testing.T) {
	for _, follow := range []bool{false, true} {
		dir := t.TempDir()
		path := filepath.Join(dir, "fifo")
		if err := syscall.Mkfifo(path, 0o600); err != nil {
			t.Fatal(err)
		}
		go func() {
			f, err := os.OpenFile(path, os.O_WRONLY, 0)
			if err != nil {
				return
			}
			io.WriteString(f, `{"flow":{},"node_name":"a"}`+"\n"+`{"flow":{},"node_name":"b"}`+"\n")
			f.Close()
		}()
		cfg := "path: " + path
		if follow {
			cfg += "\nfollow: true"
		}
		s := newTestSource(t, cfg, "")
		c := run(t, s.Source)
		if c.count() != 2 {
			t.Errorf("follow=%v: got %d events", follow, c.count())
		}
	}
}

// TestStreamEOF reads a stream to its end, including an unfinished last line.
func TestStreamEOF(t *testing.T) {
	s := newTestSource(t, "path: x", "")
	c := newCollector()
	in := strings.NewReader(`{"flow":{},"node_name":"a"}` + "\n" + `{"flow":{},"node_name":"b"}`)
	if err := s.readStream(context.Background(), c, in, "r"); err != nil {
		t.Fatal(err)
	}
	if c.count() != 2 || c.lines[1] != `{"flow":{},"node_name":"b"}`+"\n" {
		t.Fatalf("got %q", c.lines)
	}
}

// TestFollow appends to, truncates, rotates and recreates a followed file.
func TestFollow(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "events.log")
	line := func(n string) string { return `{"flow":{"verdict":"FORWARDED"},"node_name":"` + n + `"}` + "\n" }
	appendTo := func(s string) {
		f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		if _, err := f.WriteString(s); err != nil {
			t.Fatal(err)
		}
	}
	s := newTestSource(t, "path: events.log\nfollow: true", dir)
	s.poll = 5 * time.Millisecond
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := s.Start(ctx); err != nil { // file missing: waits for it
		t.Fatal(err)
	}
	c := newCollector()
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx, c) }()

	appendTo(line("a") + line("b"))
	c.waitFor(t, 2)
	// A line written in two pieces is read once complete.
	l := line("c")
	appendTo(l[:10])
	time.Sleep(20 * time.Millisecond) // let the source poll the partial line
	appendTo(l[10:])
	c.waitFor(t, 3)

	// Truncation: read from the start again.
	if err := os.Truncate(path, 0); err != nil {
		t.Fatal(err)
	}
	waitCounter(t, s.m.reopened.WithLabelValues("truncated"), 1)
	appendTo(line("d"))
	c.waitFor(t, 4)

	// Rotation: lines written to the old file before the rename are read,
	// then the new file from its start.
	appendTo(line("e"))
	if err := os.Rename(path, path+".1"); err != nil {
		t.Fatal(err)
	}
	appendTo(line("f") + line("g"))
	c.waitFor(t, 7)
	waitCounter(t, s.m.reopened.WithLabelValues("rotated"), 1)

	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range c.events {
		names = append(names, e.NodeName)
	}
	if got := strings.Join(names, ""); got != "abcdefg" {
		t.Errorf("events in order %q, want abcdefg", got)
	}
}

func waitCounter(t *testing.T, c prometheus.Counter, want float64) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for counterValue(c) < want {
		if time.Now().After(deadline) {
			t.Fatalf("counter = %v, want %v", counterValue(c), want)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// TestLineReader splits lines across buffer refills.
func TestLineReader(t *testing.T) {
	in := "a\n\nbb\r\n" + strings.Repeat("c", 3*readBufferBytes+5) + "\nlast"
	r := newLineReader(bufio.NewReaderSize(strings.NewReader(in), 16))
	var got []string
	for {
		l, err := r.next()
		if err == io.EOF {
			if l, err = r.finish(); err == io.EOF {
				break
			}
		}
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, string(l))
	}
	want := []string{"a", "", "bb", strings.Repeat("c", 3*readBufferBytes+5), "last"}
	if len(got) != len(want) {
		t.Fatalf("got %d lines", len(got))
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("line %d: len %d, want len %d", i, len(got[i]), len(want[i]))
		}
	}
}

// BenchmarkDecodeLine measures decoding one Hubble export line.
func BenchmarkDecodeLine(b *testing.B) {
	lines := wantLines(&testing.T{}, "testdata/export.jsonl")
	line := []byte(strings.TrimSuffix(lines[6], "\n")) // the enriched drop flow
	dec := newProtojsonDecoder()
	batch := pipeline.NewBatch()
	b.SetBytes(int64(len(line)))
	b.ReportAllocs()
	cpu, n := cpuTime(), 0
	for b.Loop() {
		batch.Truncate(0)
		if _, _, err := dec.decode(line, batch.Next()); err != nil {
			b.Fatal(err)
		}
		n++
	}
	b.ReportMetric(float64(cpuTime()-cpu)/float64(n), "cpu-ns/op")
}

// cpuTime is the CPU time the process used, in ns: on a shared machine it
// shows the cost of a benchmark better than the wall-clock time does.
func cpuTime() int64 { return int64(cputime.Process()) }

// BenchmarkSource measures the source reading a file of enriched flows.
func BenchmarkSource(b *testing.B) {
	lines := wantLines(&testing.T{}, "testdata/export.jsonl")
	dir := b.TempDir()
	path := filepath.Join(dir, "bench.jsonl")
	var buf bytes.Buffer
	const n = 4096
	for i := range n {
		buf.WriteString(lines[i%len(lines)])
	}
	os.WriteFile(path, buf.Bytes(), 0o644)
	b.SetBytes(int64(buf.Len()))
	b.ReportAllocs()
	var d discardOutput
	cpu, runs := cpuTime(), 0
	for b.Loop() {
		runs++
		src, err := pipeline.Make(&pipeline.Build{Name: "b"}, &yaml.Node{Kind: yaml.MappingNode, Content: []*yaml.Node{
			{Kind: yaml.ScalarNode, Value: "path"}, {Kind: yaml.ScalarNode, Value: path}}}, New)
		if err != nil {
			b.Fatal(err)
		}
		src.Start(context.Background())
		if err := src.Run(context.Background(), &d); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(runs*n), "ns/line")
	b.ReportMetric(float64(cpuTime()-cpu)/float64(runs*n), "cpu-ns/line")
}

type discardOutput struct{}

func (discardOutput) Emit(_ context.Context, b *pipeline.Batch) error { b.Release(); return nil }
func (discardOutput) Lost(flowpb.LostEventSource, int32, uint64)      {}

func counterValue(c prometheus.Counter) float64 {
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		panic(err)
	}
	return m.GetCounter().GetValue()
}
