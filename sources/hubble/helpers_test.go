package hubble_test

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/protobuf/proto"

	"github.com/flowbus/flowbus/codec"
	flowpb "github.com/flowbus/flowbus/flow"
	"github.com/flowbus/flowbus/flow/observer"
	"github.com/flowbus/flowbus/internal/observerserver"
	"github.com/flowbus/flowbus/internal/sinktest"
	"github.com/flowbus/flowbus/pipeline"
	"github.com/flowbus/flowbus/pipeline/config"
	"github.com/flowbus/flowbus/sources/generate"
	_ "github.com/flowbus/flowbus/sources/hubble"
)

// capture is a test sink: it records the uuids of the flows it gets (and,
// with keep, their export JSON lines) and the LostEvents.
type capture struct {
	mu    sync.Mutex
	uuids []string
	lines []string
	lost  map[string]uint64 // by LostEvent source
	flows int
	keep  bool
	delay time.Duration
	nudge chan struct{}
}

var captures sync.Map // id → *capture

type captureOptions struct {
	ID    string          `yaml:"id" doc:"the capture's id"`
	Keep  bool            `yaml:"keep" doc:"keep the JSON lines"`
	Delay config.Duration `yaml:"delay" doc:"sleep per batch"`
}

func init() {
	pipeline.RegisterSink(pipeline.Spec{Type: "hubble-test-capture", Summary: "records what it gets, for tests"},
		func(_ *pipeline.Build, o *captureOptions) (*capture, error) {
			c, _ := captures.Load(o.ID)
			cc := c.(*capture)
			cc.keep, cc.delay = o.Keep, o.Delay.D()
			return cc, nil
		})
}

func newCapture(t *testing.T) (string, *capture) {
	id := t.Name()
	c := &capture{lost: map[string]uint64{}, nudge: make(chan struct{}, 1)}
	captures.Store(id, c)
	t.Cleanup(func() { captures.Delete(id) })
	return id, c
}

func (c *capture) Write(_ context.Context, b *pipeline.Batch) (int, error) {
	if c.delay > 0 {
		time.Sleep(c.delay)
	}
	c.mu.Lock()
	for i := range b.Events {
		e := &b.Events[i]
		if e.Lost != nil {
			c.lost[e.Lost.Source.String()] += e.Lost.NumEventsLost
			continue
		}
		c.flows++
		// A copy: the flow's strings share its whole message.
		c.uuids = append(c.uuids, strings.Clone(e.Flow.GetUuid()))
		if c.keep {
			line, err := codec.JSON{}.Append(nil, e)
			if err != nil {
				c.mu.Unlock()
				return 0, err
			}
			c.lines = append(c.lines, string(line))
		}
	}
	c.mu.Unlock()
	select {
	case c.nudge <- struct{}{}:
	default:
	}
	return 0, nil
}

func (c *capture) Close(context.Context) error { return nil }

func (c *capture) lostTotal() uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	var n uint64
	for _, v := range c.lost {
		n += v
	}
	return n
}

func (c *capture) count() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.flows
}

