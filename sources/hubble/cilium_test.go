package hubble_test

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/flowbus/flowbus/codec"
	flowpb "github.com/flowbus/flowbus/flow"
	"github.com/flowbus/flowbus/internal/bintest"
	"github.com/flowbus/flowbus/pipeline"
)

// ciliumServer is Cilium's own Hubble server (its observer, the code the
// agent runs) in a process of its own, built by .ci/tools/build from
// Cilium's module (.ci/tools/hubble/ciliumserver), serving sock.
type ciliumServer struct {
	sock  string
	stdin io.WriteCloser
}

// startCiliumServer starts it with the export lines in its ring, and
// returns once they are there.
func startCiliumServer(t *testing.T, lines []string, maxFlows int) *ciliumServer {
	t.Helper()
	bin := bintest.Tool(t, "hubble", "ciliumserver")
	input := filepath.Join(t.TempDir(), "flows.json")
	if err := os.WriteFile(input, []byte(strings.Join(lines, "")), 0o644); err != nil {
		t.Fatal(err)
	}
	s := &ciliumServer{sock: socketPath(t)}
	cmd := exec.Command(bin, "-socket", s.sock, "-input", input, "-max-flows", fmt.Sprint(maxFlows))
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if s.stdin, err = cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		if t.Failed() {
			t.Logf("ciliumserver's stderr:\n%s", stderr.String())
		}
	})
	ready := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		if sc.Scan() {
			ready <- sc.Text()
		}
		close(ready)
	}()
	select {
	case got := <-ready:
		if want := fmt.Sprintf("ready %d", len(lines)); got != want {
			t.Fatalf("ciliumserver said %q, want %q\n%s", got, want, stderr.String())
		}
	case <-time.After(60 * time.Second):
		t.Fatalf("ciliumserver did not get ready\n%s", stderr.String())
	}
	return s
}

// feed hands more export lines to the running server.
func (s *ciliumServer) feed(t *testing.T, lines []string) {
	t.Helper()
	if _, err := io.WriteString(s.stdin, strings.Join(lines, "")); err != nil {
		t.Fatal(err)
	}
}

// exportLines encodes flows as Hubble export lines in Hubble's envelope
// (node_name and time are the flow's, as Hubble's server sends them).
func exportLines(t *testing.T, fs []*flowpb.Flow) []string {
	t.Helper()
	out := make([]string, len(fs))
	for i, f := range fs {
		b, err := codec.JSON{}.Append(nil, &pipeline.Event{Flow: f, NodeName: f.GetNodeName(), Time: f.GetTime()})
		if err != nil {
			t.Fatal(err)
		}
		out[i] = string(b)
	}
	return out
}

