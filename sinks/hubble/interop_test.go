package hubble_test

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/flowbus/flowbus/internal/bintest"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/flowbus/flowbus/internal/sinktest"
	"github.com/flowbus/flowbus/pipeline"
	"github.com/flowbus/flowbus/pipeline/config"
	"github.com/flowbus/flowbus/sinks/file"
	"github.com/flowbus/flowbus/sinks/hubble"
	_ "github.com/flowbus/flowbus/sources/hubble"
)

// hubbleCmd runs the hubble CLI without any user configuration.
func hubbleCmd(t *testing.T, cli string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, cli, args...)
	cmd.Env = append(os.Environ(), "HUBBLE_CONFIG=/dev/null")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("hubble %s: %v\n%s%s", strings.Join(args, " "), err, out, stderr.String())
	}
	return string(out)
}

// fileLines writes n flows from first through the project's file sink
// (encoding json) and returns the lines it wrote.
func fileLines(t *testing.T, first, n int) []string {
	path := filepath.Join(t.TempDir(), "flows.json")
	fs, err := pipeline.Make(sinktest.Build("file", "json"), sinktest.Node(t, "path: "+path), file.New)
	if err != nil {
		t.Fatal(err)
	}
	if err := fs.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	b := sinktest.Batch(first, n)
	if _, err := fs.Write(context.Background(), b); err != nil {
		t.Fatal(err)
	}
	b.Release()
	if err := fs.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return strings.Split(strings.TrimSuffix(string(data), "\n"), "\n")
}

// TestHubbleCLI: `hubble observe --server` prints, line for line and byte
// for byte, what the file sink wrote for the same flows; `hubble status`
// reports the ring, `hubble list nodes` this node.
func TestHubbleCLI(t *testing.T) {
	cli := bintest.Tool(t, "hubble")
	const n = 300
	s := newSink(t, "")
	write(t, s, 0, n)
	want := fileLines(t, 0, n)
	srv := "--server=" + target(s)
	got := strings.Split(strings.TrimSuffix(hubbleCmd(t, cli, "observe", srv, "-o", "jsonpb", "--last", fmt.Sprint(n)), "\n"), "\n")
	if len(got) != n {
		t.Fatalf("hubble observe printed %d lines, want %d", len(got), n)
	}
	for i := range got {
		if got[i] != want[i] {
			t.Fatalf("line %d:\nhubble observe: %s\nfile sink:      %s", i, got[i], want[i])
		}
	}
	// A filter the CLI turns into a FlowFilter, and one the server refuses.
	dropped := hubbleCmd(t, cli, "observe", srv, "-o", "jsonpb", "--last", "5", "--verdict", "DROPPED")
	if c := strings.Count(dropped, `"verdict":"DROPPED"`); c != 5 {
		t.Fatalf("--verdict DROPPED: %d dropped flows in\n%s", c, dropped)
	}
	status := hubbleCmd(t, cli, "status", srv)
	if !strings.Contains(status, fmt.Sprintf("Current/Max Flows: %d/65,535", n)) {
		t.Fatalf("hubble status:\n%s", status)
	}
	if nodes := hubbleCmd(t, cli, "list", "nodes", srv); !strings.Contains(nodes, "node-1") {
		t.Fatalf("hubble list nodes:\n%s", nodes)
	}
}

