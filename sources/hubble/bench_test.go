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
	"google.golang.org/protobuf/proto"

	flowpb "github.com/flowbus/flowbus/flow"
	"github.com/flowbus/flowbus/flow/observer"
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

// benchReplayEnv, set in a server process's environment, makes it a
// replay server (see replayServer) instead of an Observer server.
const benchReplayEnv = "FLOWBUS_HUBBLE_BENCH_REPLAY"

// benchServerProfileEnv, when set in a benchmark's environment, names the
// file the server process writes its CPU profile to, as -cpuprofile does
// for the benchmark's own process (the client side).
const benchServerProfileEnv = "FLOWBUS_HUBBLE_BENCH_SERVER_CPUPROFILE"

func TestMain(m *testing.M) {
	if sock := os.Getenv(benchServerEnv); sock != "" {
		if err := cputime.Profiled(benchServerProfileEnv, os.Getenv(benchServerProfileEnv), func() error {
			return runBenchServer(sock, os.Getenv(benchReplayEnv) != "", os.Stdin, os.Stdout)
		}); err != nil {
			fmt.Fprintln(os.Stderr, "bench server:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// runBenchServer serves on sock and takes commands on in, one a line,
// answering each on out: "put N" puts the next N of 4096 enriched flows in
// its ring ("ok"), "cpu" reports the CPU time this process has used, in
// nanoseconds. It returns when in ends. It serves this project's Observer
// server, or with replay a replayServer, to which "put N" lets N more
// responses go out.
func runBenchServer(sock string, replay bool, in io.Reader, out io.Writer) error {
	fs, err := makeFlows(4096, 7, base)
	if err != nil {
		return err
	}
	lis, err := net.Listen("unix", sock)
	if err != nil {
		return err
	}
	g := grpc.NewServer(observerserver.ServerOptions()...)
	var put func(n int)
	if replay {
		rs, err := newReplayServer(fs)
		if err != nil {
			return err
		}
		observer.RegisterObserverServer(g, rs)
		put = func(n int) { rs.budget <- n }
	} else {
		srv := observerserver.New(observerserver.Options{Capacity: 1<<16 - 1})
		srv.Register(g)
		next := 0
		put = func(n int) {
			for range n {
				srv.PutFlow(fs[next%len(fs)])
				next++
			}
		}
	}
	go func() { _ = g.Serve(lis) }()
	defer g.Stop()
	fmt.Fprintln(out, "ready")
	sc := bufio.NewScanner(in)
	for sc.Scan() {
		cmd, arg, _ := strings.Cut(sc.Text(), " ")
		switch cmd {
		case "put":
			n, err := strconv.Atoi(arg)
			if err != nil {
				return fmt.Errorf("put %q: %w", arg, err)
			}
			put(n)
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

func startBenchServer(b *testing.B, replay bool) *benchServer {
	b.Helper()
	s := &benchServer{sock: socketPath(b)}
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), benchServerEnv+"="+s.sock)
	if replay {
		cmd.Env = append(cmd.Env, benchReplayEnv+"=1")
	}
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

// usage is what the benchmark's process has used so far.
type usage struct {
	cpu      time.Duration
	switches int64
}

func used() usage { return usage{cputime.Process(), cputime.Switches()} }

// report adds flows/s; the benchmark process's CPU per flow (the client
// side: gRPC, decoding, the source, and the pipeline when there is one)
// and its context switches per thousand flows; and the server process's
// CPU per flow, which the client's does not include.
func report(b *testing.B, wall time.Duration, from, to usage, serverCPU time.Duration) {
	b.ReportMetric(float64(b.N)/wall.Seconds(), "flows/s")
	b.ReportMetric(float64((to.cpu-from.cpu).Nanoseconds())/float64(b.N), "cpu-ns/flow")
	b.ReportMetric(float64(to.switches-from.switches)*1000/float64(b.N), "switches/kflow")
	b.ReportMetric(float64(serverCPU.Nanoseconds())/float64(b.N), "server-cpu-ns/flow")
}

// BenchmarkStream streams enriched flows from a server in another process
// over a unix socket through the source: flows/s, CPU per flow on each
// side, and the source's allocations per flow (the server's are in its
// own process).
func BenchmarkStream(b *testing.B) { benchStream(b, false) }

// BenchmarkStreamReplay is BenchmarkStream from a replay server, which
// sends responses encoded before the benchmark started: its cost per flow
// is gRPC's send alone, so the two cores go to the source as far as any
// server can leave them.
func BenchmarkStreamReplay(b *testing.B) { benchStream(b, true) }

func benchStream(b *testing.B, replay bool) {
	srv := startBenchServer(b, replay)
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
	scpu0, u0, t0 := srv.cpu(b), used(), time.Now()
	feed(b, srv, b.N, out.flows.Load)
	wall, u1, scpu := time.Since(t0), used(), srv.cpu(b)-scpu0
	b.StopTimer()
	if out.lost.Load() != 0 {
		b.Fatalf("%d lost", out.lost.Load())
	}
	report(b, wall, u0, u1, scpu)
	b.ReportMetric(float64(out.flows.Load())/float64(out.batches.Load()), "flows/batch")
}

// BenchmarkStreamDiscard is BenchmarkStream through a whole pipeline: the
// hubble source into the discard sink, with the runtime's buffer between.
func BenchmarkStreamDiscard(b *testing.B) { benchStreamDiscard(b, false) }

// BenchmarkStreamReplayDiscard is BenchmarkStreamDiscard from a replay
// server (see BenchmarkStreamReplay).
func BenchmarkStreamReplayDiscard(b *testing.B) { benchStreamDiscard(b, true) }

func benchStreamDiscard(b *testing.B, replay bool) {
	srv := startBenchServer(b, replay)
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
	scpu0, u0, t0 := srv.cpu(b), used(), time.Now()
	feed(b, srv, b.N, delivered)
	wall, u1, scpu := time.Since(t0), used(), srv.cpu(b)-scpu0
	b.StopTimer()
	report(b, wall, u0, u1, scpu)
}

// replayServer is an Observer server whose GetFlows sends, on every
// stream, responses encoded before it started, one for each flow of a
// list in turn, as many as the benchmark lets go out (budget): its cost
// per flow is gRPC's send alone. It sends them as this project's server
// does, as the unknown fields of an empty response (see
// observerserver.ServerOptions), so gRPC copies them without encoding.
type replayServer struct {
	observer.UnimplementedObserverServer
	msgs   [][]byte
	budget chan int
}

func newReplayServer(fs []*flowpb.Flow) (*replayServer, error) {
	s := &replayServer{budget: make(chan int, 64)}
	for _, f := range fs {
		b, err := proto.Marshal(&observer.GetFlowsResponse{
			ResponseTypes: &observer.GetFlowsResponse_Flow{Flow: f},
			NodeName:      f.GetNodeName(),
			Time:          f.GetTime(),
		})
		if err != nil {
			return nil, err
		}
		s.msgs = append(s.msgs, b)
	}
	return s, nil
}

func (s *replayServer) GetFlows(_ *observer.GetFlowsRequest, st grpc.ServerStreamingServer[observer.GetFlowsResponse]) error {
	r := new(observer.GetFlowsResponse)
	next := 0
	for {
		var n int
		select {
		case n = <-s.budget:
		case <-st.Context().Done():
			return st.Context().Err()
		}
		for range n {
			r.ProtoReflect().SetUnknown(s.msgs[next%len(s.msgs)])
			next++
			if err := st.Send(r); err != nil {
				return err
			}
		}
	}
}
