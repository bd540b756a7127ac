package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/flowbus/flowbus/internal/bintest"
	"github.com/flowbus/flowbus/internal/cputime"
	"github.com/flowbus/flowbus/pipeline"
)

// The tests here run the real binary, built once by TestMain, with the real
// component types.

var binary string

func TestMain(m *testing.M) { bintest.Main(m, ".", &binary) }

func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

var summaryRE = regexp.MustCompile(`(?m)^flowbus: received=(\d+) delivered=(\d+) filtered=(\d+) sampled=(\d+) rate_limited=(\d+) lost=(\d+)$`)

// summary parses the exit summary line from stderr.
func summary(t *testing.T, stderr string) (received, delivered, lost uint64) {
	t.Helper()
	m := summaryRE.FindStringSubmatch(stderr)
	if m == nil {
		t.Fatalf("no summary line in stderr:\n%s", stderr)
	}
	n := make([]uint64, 6)
	for i := range n {
		n[i], _ = strconv.ParseUint(m[i+1], 10, 64)
	}
	if n[0] != n[1]+n[2]+n[3]+n[4]+n[5] {
		t.Errorf("summary does not reconcile: %s", m[0])
	}
	return n[0], n[1], n[5]
}

func TestValidateCommand(t *testing.T) {
	cfg := writeFile(t, "pipeline.yaml", `sources:
  in:
    type: file
    path: /dev/null
    folow: true
sinks:
  out:
    type: file
    inputs: [in, ghost, loop]
    path: [out.json]
transforms:
  loop: {type: filter, inputs: [loop2]}
  loop2: {type: filter, inputs: [loop]}
`)
	cmd := bintest.Command(binary, "validate", "-c", cfg)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 {
		t.Fatalf("want exit status 1, got %v\nstderr:\n%s", err, stderr.String())
	}
	lines := strings.Split(strings.TrimSuffix(stderr.String(), "\n"), "\n")
	want := []string{
		cfg + `:5:5: source "in" (file): unknown key "folow" (valid keys: follow, path)`,
		cfg + `:9:18: sink "out": unknown input "ghost" (sources and transforms: in, loop, loop2)`,
		cfg + `:10:11: sink "out" (file): expected a string, got a list`,
		cfg + `:13:34: transform "loop2": input "loop" closes a cycle: loop -> loop2 -> loop`,
	}
	if strings.Join(lines, "\n") != strings.Join(want, "\n") {
		t.Errorf("stderr:\n%s\nwant:\n%s", stderr.String(), strings.Join(want, "\n"))
	}
}