// TestCiliumServerInterop runs the source against Cilium's own Hubble
// server: the flows fed to it (enriched, with L7, an unknown enum number,
// HTML characters), those in its ring and those that come while the source
// follows, arrive in flowbus identically, byte for byte in Hubble's export
// JSON, and as `hubble observe -o jsonpb` prints them from that server; the
// lost events it forwards are counted as lost, by source; and
// when the source falls behind Cilium's ring, Cilium's own lost events for
// its ring reconcile with the flows that arrived.
//
// Cilium's ring never serves its newest event to a follower until another
// one is written (the writer may still be filling that slot), so each feed
// ends with a sentinel flow that is not expected.
func TestCiliumServerInterop(t *testing.T) {
	t.Run("ring and follow", func(t *testing.T) {
		const n = 1500
		fs := testFlows(t, n+1, 21, base) // the last is the sentinel
		fs[3].Verdict = flowpb.Verdict(99)
		fs[4].Summary = "a <b> & c\u2028"
		lines := exportLines(t, fs)
		lost := &pipeline.Event{Lost: &flowpb.LostEvent{Source: flowpb.LostEventSource_PERF_EVENT_RING_BUFFER,
			NumEventsLost: 23, Cpu: wrapperspb.Int32(3)}, Time: fs[999].GetTime()}
		lostLine, err := codec.JSON{}.Append(nil, lost)
		if err != nil {
			t.Fatal(err)
		}
		srv := startCiliumServer(t, append(append([]string{}, lines[:1000]...), string(lostLine)), 4095)

		id, c := newCapture(t)
		r := start(t, pipelineYAML(fmt.Sprintf("address: unix://%s\nsince: %s", srv.sock, since(base)), id, "keep: true"))
		c.waitFlows(t, 1000)
		srv.feed(t, lines[1000:])
		c.waitFlows(t, n)
		sum := r.stop(t)
		if len(c.lines) != n {
			t.Fatalf("got %d flows, want %d", len(c.lines), n)
		}
		for i := range n {
			if c.lines[i] != lines[i] {
				t.Fatalf("flow %d differs:\nfed:      %s\nreceived: %s", i, lines[i], c.lines[i])
			}
		}
		// The real hubble CLI, reading the same server, prints the same
		// flows byte for byte.
		cmd := exec.Command(hubbleCLI(t), "observe", "--server", "unix://"+srv.sock, "-o", "jsonpb", "--all")
		cmd.Env = append(os.Environ(), "HUBBLE_CONFIG=/dev/null")
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("hubble observe: %v\n%s", err, stderr.String())
		}
		var cliFlows []string
		for _, l := range strings.Split(strings.TrimSuffix(string(out), "\n"), "\n") {
			if strings.HasPrefix(l, `{"flow":`) {
				cliFlows = append(cliFlows, l)
			}
		}
		if len(cliFlows) != n {
			t.Fatalf("hubble observe printed %d flows, want %d", len(cliFlows), n)
		}
		for i := range n {
			if got := strings.TrimSuffix(c.lines[i], "\n"); got != cliFlows[i] {
				t.Fatalf("flow %d differs:\nhubble:  %s\nflowbus: %s", i, cliFlows[i], got)
			}
		}
		if c.lost["PERF_EVENT_RING_BUFFER"] != 23 || len(c.lost) != 1 {
			t.Fatalf("lost events %v, want PERF_EVENT_RING_BUFFER: 23", c.lost)
		}
		tot := sum.Total
		if tot.Received != n+23 || tot.Delivered != n || tot.Lost != 23 || !tot.Reconciles() {
			t.Fatalf("summary %s, want received=%d delivered=%d lost=23", tot, n+23, n)
		}
	})

	t.Run("ring overrun", func(t *testing.T) {
		// A small ring, a slow sink that holds the stream back through
		// gRPC flow control, and flows fed faster than it takes them: the
		// server's ring reader falls behind and Cilium reports what it
		// skipped as HUBBLE_RING_BUFFER lost events.
		const n = 20000
		fs := testFlows(t, n+1, 22, base)
		lines := exportLines(t, fs)
		// Started with flows in its ring: a follower whose since lies
		// before an empty ring is not served what comes later.
		srv := startCiliumServer(t, lines[:100], 255)
		id, c := newCapture(t)
		r := start(t, pipelineYAML(fmt.Sprintf("address: unix://%s\nsince: %s", srv.sock, since(base)), id,
			"delay: 20ms\nbuffer: {events: 512, when_full: block}"))
		c.waitFlows(t, 99)
		srv.feed(t, lines[100:])
		deadline := time.Now().Add(90 * time.Second)
		for c.lostTotal() == 0 && time.Now().Before(deadline) {
			time.Sleep(50 * time.Millisecond)
		}
		sum := r.stop(t)
		tot := sum.Total
		t.Logf("flows received %d of %d, lost events %v; summary %s", c.count(), n, c.lost, tot)
		if c.lost["HUBBLE_RING_BUFFER"] == 0 {
			t.Fatal("Cilium's ring reader reported nothing lost")
		}
		if !tot.Reconciles() || tot.Lost != c.lost["HUBBLE_RING_BUFFER"] {
			t.Fatalf("summary %s does not count Cilium's lost events %v", tot, c.lost)
		}
		checkUnique(t, c.uuids)
	})
}