// freePort returns a loopback TCP port that was free a moment ago.
func freePort(t *testing.T) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// TestHubbleRelay: Hubble Relay, pointed at one flowbus node's Peer
// service, finds both nodes and `hubble observe` through it sees the flows
// of both.
func TestHubbleRelay(t *testing.T) {
	cli, relay := bintest.Tool(t, "hubble"), bintest.Tool(t, "hubble", "hubble-relay")
	pa, pb, pr, ph := freePort(t), freePort(t), freePort(t), freePort(t)
	node := func(name string, port int, extra string) *hubble.Sink {
		b := sinktest.Build("hubble", "")
		b.NodeName = name
		s, err := pipeline.Make(b, sinktest.Node(t, fmt.Sprintf("listen: 127.0.0.1:%d\n%s", port, extra)), hubble.New)
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Start(context.Background()); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close(context.Background()) })
		return s
	}
	a := node("node-a", pa, fmt.Sprintf("peers: [{name: node-b, address: '127.0.0.1:%d'}]", pb))
	b := node("node-b", pb, "")
	for first, s := range map[int]*hubble.Sink{0: a, 1000: b} {
		bt := sinktest.Batch(first, 100)
		for i := range bt.Events {
			bt.Events[i].NodeName = s.Server().NodeName()
			bt.Events[i].Flow.NodeName = s.Server().NodeName()
		}
		s.Write(context.Background(), bt)
		bt.Release()
	}

	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, relay, "serve",
		"--peer-service", fmt.Sprintf("127.0.0.1:%d", pa),
		"--listen-address", fmt.Sprintf("127.0.0.1:%d", pr),
		"--health-listen-address", fmt.Sprintf("127.0.0.1:%d", ph),
		"--disable-client-tls", "--disable-server-tls", "--gops=false")
	var logs bytes.Buffer
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cancel()
		cmd.Wait()
		if t.Failed() {
			t.Logf("hubble-relay:\n%s", logs.String())
		}
	})
	srv := fmt.Sprintf("--server=127.0.0.1:%d", pr)
	deadline := time.Now().Add(90 * time.Second)
	for {
		c := exec.Command(cli, "status", srv)
		c.Env = append(os.Environ(), "HUBBLE_CONFIG=/dev/null")
		out, _ := c.CombinedOutput()
		if strings.Contains(string(out), "Connected Nodes: 2/2") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("relay did not connect both nodes:\n%s", out)
		}
		time.Sleep(500 * time.Millisecond)
	}
	out := hubbleCmd(t, cli, "observe", srv, "-o", "jsonpb", "--last", "200")
	var nodes []string
	count := 0
	sc := bufio.NewScanner(strings.NewReader(out))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		for _, n := range []string{"node-a", "node-b"} {
			if strings.Contains(sc.Text(), `"node_name":"`+n+`"`) && strings.Contains(sc.Text(), `"flow":`) {
				if !slices.Contains(nodes, n) {
					nodes = append(nodes, n)
				}
				count++
			}
		}
	}
	if len(nodes) != 2 || count != 200 {
		t.Fatalf("through relay: %d flows from %v, want 200 from node-a and node-b:\n%.2000s", count, nodes, out)
	}

	// The project's own hubble source, through the same Relay over TCP.
	lines := runSource(t, fmt.Sprintf("address: 127.0.0.1:%d\n    since: 2000-01-01T00:00:00Z", pr), 200, func() {})
	byNode := map[string]int{}
	for _, l := range lines {
		for _, n := range []string{"node-a", "node-b"} {
			if strings.Contains(l, `"node_name":"`+n+`"`) {
				byNode[n]++
			}
		}
	}
	if len(lines) != 200 || byNode["node-a"] != 100 || byNode["node-b"] != 100 {
		t.Fatalf("the hubble source through relay: %d flows, %v by node; want 100 from each", len(lines), byNode)
	}
}

// TestSourceClient: the project's own hubble source follows the sink, with
// since, a filter and a field mask, into a file sink.
func TestSourceClient(t *testing.T) {
	s := newSink(t, "")
	write(t, s, 0, 1000)
	// Flows 500..1999 that are not dropped: 500..999 already in the ring,
	// 1000..1999 written while the source follows.
	var wantIDs []string
	for i := 500; i < 2000; i++ {
		if f := want(i); f.GetVerdict().String() != "DROPPED" {
			wantIDs = append(wantIDs, f.GetUuid())
		}
	}
	lines := runSource(t, fmt.Sprintf(`address: %s
    since: %s
    deny:
      - {verdict: [DROPPED]}
    field_mask: [uuid, verdict, source.pod_name]`, target(s), want(500).GetTime().AsTime().Format(time.RFC3339Nano)),
		len(wantIDs), func() { write(t, s, 1000, 1000) })
	if len(lines) != len(wantIDs) {
		t.Fatalf("the source wrote %d flows, want %d", len(lines), len(wantIDs))
	}
	for i, l := range lines {
		if !strings.Contains(l, `"uuid":"`+wantIDs[i]+`"`) || strings.Contains(l, `"IP"`) || !strings.Contains(l, `"pod_name"`) {
			t.Fatalf("line %d: %s\nwant uuid %s with only uuid, verdict and source.pod_name", i, l, wantIDs[i])
		}
	}
}

// runSource runs a pipeline of the project's hubble source (its keys, src,
// indented for the source's block) into a file sink, calls then once it
// runs, waits up to a minute for n flows, stops it and returns the lines
// the sink wrote.
func runSource(t *testing.T, src string, n int, then func()) []string {
	t.Helper()
	out := filepath.Join(t.TempDir(), "out.json")
	cfg := fmt.Sprintf(`node_name: client
metrics: {listen: ""}
sources:
  hub:
    type: hubble
    %s
sinks:
  out:
    type: file
    inputs: [hub]
    path: %s
`, src, out)
	c, err := config.Parse([]byte(cfg), func(string) (string, bool) { return "", false })
	if err != nil {
		t.Fatal(err)
	}
	p, err := pipeline.New(c, pipeline.Options{Registry: prometheus.NewRegistry(), Log: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		_, err := p.Run(ctx)
		done <- err
	}()
	then()
	deadline := time.Now().Add(60 * time.Second)
	for {
		data, _ := os.ReadFile(out)
		if bytes.Count(data, []byte("\n")) >= n || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	data, _ := os.ReadFile(out)
	return strings.Split(strings.TrimSuffix(string(data), "\n"), "\n")
}