// SIGTERM while events are in flight: flowbus stops its sources, drains
// every buffer into the sink, exits 0, and loses nothing it accepted. The
// sink writes into a FIFO that the test reads slowly, so thousands of events
// are still queued when the signal arrives.
func TestSIGTERMDrains(t *testing.T) {
	dir := t.TempDir()
	in := filepath.Join(dir, "in.json")
	out := filepath.Join(dir, "out.fifo")
	if err := syscall.Mkfifo(out, 0o600); err != nil {
		t.Fatal(err)
	}
	line := `{"flow":{"time":"2026-11-24T12:00:00Z","verdict":"FORWARDED","node_name":"n1"},"node_name":"n1","time":"2026-11-24T12:00:00Z"}` + "\n"
	const total = 20000
	addr := freeAddr(t)
	if err := os.WriteFile(in, []byte(strings.Repeat(line, total)), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg := writeFile(t, "pipeline.yaml", fmt.Sprintf(`
metrics: {listen: "%s"}
sources:
  in: {type: file, path: %s, follow: true}
sinks:
  out: {type: file, path: %s, inputs: [in], buffer: {events: 100000}}
`, addr, in, out))
	cmd := bintest.Command(binary, "run", "-c", cfg)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	fifo, err := os.Open(out) // blocks until the sink opens it
	if err != nil {
		t.Fatal(err)
	}
	defer fifo.Close()
	r := bufio.NewReaderSize(fifo, 4096)
	var got uint64
	readLine := func() bool {
		l, err := r.ReadString('\n')
		if err != nil {
			return false
		}
		if l != line {
			t.Fatalf("line %d = %q", got, l)
		}
		got++
		return true
	}
	// Read slowly until the sink is clearly behind, then stop flowbus.
	for got < 1000 && readLine() {
		if got%100 == 0 {
			time.Sleep(time.Millisecond)
		}
	}
	// Wait (reading nothing more) until the source has read the whole file.
	want := fmt.Sprintf(`flowbus_component_events_out_total{component="in",kind="source",type="file"} %d`, total)
	for deadline := time.Now().Add(20 * time.Second); !strings.Contains(scrape(addr), want); {
		if time.Now().After(deadline) {
			t.Fatalf("the source did not read %d lines:\n%s", total, scrape(addr))
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	atSignal := got
	for readLine() {
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("exit: %v\nstderr:\n%s", err, stderr.String())
	}
	received, delivered, lost := summary(t, stderr.String())
	t.Logf("read %d lines before SIGTERM; received=%d delivered=%d lost=%d", atSignal, received, delivered, lost)
	if received != total || atSignal > total/2 || lost != 0 || delivered != received {
		t.Errorf("want many events in flight and none lost: read %d before SIGTERM, received=%d delivered=%d lost=%d", atSignal, received, delivered, lost)
	}
	if got != delivered {
		t.Errorf("the FIFO carried %d lines, summary says delivered=%d", got, delivered)
	}
}

// freeAddr returns a loopback address with a port that was free just now.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// scrape returns the body of /metrics at addr, or "" when it does not answer.
func scrape(addr string) string {
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		return ""
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

// The configuration example in README.md is valid.
func TestREADMEExampleValidates(t *testing.T) {
	readme, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile("(?s)```yaml\n(.*?)```").FindSubmatch(readme)
	if m == nil {
		t.Fatal("README.md has no yaml example")
	}
	cfg := writeFile(t, "pipeline.yaml", string(m[1]))
	out, err := bintest.Command(binary, "validate", "-c", cfg).CombinedOutput()
	if err != nil {
		t.Fatalf("validate: %v\n%s", err, out)
	}
}

// The default pipeline.yaml is valid.
func TestDefaultPipelineValidates(t *testing.T) {
	out, err := bintest.Command(binary, "validate").CombinedOutput()
	if err != nil {
		t.Fatalf("validate: %v\n%s", err, out)
	}
}

// BenchmarkGenerateDiscard measures generate → discard through the whole
// runtime: ns/op and allocs/op are per flow.
func BenchmarkGenerateDiscard(b *testing.B) {
	dir := b.TempDir()
	path := filepath.Join(dir, "pipeline.yaml")
	src := fmt.Sprintf(`
metrics: {listen: ""}
sources:
  gen: {type: generate, count: %d, seed: 1}
sinks:
  null: {type: discard, inputs: [gen]}
`, b.N)
	if err := os.WriteFile(path, []byte(src), 0o644); err != nil {
		b.Fatal(err)
	}
	p, err := pipeline.Load(path, pipeline.Options{})
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	cpu0 := cpuTime()
	s, err := p.Run(context.Background())
	cpu := cpuTime() - cpu0
	b.StopTimer()
	if err != nil {
		b.Fatal(err)
	}
	if s.Total.Delivered != uint64(b.N) || !s.Total.Reconciles() {
		b.Fatalf("summary %v", s)
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "flows/s")
	// CPU time per flow (all goroutines), meaningful on a busy machine.
	b.ReportMetric(float64(cpu.Nanoseconds())/float64(b.N), "cpu-ns/flow")
}

// cpuTime is the process's user and system CPU time.
func cpuTime() time.Duration { return cputime.Process() }

// runThroughFIFO runs generate (count flows, as fast as possible) into a
// file sink writing to a FIFO behind a small buffer, reads the FIFO slowly
// at first so that the sink falls behind, and returns the flows and the
// events reported lost that the stream carried, and the summary.
func runThroughFIFO(t *testing.T, count int, whenFull string) (flows, reportedLost, received, delivered, lost uint64) {
	t.Helper()
	dir := t.TempDir()
	out := filepath.Join(dir, "out.fifo")
	if err := syscall.Mkfifo(out, 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := writeFile(t, "pipeline.yaml", fmt.Sprintf(`
metrics: {listen: ""}
lost_event_interval: 50ms
sources:
  gen: {type: generate, count: %d, seed: 7}
sinks:
  out:
    type: file
    inputs: [gen]
    path: %s
    buffer: {events: 1024, when_full: %s}
`, count, out, whenFull))
	cmd := bintest.Command(binary, "run", "-c", cfg)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	fifo, err := os.Open(out)
	if err != nil {
		t.Fatal(err)
	}
	defer fifo.Close()
	sc := bufio.NewScanner(fifo)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	lostRE := regexp.MustCompile(`^\{"lost_events":\{"source":"OBSERVER_EVENTS_QUEUE","num_events_lost":"(\d+)"`)
	for n := 0; sc.Scan(); n++ {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, `{"flow":`):
			flows++
		case strings.HasPrefix(line, `{"lost_events":`):
			m := lostRE.FindStringSubmatch(line)
			if m == nil {
				t.Fatalf("unexpected LostEvent line %q", line)
			}
			v, _ := strconv.ParseUint(m[1], 10, 64)
			reportedLost += v
		default:
			t.Fatalf("unexpected line %q", line)
		}
		if n < 2000 && n%100 == 0 {
			time.Sleep(2 * time.Millisecond) // a slow reader, then a fast one
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("exit: %v\nstderr:\n%s", err, stderr.String())
	}
	received, delivered, lost = summary(t, stderr.String())
	return flows, reportedLost, received, delivered, lost
}

// A sink slower than its source behind drop_newest: the stream's LostEvents
// count exactly what is missing.
func TestDropNewestEndToEnd(t *testing.T) {
	const count = 100000
	flows, reported, received, delivered, lost := runThroughFIFO(t, count, "drop_newest")
	t.Logf("flows=%d reported lost=%d; summary received=%d delivered=%d lost=%d", flows, reported, received, delivered, lost)
	if received != count || flows != delivered || reported != lost || flows+reported != received || lost == 0 {
		t.Errorf("flows=%d reported lost=%d; summary received=%d delivered=%d lost=%d", flows, reported, received, delivered, lost)
	}
}

// The same with block: the source waits, nothing is lost.
func TestBlockEndToEnd(t *testing.T) {
	const count = 20000
	flows, reported, received, delivered, lost := runThroughFIFO(t, count, "block")
	if received != count || flows != count || delivered != count || reported != 0 || lost != 0 {
		t.Errorf("flows=%d reported lost=%d; summary received=%d delivered=%d lost=%d", flows, reported, received, delivered, lost)
	}
}
