package hubble_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/flowbus/flowbus/internal/bintest"

	flowpb "github.com/flowbus/flowbus/flow"
	"github.com/flowbus/flowbus/internal/observerserver"
)

// hubbleCLI returns the path of the hubble CLI, built (and cached) by
// .ci/tools/build from Cilium's own module.
func hubbleCLI(t *testing.T) string { return bintest.Tool(t, "hubble") }

// TestHubbleCLIInterop: the real hubble CLI reads this project's Observer
// server, and what `hubble observe -o jsonpb --last N` prints is, line for
// line and byte for byte, what the source emits for the same server through
// the export JSON encoding (the file sink's).
func TestHubbleCLIInterop(t *testing.T) {
	cli := hubbleCLI(t)
	const n = 500
	fs := testFlows(t, n, 9, base)
	// Exercise the encoders with what the CLI must print unchanged: an
	// unknown enum number, HTML characters, a flow whose envelope time is
	// not the flow's own.
	fs[3].Verdict = flowpb.Verdict(99)
	fs[4].Summary = "a <b> & c\u2028"
	srv := observerserver.New(observerserver.Options{Capacity: 1023, NodeName: "kind-worker"})
	putFlows(srv, fs)
	sock := socketPath(t)
	serve(t, srv, unixListener(t, sock), nil)

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, cli, "observe", "--server", "unix://"+sock, "-o", "jsonpb", "--last", fmt.Sprint(n))
	cmd.Env = append(os.Environ(), "HUBBLE_CONFIG=/dev/null")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("hubble observe: %v\n%s", err, stderr.String())
	}
	cliLines := strings.Split(strings.TrimSuffix(string(out), "\n"), "\n")

	id, c := newCapture(t)
	r := start(t, pipelineYAML(fmt.Sprintf("address: unix://%s\nsince: %s", sock, since(base)), id, "keep: true"))
	c.waitFlows(t, n)
	r.stop(t)
	if len(cliLines) != n || len(c.lines) != n {
		t.Fatalf("hubble printed %d lines, the source emitted %d flows; want %d", len(cliLines), len(c.lines), n)
	}
	for i := range cliLines {
		if got := strings.TrimSuffix(c.lines[i], "\n"); got != cliLines[i] {
			t.Fatalf("line %d differs:\nhubble:  %s\nflowbus: %s", i+1, cliLines[i], got)
		}
	}
	if !strings.Contains(cliLines[3], `"verdict":99`) || !strings.Contains(cliLines[4], `\u003cb\u003e \u0026 c\u2028`) {
		t.Fatalf("unexpected rendering of the special flows:\n%s\n%s", cliLines[3], cliLines[4])
	}
}

// TestHubbleCLIStatus: `hubble status` and `hubble list nodes` work
// against this project's Observer server.
func TestHubbleCLIStatus(t *testing.T) {
	cli := hubbleCLI(t)
	srv := observerserver.New(observerserver.Options{Capacity: 1023, NodeName: "kind-worker"})
	putFlows(srv, testFlows(t, 10, 1, base))
	sock := socketPath(t)
	serve(t, srv, unixListener(t, sock), nil)
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"status"}, "Current/Max Flows: 10/1,023"},
		{[]string{"list", "nodes"}, "kind-worker"},
	} {
		cmd := exec.Command(cli, append(tc.args, "--server", "unix://"+sock)...)
		cmd.Env = append(os.Environ(), "HUBBLE_CONFIG=/dev/null")
		out, err := cmd.CombinedOutput()
		if err != nil || !strings.Contains(string(out), tc.want) {
			t.Fatalf("hubble %s: %v\n%s\nwant it to contain %q", strings.Join(tc.args, " "), err, out, tc.want)
		}
	}
}