// waitFlows waits until the capture holds n flows.
func (c *capture) waitFlows(t *testing.T, n int) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for c.count() < n {
		if time.Now().After(deadline) {
			t.Fatalf("got %d flows, want %d", c.count(), n)
		}
		select {
		case <-c.nudge:
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// testFlows returns n generated enriched flows, one microsecond apart from
// base, each with its own storage.
func testFlows(t testing.TB, n int, seed uint64, base time.Time) []*flowpb.Flow {
	fs, err := makeFlows(n, seed, base)
	if err != nil {
		t.Fatal(err)
	}
	return fs
}

func makeFlows(n int, seed uint64, base time.Time) ([]*flowpb.Flow, error) {
	g := generate.NewGenerator(seed)
	out := make([]*flowpb.Flow, n)
	var ev pipeline.Event
	for i := range out {
		g.Fill(&ev, base.Add(time.Duration(i)*time.Microsecond).UnixNano())
		// A deep copy: the generator's strings live in reused storage.
		raw, err := proto.Marshal(ev.Flow)
		if err != nil {
			return nil, err
		}
		f := new(flowpb.Flow)
		if err := proto.Unmarshal(raw, f); err != nil {
			return nil, err
		}
		out[i] = f
	}
	return out, nil
}

func putFlows(s *observerserver.Server, fs []*flowpb.Flow) {
	for _, f := range fs {
		s.PutFlow(f)
	}
}

// serve serves srv on lis until the test ends or stop is called; stop
// cuts every stream at once, as a crashing server does.
func serve(t testing.TB, srv *observerserver.Server, lis net.Listener, tc *tls.Config) (stop func()) {
	var opts []grpc.ServerOption
	if tc != nil {
		opts = append(opts, grpc.Creds(credentials.NewTLS(tc)))
	}
	g := grpc.NewServer(opts...)
	srv.Register(g)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = g.Serve(lis)
	}()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			g.Stop()
			<-done
		})
	}
	t.Cleanup(stop)
	return stop
}

func unixListener(t testing.TB, path string) net.Listener {
	lis, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	return lis
}

func socketPath(t testing.TB) string {
	// Unix socket paths are limited to 108 bytes; TempDir can be long.
	dir, err := os.MkdirTemp("", "hubble")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return filepath.Join(dir, "hubble.sock")
}

// running is a pipeline running in the background.
type running struct {
	cancel context.CancelFunc
	done   chan struct{}
	sum    *pipeline.Summary
	err    error
	reg    *prometheus.Registry
}

// start runs the pipeline of cfg (a YAML text) until stop.
func start(t *testing.T, cfg string) *running {
	t.Helper()
	c, err := config.Parse([]byte(cfg), func(string) (string, bool) { return "", false })
	if err != nil {
		t.Fatal(err)
	}
	r := &running{done: make(chan struct{}), reg: prometheus.NewRegistry()}
	log := slog.New(slog.NewTextHandler(testWriter{t}, nil))
	p, err := pipeline.New(c, pipeline.Options{Registry: r.reg, Log: log})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r.cancel = cancel
	go func() {
		defer close(r.done)
		r.sum, r.err = p.Run(ctx)
	}()
	t.Cleanup(func() { r.stop(t) })
	return r
}

func (r *running) stop(t *testing.T) *pipeline.Summary {
	t.Helper()
	r.cancel()
	select {
	case <-r.done:
	case <-time.After(30 * time.Second):
		t.Fatal("pipeline did not stop")
	}
	if r.err != nil {
		t.Fatal(r.err)
	}
	return r.sum
}

func (r *running) metric(name string) float64 { return sinktest.Metric(r.reg, name) }

// waitMetric waits until the counter name reaches at least v.
func (r *running) waitMetric(t *testing.T, name string, v float64) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for r.metric(name) < v {
		if time.Now().After(deadline) {
			t.Fatalf("%s = %v, want at least %v", name, r.metric(name), v)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// pipelineYAML is a hubble source feeding a capture sink.
func pipelineYAML(source, captureID string, sinkExtra string) string {
	return fmt.Sprintf(`node_name: flowbus-test
metrics: {listen: ""}
lost_event_interval: 50ms
sources:
  hub:
    type: hubble
%s
sinks:
  cap:
    type: hubble-test-capture
    inputs: [hub]
    id: %q
%s
`, indent(source, "    "), captureID, indent(sinkExtra, "    "))
}

func indent(s, pre string) string {
	if s == "" {
		return ""
	}
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	for i := range lines {
		lines[i] = pre + lines[i]
	}
	return strings.Join(lines, "\n")
}

var _ io.Writer = testWriter{}

// request waits for the next GetFlowsRequest the server reports.
func request(t *testing.T, ch <-chan *observer.GetFlowsRequest) *observer.GetFlowsRequest {
	t.Helper()
	select {
	case r := <-ch:
		return r
	case <-time.After(30 * time.Second):
		t.Fatal("no GetFlows request")
		return nil
	}
}
