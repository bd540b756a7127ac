package faults

import (
	"bytes"
	"errors"
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
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/flowbus/flowbus/flow/flowjson"
	"github.com/flowbus/flowbus/flow/observer"
	"github.com/flowbus/flowbus/internal/bintest"
	"github.com/flowbus/flowbus/pipeline"
)

var binary string

func TestMain(m *testing.M) { bintest.Main(m, "../..", &binary) }

// syncBuffer collects a process's stderr while the test reads it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// proc is a running flowbus.
type proc struct {
	t      *testing.T
	cmd    *exec.Cmd
	stderr *syncBuffer
	done   chan struct{}
	err    error
}

// start runs `flowbus run -c cfg`; stdout, when not nil, receives its
// standard output. The process is killed at the end of the test if it
// still runs.
func start(t *testing.T, cfg string, stdout io.Writer) *proc {
	t.Helper()
	p := &proc{t: t, cmd: bintest.Command(binary, "run", "-c", cfg), stderr: &syncBuffer{}, done: make(chan struct{})}
	p.cmd.Stdout, p.cmd.Stderr = stdout, p.stderr
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.err = p.cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			p.cmd.Process.Kill()
			<-p.done
		}
	})
	return p
}

func (p *proc) signal(sig os.Signal) {
	p.t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		p.t.Fatalf("signal %v: %v", sig, err)
	}
}

// wait waits for the process to exit and returns its stderr; it fails the
// test when the process does not exit within a minute or exits non-zero.
func (p *proc) wait() string {
	p.t.Helper()
	select {
	case <-p.done:
	case <-time.After(time.Minute):
		p.cmd.Process.Kill()
		<-p.done
		p.t.Fatalf("flowbus did not exit within a minute; stderr:\n%s", p.stderr)
	}
	if p.err != nil {
		p.t.Fatalf("flowbus: %v; stderr:\n%s", p.err, p.stderr)
	}
	return p.stderr.String()
}

// waitLog waits until stderr contains s.
func (p *proc) waitLog(s string) {
	p.t.Helper()
	p.eventually(fmt.Sprintf("%q in the log", s), func() bool { return strings.Contains(p.stderr.String(), s) })
}

