package hubble_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"

	flowpb "github.com/flowbus/flowbus/flow"
	"github.com/flowbus/flowbus/internal/cputime"
	"github.com/flowbus/flowbus/internal/observerserver"
	"github.com/flowbus/flowbus/internal/sinktest"
	"github.com/flowbus/flowbus/pipeline"
	"github.com/flowbus/flowbus/pipeline/config"
	_ "github.com/flowbus/flowbus/sinks/discard"
	"github.com/flowbus/flowbus/sources/hubble"
)

// benchServerEnv makes the test binary a benchmark's server process (see
// TestMain): the variable names the unix socket to serve.
const benchServerEnv = "FLOWBUS_HUBBLE_BENCH_SERVER"

// benchServerProfileEnv, when set in a benchmark's environment, names the
// file the server process writes its CPU profile to, as -cpuprofile does
// for the benchmark's own process (the client side).
const benchServerProfileEnv = "FLOWBUS_HUBBLE_BENCH_SERVER_CPUPROFILE"

func TestMain(m *testing.M) {
	if sock := os.Getenv(benchServerEnv); sock != "" {
		if err := cputime.Profiled(benchServerProfileEnv, os.Getenv(benchServerProfileEnv), func() error {
			return runBenchServer(sock, os.Stdin, os.Stdout)
		}); err != nil {
			fmt.Fprintln(os.Stderr, "bench server:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// runBenchServer serves an observer server on sock and takes commands on
// in, one a line, answering each on out: "put N" puts the next N of 4096
// enriched flows in its ring ("ok"), "cpu" reports the CPU time this
// process has used, in nanoseconds. It returns when in ends.
func runBenchServer(sock string, in io.Reader, out io.Writer) error {
	fs, err := makeFlows(4096, 7, base)
	if err != nil {
		return err
	}
	srv := observerserver.New(observerserver.Options{Capacity: 1<<16 - 1})
	lis, err := net.Listen("unix", sock)
	if err != nil {
		return err
	}
	g := grpc.NewServer(observerserver.ServerOptions()...)
	srv.Register(g)
	go func() { _ = g.Serve(lis) }()
	defer g.Stop()
	fmt.Fprintln(out, "ready")
	sc := bufio.NewScanner(in)
	next := 0
	for sc.Scan() {
		cmd, arg, _ := strings.Cut(sc.Text(), " ")
		switch cmd {
		case "put":
			n, err := strconv.Atoi(arg)
			if err != nil {
				return fmt.Errorf("put %q: %w", arg, err)
			}
			for range n {
				srv.PutFlow(fs[next%len(fs)])
				next++
			}
			fmt.Fprintln(out, "ok")
		case "cpu":
			fmt.Fprintln(out, cpuTime().Nanoseconds())
		default:
			return fmt.Errorf("unknown command %q", sc.Text())
		}
	}
	return sc.Err()
}

// benchServer is a server process started by a benchmark, so that the
// benchmark's own CPU time and allocations are the client side's alone.
type benchServer struct {
	sock string
	in   io.WriteCloser
	out  *bufio.Scanner
}

func startBenchServer(b *testing.B) *benchServer {
	b.Helper()
	s := &benchServer{sock: socketPath(b)}
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), benchServerEnv+"="+s.sock)
	cmd.Stderr = os.Stderr
	var err error
	if s.in, err = cmd.StdinPipe(); err != nil {
		b.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		s.in.Close()
		_ = cmd.Wait()
	})
	s.out = bufio.NewScanner(stdout)
	if s.reply(b) != "ready" {
		b.Fatal("bench server did not start")
	}
	return s
}

func (s *benchServer) reply(b *testing.B) string {
	if !s.out.Scan() {
		b.Fatalf("bench server: no reply: %v", s.out.Err())
	}
	return s.out.Text()
}

// put makes the server put the next n flows in its ring.
func (s *benchServer) put(b *testing.B, n int) {
	fmt.Fprintf(s.in, "put %d\n", n)
	if r := s.reply(b); r != "ok" {
		b.Fatalf("bench server: put: %q", r)
	}
}

// cpu is the server process's CPU time.
func (s *benchServer) cpu(b *testing.B) time.Duration {
	fmt.Fprintln(s.in, "cpu")
	ns, err := strconv.ParseInt(s.reply(b), 10, 64)
	if err != nil {
		b.Fatal(err)
	}
	return time.Duration(ns)
}

// countOut is a pipeline.Output that counts and releases, the source's
// cost alone (the discard sink's, without the runtime).
type countOut struct{ flows, batches, lost atomic.Uint64 }

func (o *countOut) Emit(_ context.Context, b *pipeline.Batch) error {
	o.batches.Add(1)
	o.flows.Add(uint64(b.Len()))
	b.Release()
	return nil
}

func (o *countOut) Lost(_ flowpb.LostEventSource, _ int32, n uint64) { o.lost.Add(n) }

func cpuTime() time.Duration { return cputime.Process() }

// feed has the server put n flows in chunks, keeping its ring ahead of the
// reader (done reports how many arrived) without overrunning it. It looks
// at done every 5 ms while the ring is well ahead, and every millisecond
// for the last flows: reading a pipeline's metric gathers the whole
// registry, which done more often costs the benchmark's process a
// noticeable share of the CPU it measures.
func feed(b *testing.B, srv *benchServer, n int, done func() uint64) {
	const chunk, ahead = 8192, 32768
	for i := 0; i < n; i += chunk {
		for d := done(); uint64(i)-d > ahead && uint64(i) > d; d = done() {
			time.Sleep(5 * time.Millisecond)
		}
		srv.put(b, min(chunk, n-i))
	}
	for done() < uint64(n) {
		time.Sleep(time.Millisecond)
	}
}

// report adds flows/s, the benchmark process's CPU per flow (the client
// side: gRPC, decoding, the source, and the pipeline when there is one)
// and the server process's CPU per flow, which is not part of the first.
func report(b *testing.B, wall, cpu, serverCPU time.Duration) {
	b.ReportMetric(float64(b.N)/wall.Seconds(), "flows/s")
	b.ReportMetric(float64(cpu.Nanoseconds())/float64(b.N), "cpu-ns/flow")
	b.ReportMetric(float64(serverCPU.Nanoseconds())/float64(b.N), "server-cpu-ns/flow")
}

// BenchmarkStream streams enriched flows from a server in another process
// over a unix socket through the source: flows/s, CPU per flow on each
// side, and the source's allocations per flow (the server's are in its
// own process).
func BenchmarkStream(b *testing.B) {
	srv := startBenchServer(b)
	src, err := pipeline.Make(sinktest.Build("hubble", ""), sinktest.Node(b, fmt.Sprintf("address: unix://%s\nsince: %s", srv.sock, since(base))), hubble.New)
	if err != nil {
		b.Fatal(err)
	}
	out := &countOut{}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- src.Run(ctx, out) }()
	defer func() {
		cancel()
		<-done
		_ = src.Stop(context.Background())
	}()

	b.ReportAllocs()
	b.ResetTimer()
	scpu0, cpu0, t0 := srv.cpu(b), cpuTime(), time.Now()
	feed(b, srv, b.N, out.flows.Load)
	wall, cpu, scpu := time.Since(t0), cpuTime()-cpu0, srv.cpu(b)-scpu0
	b.StopTimer()
	if out.lost.Load() != 0 {
		b.Fatalf("%d lost", out.lost.Load())
	}
	report(b, wall, cpu, scpu)
	b.ReportMetric(float64(out.flows.Load())/float64(out.batches.Load()), "flows/batch")
}

// BenchmarkStreamDiscard is BenchmarkStream through a whole pipeline: the
// hubble source into the discard sink, with the runtime's buffer between.
func BenchmarkStreamDiscard(b *testing.B) {
	srv := startBenchServer(b)
	c, err := config.Parse([]byte(fmt.Sprintf(`metrics: {listen: ""}
sources: {hub: {type: hubble, address: "unix://%s", since: "%s"}}
sinks: {null: {type: discard, inputs: [hub]}}
`, srv.sock, since(base))), func(string) (string, bool) { return "", false })
	if err != nil {
		b.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	p, err := pipeline.New(c, pipeline.Options{Registry: reg})
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _, _ = p.Run(ctx) }()
	defer func() { cancel(); <-done }()
	delivered := func() uint64 { return uint64(sinktest.Metric(reg, "flowbus_discard_events_total")) }

	b.ReportAllocs()
	b.ResetTimer()
	scpu0, cpu0, t0 := srv.cpu(b), cpuTime(), time.Now()
	feed(b, srv, b.N, delivered)
	wall, cpu, scpu := time.Since(t0), cpuTime()-cpu0, srv.cpu(b)-scpu0
	b.StopTimer()
	report(b, wall, cpu, scpu)
}