// eventually waits until cond holds while the process runs; it fails the
// test, with the process's stderr, when the process exits first.
func (p *proc) eventually(what string, cond func() bool) {
	p.t.Helper()
	eventually(p.t, what, func() bool {
		select {
		case <-p.done:
			p.t.Fatalf("flowbus exited (%v) while waiting for %s; stderr:\n%s", p.err, what, p.stderr)
		default:
		}
		return cond()
	})
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); !cond(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

// summary is the parsed exit summary.
type summary struct {
	Total                  pipeline.Counts
	Sinks                  map[string]pipeline.Counts
	Reloads, ReloadsFailed int
}

var (
	countsRE  = `received=(\d+) delivered=(\d+) filtered=(\d+) sampled=(\d+) rate_limited=(\d+) lost=(\d+)(?: recovered=(\d+) buffered=(\d+))?`
	totalRE   = regexp.MustCompile(`(?m)^flowbus: ` + countsRE + `(?: reloads=(\d+))?(?: reloads_failed=(\d+))?$`)
	perSinkRE = regexp.MustCompile(`(?m)^flowbus: sink=(\S+) ` + countsRE + `$`)
)

func counts(m []string) pipeline.Counts {
	n := make([]uint64, 8)
	for i := range n {
		n[i], _ = strconv.ParseUint(m[i], 10, 64)
	}
	return pipeline.Counts{Received: n[0], Delivered: n[1], Filtered: n[2], Sampled: n[3], RateLimited: n[4], Lost: n[5], Recovered: n[6], Buffered: n[7]}
}

// parseSummary parses the summary lines of stderr and checks that every
// line reconciles and the sinks add up to the total.
func parseSummary(t *testing.T, stderr string) summary {
	t.Helper()
	m := totalRE.FindStringSubmatch(stderr)
	if m == nil {
		t.Fatalf("no summary line in stderr:\n%s", stderr)
	}
	s := summary{Total: counts(m[1:9]), Sinks: map[string]pipeline.Counts{}}
	s.Reloads, _ = strconv.Atoi(m[9])
	s.ReloadsFailed, _ = strconv.Atoi(m[10])
	if !s.Total.Reconciles() {
		t.Errorf("the total does not reconcile: %s", m[0])
	}
	var sum pipeline.Counts
	for _, k := range perSinkRE.FindAllStringSubmatch(stderr, -1) {
		c := counts(k[2:10])
		if !c.Reconciles() {
			t.Errorf("sink %s does not reconcile: %s", k[1], k[0])
		}
		s.Sinks[k[1]] = c
		sum.Received += c.Received
		sum.Delivered += c.Delivered
		sum.Filtered += c.Filtered
		sum.Sampled += c.Sampled
		sum.RateLimited += c.RateLimited
		sum.Lost += c.Lost
		sum.Recovered += c.Recovered
		sum.Buffered += c.Buffered
	}
	if len(s.Sinks) > 0 && sum != s.Total {
		t.Errorf("the sinks' lines add up to %v, the total is %v", sum, s.Total)
	}
	return s
}

// export is what a Hubble export file (JSON lines) holds.
type export struct {
	flows, lost uint64 // flows, and the events its LostEvents count
	torn        bool   // the last line has no newline and does not parse
}

// readExport parses every line of a Hubble export file with flowbus's
// decoder. A final line without a newline that does not parse is a torn
// write (a reader detects it by the missing newline); any other line that
// does not parse fails the test.
func readExport(t *testing.T, path string) export {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var ex export
	for len(data) > 0 {
		line, rest, complete := bytes.Cut(data, []byte("\n"))
		data = rest
		var ev observer.ExportEvent
		if err := flowjson.Unmarshal(line, &ev); err != nil {
			if !complete {
				ex.torn = true
				break
			}
			t.Fatalf("%s: a line does not parse: %v\n%.300s", path, err, line)
		}
		if !complete {
			t.Fatalf("%s: the last line parses but has no newline", path)
		}
		switch {
		case ev.GetFlow() != nil:
			ex.flows++
		case ev.GetLostEvents() != nil:
			ex.lost += ev.GetLostEvents().GetNumEventsLost()
		default:
			t.Fatalf("%s: a line is neither a flow nor a LostEvent: %.300s", path, line)
		}
	}
	return ex
}

// lineCount counts the lines of path so far (0 when it does not exist).
func lineCount(path string) int {
	data, _ := os.ReadFile(path)
	return bytes.Count(data, []byte("\n"))
}

// freeAddr returns a loopback address whose port was free just now.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func freePort(t *testing.T) int {
	_, p, _ := net.SplitHostPort(freeAddr(t))
	n, _ := strconv.Atoi(p)
	return n
}

// get returns the status and body of http://addr/path (status 0 when
// nothing answers).
func get(addr, path string) (int, string) {
	c := http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get("http://" + addr + path)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// metric returns the value of the sample of /metrics at addr whose line
// starts with series (name and labels), or -1.
func metric(addr, series string) float64 {
	_, body := get(addr, "/metrics")
	for _, l := range strings.Split(body, "\n") {
		if v, ok := strings.CutPrefix(l, series+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err == nil {
				return f
			}
		}
	}
	return -1
}

// writeConfig writes a pipeline configuration into dir.
func writeConfig(t *testing.T, dir, src string) string {
	t.Helper()
	path := filepath.Join(dir, "pipeline.yaml")
	// Write and rename, so that a reload never reads half a file.
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
	return path
}

// notKilledBySignal fails the test when err says the process died of a
// signal.
func notKilledBySignal(t *testing.T, err error) {
	t.Helper()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			t.Fatalf("flowbus died of %v", ws.Signal())
		}
	}
}
