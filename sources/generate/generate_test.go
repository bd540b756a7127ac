package generate

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"gopkg.in/yaml.v3"

	flowpb "github.com/flowbus/flowbus/flow"
	"github.com/flowbus/flowbus/flow/flowjson"
	"github.com/flowbus/flowbus/flow/observer"
	"github.com/flowbus/flowbus/internal/cputime"
	"github.com/flowbus/flowbus/pipeline"
	"github.com/flowbus/flowbus/sinks/discard"
	filesink "github.com/flowbus/flowbus/sinks/file"
	filesource "github.com/flowbus/flowbus/sources/file"
)

const t0 = int64(1_764_072_000_000_000_000) // 2025-11-25T12:00:00Z

// flows returns n flows of generator g, each in fresh storage.
func flows(g *Generator, n int) []*flowpb.Flow {
	out := make([]*flowpb.Flow, n)
	for i := range out {
		var e pipeline.Event
		g.Fill(&e, t0+int64(i))
		out[i] = e.Flow
		if e.Time != e.Flow.Time || e.NodeName != e.Flow.NodeName || e.NodeName == "" {
			panic("envelope does not match the flow")
		}
	}
	return out
}

func TestDeterministic(t *testing.T) {
	a, b, c := flows(NewGenerator(7), 3000), flows(NewGenerator(7), 3000), flows(NewGenerator(8), 3000)
	same := 0
	for i := range a {
		if !proto.Equal(a[i], b[i]) {
			t.Fatalf("flow %d differs for the same seed:\n%v\n%v", i, a[i], b[i])
		}
		if proto.Equal(a[i], c[i]) {
			same++
		}
	}
	if same > 0 {
		t.Errorf("%d flows equal for different seeds", same)
	}
}

// TestReuse: flows built in reused storage, whatever it held before (an
// earlier generated flow, or a flow of any shape from elsewhere), equal
// flows built in fresh storage.
func TestReuse(t *testing.T) {
	fresh := flows(NewGenerator(3), 8000)
	g := NewGenerator(3)
	foreign := append(fullFlows(), foreignFlow(t))
	b := pipeline.NewBatch()
	defer b.Release()
	k := 0
	for round := 0; k < len(fresh); round++ {
		b.Truncate(0)
		for i := range 512 {
			e := b.Next()
			if round%2 == 1 && i%3 == 0 {
				// A slot whose spare storage holds a foreign flow.
				proto.Reset(e.FlowStorage())
				proto.Merge(e.Flow, foreign[(round+i)%len(foreign)])
			}
			if k == len(fresh) {
				break
			}
			g.Fill(e, t0+int64(k))
			if !proto.Equal(e.Flow, fresh[k]) {
				t.Fatalf("flow %d in reused storage:\n got %v\nwant %v", k, e.Flow, fresh[k])
			}
			k++
		}
	}
}

// fullFlows returns flows with every field set, recursively: one flow per
// member of the oneofs (flow.Layer4 has the most, seven).
func fullFlows() []*flowpb.Flow {
	var out []*flowpb.Flow
	for k := range 7 {
		f := new(flowpb.Flow)
		fillAll(f.ProtoReflect(), k, 0)
		out = append(out, f)
	}
	return out
}

func fillAll(m protoreflect.Message, k, depth int) {
	fields := m.Descriptor().Fields()
	for i := range fields.Len() {
		fd := fields.Get(i)
		if o := fd.ContainingOneof(); o != nil && !o.IsSynthetic() && o.Fields().Get(k%o.Fields().Len()) != fd {
			continue
		}
		switch {
		case fd.IsMap():
		case fd.IsList():
			l := m.Mutable(fd).List()
			for j := range 2 {
				if fd.Message() != nil {
					e := l.NewElement()
					fillAll(e.Message(), k+j, depth+1)
					l.Append(e)
				} else {
					l.Append(scalar(fd, j))
				}
			}
		case fd.Message() != nil:
			if depth < 5 && fd.Message().FullName() != "google.protobuf.Any" {
				fillAll(m.Mutable(fd).Message(), k, depth+1)
			}
		default:
			m.Set(fd, scalar(fd, 1))
		}
	}
}

func scalar(fd protoreflect.FieldDescriptor, j int) protoreflect.Value {
	switch fd.Kind() {
	case protoreflect.BoolKind:
		return protoreflect.ValueOfBool(true)
	case protoreflect.EnumKind:
		return protoreflect.ValueOfEnum(protoreflect.EnumNumber(1 + j))
	case protoreflect.Int32Kind, protoreflect.Sint32Kind, protoreflect.Sfixed32Kind:
		return protoreflect.ValueOfInt32(int32(5 + j))
	case protoreflect.Int64Kind, protoreflect.Sint64Kind, protoreflect.Sfixed64Kind:
		return protoreflect.ValueOfInt64(int64(5 + j))
	case protoreflect.Uint32Kind, protoreflect.Fixed32Kind:
		return protoreflect.ValueOfUint32(uint32(5 + j))
	case protoreflect.Uint64Kind, protoreflect.Fixed64Kind:
		return protoreflect.ValueOfUint64(uint64(5 + j))
	case protoreflect.FloatKind:
		return protoreflect.ValueOfFloat32(1.5)
	case protoreflect.DoubleKind:
		return protoreflect.ValueOfFloat64(1.5)
	case protoreflect.StringKind:
		return protoreflect.ValueOfString(fmt.Sprint("stale-", j))
	default:
		return protoreflect.ValueOfBytes([]byte("stale"))
	}
}

// foreignFlow is a flow with every kind of field the generator does not
// set, from the file source corpus plus extras.
func foreignFlow(t *testing.T) *flowpb.Flow {
	var env observer.GetFlowsResponse
	line := `{"flow":{"time":"2026-11-24T12:00:08Z","uuid":"x","verdict":"ERROR","drop_reason":7,"auth_type":"SPIRE","ethernet":{"source":"a"},"IP":{"source":"1.1.1.1","source_xlated":"2.2.2.2","encrypted":true},"l4":{"VRRP":{"type":1}},"tunnel":{"protocol":"VXLAN","vni":2},"source":{"ID":1,"workloads":[{"name":"w","kind":"k"},{"name":"v"}],"labels":["a","b","c","d","e","f","g","h","i"]},"Type":"SOCK","node_name":"zzz","node_labels":["q"],"source_names":["s"],"destination_names":["d"],"l7":{"type":"SAMPLE","latency_ns":"9","http":{"code":500,"headers":[{"key":"a"},{"key":"b"}]}},"reply":true,"event_type":{"type":9,"sub_type":9},"source_service":{"name":"s"},"traffic_direction":"INGRESS","policy_match_type":9,"trace_observation_point":"TO_CRYPTO","trace_reason":"SRV6_ENCAP","file":{"name":"f"},"ip_trace_id":{"trace_id":"1"},"drop_reason_desc":"NAT46","is_reply":true,"debug_capture_point":"DBG_CAPTURE_DELIVERY","interface":{"index":1},"proxy_port":3,"trace_context":{"parent":{"trace_id":"t"}},"sock_xlate_point":"SOCK_XLATE_POINT_PRE_DIRECTION_FWD","socket_cookie":"1","cgroup_id":"2","Summary":"s","egress_allowed_by":[{"name":"p"}],"ingress_denied_by":[{"name":"q","labels":["x"]}],"policy_log":["l"],"aggregate":{"ingress_flow_count":1}}}`
	if err := protojson.Unmarshal([]byte(line), &env); err != nil {
		t.Fatal(err)
	}
	return env.GetFlow()
}

func TestNoAllocs(t *testing.T) {
	g := NewGenerator(1)
	b := pipeline.NewBatch()
	defer b.Release()
	fill := func() {
		b.Truncate(0)
		for i := range 512 {
			g.Fill(b.Next(), t0+int64(i))
		}
	}
	for range 50 { // warm up the free lists
		fill()
	}
	// Only the string arena allocates: one block per several hundred flows.
	if n := testing.AllocsPerRun(100, fill); n > 2 {
		t.Errorf("%v allocations per batch of 512 flows", n)
	}
}

// TestVariety checks that the mix covers every kind of flow the generator
// promises: each verdict, flow and event type, both IP versions and
// directions, TCP flags, UDP, SCTP, ICMP, L7 records with queries, user info
// and headers to redact, drops with reasons, and reserved and pod labels.
func TestVariety(t *testing.T) {
	seen := map[string]int{}
	type connKey struct {
		proto, src, dst string
		sport, dport    uint32
	}
	conns := map[connKey]bool{}
	for _, f := range flows(NewGenerator(11), 20000) {
		add := func(k string) { seen[k]++ }
		add("verdict:" + f.Verdict.String())
		add("type:" + f.Type.String())
		add(fmt.Sprint("event_type:", f.EventType.GetType()))
		add("ip:" + f.GetIP().GetIpVersion().String())
		add("dir:" + f.TrafficDirection.String())
		add("obs:" + f.TraceObservationPoint.String())
		add("reason:" + f.TraceReason.String())
		if f.DropReasonDesc != 0 {
			add("drop:" + f.DropReasonDesc.String())
			if f.DropReason != uint32(f.DropReasonDesc) {
				t.Fatalf("drop_reason %d != drop_reason_desc %v", f.DropReason, f.DropReasonDesc)
			}
		}
		if f.IsReply != nil {
			add(fmt.Sprint("is_reply:", f.IsReply.Value))
		}
		var sport, dport uint32
		proto := ""
		switch l4 := f.GetL4().GetProtocol().(type) {
		case *flowpb.Layer4_TCP:
			proto, sport, dport = "TCP", l4.TCP.SourcePort, l4.TCP.DestinationPort
			if fl := l4.TCP.Flags; fl != nil {
				add("tcp:" + f.Summary)
			}
		case *flowpb.Layer4_UDP:
			proto, sport, dport = "UDP", l4.UDP.SourcePort, l4.UDP.DestinationPort
		case *flowpb.Layer4_SCTP:
			proto, sport, dport = "SCTP", l4.SCTP.SourcePort, l4.SCTP.DestinationPort
			add("sctp:" + l4.SCTP.ChunkType.String())
		case *flowpb.Layer4_ICMPv4:
			proto = "ICMPv4"
			add(fmt.Sprint("icmp4:", l4.ICMPv4.Type))
		case *flowpb.Layer4_ICMPv6:
			proto = "ICMPv6"
			add(fmt.Sprint("icmp6:", l4.ICMPv6.Type))
		}
		add("l4:" + proto)
		if l7 := f.GetL7(); l7 != nil {
			add(fmt.Sprintf("l7:%T:%v", l7.Record, l7.Type))
			if h := l7.GetHttp(); h != nil {
				if strings.Contains(h.Url, "?") {
					add("http:query")
				}
				if strings.Contains(h.Url, "@") {
					add("http:userinfo")
				}
				for _, hd := range h.Headers {
					add("header:" + hd.Key)
				}
				if l7.Type == flowpb.L7FlowType_RESPONSE && (l7.LatencyNs == 0 || h.Code == 0) {
					t.Fatalf("response without latency or code: %v", f)
				}
			}
		}
		for _, ep := range []*flowpb.Endpoint{f.Source, f.Destination} {
			for _, l := range ep.GetLabels() {
				if l == "reserved:world" || l == "reserved:host" {
					add(l)
				}
				if strings.HasPrefix(l, "k8s:io.kubernetes.pod.namespace=") {
					add("ns-label")
				}
			}
			if len(ep.GetWorkloads()) > 0 {
				add("workload")
			}
		}
		if len(f.DestinationNames) > 0 {
			add("destination_names")
		}
		if len(f.SourceNames) > 0 {
			add("source_names")
		}
		if len(f.IngressAllowedBy) > 0 {
			add("ingress_allowed_by")
		}
		if len(f.IngressDeniedBy)+len(f.EgressDeniedBy) > 0 {
			add("denied_by")
		}
		if len(f.NodeLabels) == 0 || f.NodeName == "" || f.Uuid == "" || f.Summary == "" || f.Emitter == nil {
			t.Fatalf("flow lacks node, uuid, summary or emitter: %v", f)
		}
		if sport != 0 || dport != 0 {
			conns[connKey{proto, f.IP.Source, f.IP.Destination, sport, dport}] = true
		}
	}
	want := []string{
		"verdict:FORWARDED", "verdict:DROPPED", "verdict:AUDIT",
		"type:L3_L4", "type:L7",
		"event_type:1", "event_type:4", "event_type:5", "event_type:129",
		"ip:IPv4", "ip:IPv6", "dir:INGRESS", "dir:EGRESS",
		"obs:FROM_ENDPOINT", "obs:TO_ENDPOINT", "reason:NEW", "reason:ESTABLISHED", "reason:REPLY",
		"drop:POLICY_DENIED", "drop:POLICY_DENY", "drop:CT_MAP_INSERTION_FAILED", "drop:UNSUPPORTED_L3_PROTOCOL",
		"is_reply:true", "is_reply:false",
		"l4:TCP", "l4:UDP", "l4:SCTP", "l4:ICMPv4", "l4:ICMPv6", "l4:",
		"tcp:TCP Flags: SYN", "tcp:TCP Flags: SYN, ACK", "tcp:TCP Flags: ACK", "tcp:TCP Flags: ACK, PSH",
		"tcp:TCP Flags: ACK, FIN", "tcp:TCP Flags: ACK, RST",
		"sctp:INIT", "sctp:INIT_ACK", "sctp:SHUTDOWN", "sctp:ABORT",
		"icmp4:8", "icmp4:0", "icmp4:3", "icmp6:128", "icmp6:129",
		"l7:*flow.Layer7_Http:REQUEST", "l7:*flow.Layer7_Http:RESPONSE",
		"l7:*flow.Layer7_Dns:REQUEST", "l7:*flow.Layer7_Dns:RESPONSE",
		"l7:*flow.Layer7_Kafka:REQUEST", "l7:*flow.Layer7_Kafka:RESPONSE",
		"http:query", "http:userinfo", "header:Authorization", "header:Cookie",
		"reserved:world", "reserved:host", "ns-label", "workload", "destination_names", "source_names",
		"ingress_allowed_by", "denied_by",
	}
	for _, k := range want {
		if seen[k] == 0 {
			t.Errorf("no flow with %s", k)
		}
	}
	// Both directions of (almost) every connection appear.
	both := 0
	for k := range conns {
		if conns[connKey{k.proto, k.dst, k.src, k.dport, k.sport}] {
			both++
		}
	}
	if frac := float64(both) / float64(len(conns)); frac < 0.8 {
		t.Errorf("only %.0f%% of %d connections seen in both directions", 100*frac, len(conns))
	}
}

// collect is a pipeline.Output that checks and counts what it is given.
type collect struct {
	n, batches int
	last       time.Time
	t          *testing.T
	max        int
}

func (c *collect) Emit(_ context.Context, b *pipeline.Batch) error {
	defer b.Release()
	c.batches++
	c.n += b.Len()
	c.max = max(c.max, b.Len())
	for i := range b.Events {
		tm := b.Events[i].Time.AsTime()
		if !tm.After(c.last) {
			c.t.Errorf("time %v not after %v", tm, c.last)
		}
		c.last = tm
	}
	return nil
}

func (c *collect) Lost(flowpb.LostEventSource, int32, uint64) {}

func newSource(t testing.TB, cfg string) *Source {
	t.Helper()
	var n yaml.Node
	if err := yaml.Unmarshal([]byte(cfg), &n); err != nil {
		t.Fatal(err)
	}
	s, err := pipeline.Make(&pipeline.Build{Name: "gen", Log: slog.New(slog.NewTextHandler(io.Discard, nil))}, n.Content[0], New)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestRunCount(t *testing.T) {
	s := newSource(t, "count: 1200\nseed: 5")
	c := &collect{t: t}
	if err := s.Run(context.Background(), c); err != nil {
		t.Fatal(err)
	}
	if c.n != 1200 || c.batches != 3 || c.max != pipeline.DefaultBatchSize {
		t.Errorf("got %d flows in %d batches (max %d)", c.n, c.batches, c.max)
	}
}

func TestRunRate(t *testing.T) {
	s := newSource(t, "count: 60\nrate: 600\nseed: 5")
	c := &collect{t: t}
	start := time.Now()
	if err := s.Run(context.Background(), c); err != nil {
		t.Fatal(err)
	}
	// 600/s in batches of 12: five batches, the last due after 100ms.
	if c.n != 60 || c.max != 12 {
		t.Errorf("got %d flows, batches up to %d", c.n, c.max)
	}
	if el := time.Since(start); el < 90*time.Millisecond {
		t.Errorf("60 flows at 600/s took %v", el)
	}
}

func TestRunCancel(t *testing.T) {
	for _, cfg := range []string{"seed: 1", "rate: 10"} {
		s := newSource(t, cfg)
		ctx, cancel := context.WithCancel(context.Background())
		c := &cancelAfter{cancel: cancel, after: 3}
		done := make(chan error)
		go func() { done <- s.Run(ctx, c) }()
		select {
		case err := <-done:
			if err != nil {
				t.Fatal(err)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("%s: Run did not stop", cfg)
		}
	}
}

type cancelAfter struct {
	cancel context.CancelFunc
	after  int
}

func (c *cancelAfter) Emit(ctx context.Context, b *pipeline.Batch) error {
	b.Release()
	if c.after--; c.after == 0 {
		c.cancel()
	}
	return ctx.Err()
}

func (c *cancelAfter) Lost(flowpb.LostEventSource, int32, uint64) {}

func TestConfig(t *testing.T) {
	for cfg, want := range map[string]string{
		"rate: -1":    "1:7: generate source: rate must not be negative",
		"count: lots": "1:8: expected a non-negative integer",
		"speed: 3":    "speed",
		"seed: -1":    "1:7: expected a non-negative integer",
		"rate: [1]":   "1:7: expected a number",
		"count: 1.5":  "1:8: expected a non-negative integer",
	} {
		var n yaml.Node
		if err := yaml.Unmarshal([]byte(cfg), &n); err != nil {
			continue
		}
		_, err := pipeline.Make(&pipeline.Build{Name: "gen"}, n.Content[0], New)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: err = %v, want %q", cfg, err, want)
		}
	}
}

// TestRoundTrip: generated flows written by the file sink as JSON and read
// back by the file source are equal to the originals, and the lines are
// reproduced byte for byte.
func TestRoundTrip(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "gen.jsonl")
	want := flows(NewGenerator(21), 3000)
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	node := func(s string) *yaml.Node {
		var n yaml.Node
		yaml.Unmarshal([]byte(s), &n)
		return n.Content[0]
	}
	sk, err := pipeline.Make(&pipeline.Build{Name: "out", Encoding: "json", Log: logger}, node("path: "+path), filesink.New)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	sk.Start(ctx)
	for i := 0; i < len(want); i += 512 {
		b := pipeline.NewBatch()
		for _, f := range want[i:min(i+512, len(want))] {
			e := b.Next()
			e.Flow, e.Time, e.NodeName = f, f.Time, f.NodeName
		}
		if failed, err := sk.Write(ctx, b); failed != 0 || err != nil {
			t.Fatal(failed, err)
		}
		// The flows are not the batch's: take them out before the batch
		// goes back to the pool. Truncate would keep them as spare storage
		// (pipeline.Event.FlowStorage), and the file source below would
		// decode other flows into them.
		for i := range b.Events {
			b.Events[i].Flow = nil
		}
		b.Release()
	}
	sk.Close(ctx)
	written, _ := os.ReadFile(path)

	src, err := pipeline.Make(&pipeline.Build{Name: "in", Log: logger}, node("path: "+path), filesource.New)
	if err != nil {
		t.Fatal(err)
	}
	src.Start(ctx)
	path2 := filepath.Join(dir, "again.jsonl")
	sk2, _ := pipeline.Make(&pipeline.Build{Name: "out2", Encoding: "json", Log: logger}, node("path: "+path2), filesink.New)
	sk2.Start(ctx)
	out := &checkOutput{t: t, want: want, sink: sk2}
	if err := src.Run(ctx, out); err != nil {
		t.Fatal(err)
	}
	sk2.Close(ctx)
	if out.n != len(want) {
		t.Fatalf("read %d flows, want %d", out.n, len(want))
	}
	again, _ := os.ReadFile(path2)
	if string(again) != string(written) {
		t.Error("re-encoded file differs from the first")
	}
}

type checkOutput struct {
	t    *testing.T
	want []*flowpb.Flow
	n    int
	sink pipeline.Sink
}

func (c *checkOutput) Emit(ctx context.Context, b *pipeline.Batch) error {
	defer b.Release()
	for i := range b.Events {
		e := &b.Events[i]
		if !proto.Equal(e.Flow, c.want[c.n]) || !proto.Equal(e.Time, c.want[c.n].Time) || e.NodeName != c.want[c.n].NodeName {
			c.t.Fatalf("flow %d:\n got %v\nwant %v", c.n, e.Flow, c.want[c.n])
		}
		c.n++
	}
	_, err := c.sink.Write(ctx, b)
	return err
}

func (c *checkOutput) Lost(flowpb.LostEventSource, int32, uint64) {}

// BenchmarkFill measures making one flow in reused storage.
func BenchmarkFill(b *testing.B) {
	g := NewGenerator(1)
	batch := pipeline.NewBatch()
	for range 20 {
		batch.Truncate(0)
		for range 512 {
			g.Fill(batch.Next(), t0)
		}
	}
	b.ReportAllocs()
	cpu := cpuTime()
	i := 0
	for b.Loop() {
		if i%512 == 0 {
			batch.Truncate(0)
		}
		g.Fill(batch.Next(), t0+int64(i))
		i++
	}
	b.ReportMetric(float64(cpuTime()-cpu)/float64(i), "cpu-ns/op")
}

// cpuTime is the CPU time the process used, in ns: on a shared machine it
// shows the cost of a benchmark better than the wall-clock time does.
func cpuTime() int64 { return int64(cputime.Process()) }

// handoff is a minimal runtime: it passes batches over a channel to a
// goroutine that writes them to a sink and releases them, as the pipeline
// does between a source and a sink.
type handoff struct {
	ch chan *pipeline.Batch
}

func (h *handoff) Emit(ctx context.Context, b *pipeline.Batch) error {
	select {
	case h.ch <- b:
		return nil
	case <-ctx.Done():
		b.Release()
		return ctx.Err()
	}
}

func (h *handoff) Lost(flowpb.LostEventSource, int32, uint64) {}

// BenchmarkGenerateDiscard measures generate → discard throughput: the
// source's goroutines, a sink goroutine, batches between them (a channel of
// 16 batches, like the runtime's default 8192-event buffer).
func BenchmarkGenerateDiscard(b *testing.B) {
	for _, workers := range []int{1, runtime.GOMAXPROCS(0)} {
		b.Run(fmt.Sprintf("workers=%d", workers), func(b *testing.B) {
			sk, err := pipeline.Make(&pipeline.Build{Name: "null"}, nil, discard.New)
			if err != nil {
				b.Fatal(err)
			}
			src := &Source{count: uint64(b.N), seed: 1, log: slog.Default(), workers: workers}
			h := &handoff{ch: make(chan *pipeline.Batch, 16)}
			done := make(chan struct{})
			go func() {
				defer close(done)
				for batch := range h.ch {
					sk.Write(context.Background(), batch)
					batch.Release()
				}
			}()
			b.ReportAllocs()
			b.ResetTimer()
			cpu := cpuTime()
			if err := src.Run(context.Background(), h); err != nil {
				b.Fatal(err)
			}
			close(h.ch)
			<-done
			b.StopTimer()
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "flows/s")
			b.ReportMetric(float64(cpuTime()-cpu)/float64(b.N), "cpu-ns/op")
		})
	}
}

// TestParallel: several generating goroutines make the same flows as one,
// in the same order, with increasing times.
func TestParallel(t *testing.T) {
	run := func(workers int, count uint64) []*flowpb.Flow {
		src := &Source{count: count, seed: 9, log: slog.Default(), workers: workers}
		c := &keep{}
		if err := src.Run(context.Background(), c); err != nil {
			t.Fatal(err)
		}
		if uint64(len(c.flows)) != count {
			t.Fatalf("workers=%d: %d flows, want %d", workers, len(c.flows), count)
		}
		for i := 1; i < len(c.flows); i++ {
			if !c.flows[i].Time.AsTime().After(c.flows[i-1].Time.AsTime()) {
				t.Fatalf("workers=%d: flow %d time not after the previous one", workers, i)
			}
		}
		return c.flows
	}
	for _, count := range []uint64{3000, 512 * 5} {
		one := run(1, count)
		for _, w := range []int{2, 3, 4} { // 3 runs as 2
			many := run(w, count)
			for i := range one {
				a, b := proto.Clone(one[i]).(*flowpb.Flow), proto.Clone(many[i]).(*flowpb.Flow)
				a.Time, b.Time = nil, nil
				if !proto.Equal(a, b) {
					t.Fatalf("workers=%d flow %d differs", w, i)
				}
			}
		}
	}
	// Paced, the same flows again.
	paced := &Source{count: 1100, rate: 1e6, seed: 9, log: slog.Default(), workers: 2}
	c := &keep{}
	if err := paced.Run(context.Background(), c); err != nil {
		t.Fatal(err)
	}
	one := run(2, 1100)
	for i := range one {
		a, b := proto.Clone(one[i]).(*flowpb.Flow), c.flows[i]
		a.Time, b.Time = nil, nil
		if !proto.Equal(a, b) {
			t.Fatalf("paced flow %d differs", i)
		}
	}
}

// keep is a pipeline.Output that keeps copies of the flows.
type keep struct{ flows []*flowpb.Flow }

func (k *keep) Emit(_ context.Context, b *pipeline.Batch) error {
	defer b.Release()
	for i := range b.Events {
		k.flows = append(k.flows, proto.Clone(b.Events[i].Flow).(*flowpb.Flow))
	}
	return nil
}

func (k *keep) Lost(flowpb.LostEventSource, int32, uint64) {}

func TestUUID(t *testing.T) {
	g := NewGenerator(1)
	re := regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`)
	seen := map[string]bool{}
	for range 10000 {
		u := g.uuid()
		if !re.MatchString(u) || seen[u] {
			t.Fatalf("bad or repeated uuid %q", u)
		}
		seen[u] = true
	}
}

// TestStorageExclusive: a flow the generator filled in reused storage owns
// everything reachable from it, the spare capacity of its lists included.
// A decoder that reuses that storage (flowjson extends lists within their
// capacity and decodes into the elements found there) must not change any
// other flow.
func TestStorageExclusive(t *testing.T) {
	g := NewGenerator(21)
	b := new(pipeline.Batch) // not from the pool: only this generator's storage
	for round := range 4 {
		b.Truncate(0)
		for i := range 512 {
			g.Fill(b.Next(), t0+int64(round*512+i))
		}
	}
	// Each slot gets a flow with one more element in each list the
	// generator fills from its free lists.
	want := make([]*flowpb.Flow, b.Len())
	for i := range b.Events {
		f := proto.Clone(b.Events[i].Flow).(*flowpb.Flow)
		for _, ep := range []*flowpb.Endpoint{f.Source, f.Destination} {
			if ep != nil {
				ep.Workloads = append(ep.Workloads, &flowpb.Workload{Name: fmt.Sprintf("extra-%d", i), Kind: "Deployment"})
			}
		}
		pol := func() *flowpb.Policy {
			return &flowpb.Policy{Name: fmt.Sprintf("extra-%d", i), Kind: "CiliumNetworkPolicy"}
		}
		f.EgressAllowedBy = append(f.EgressAllowedBy, pol())
		f.IngressAllowedBy = append(f.IngressAllowedBy, pol())
		f.EgressDeniedBy = append(f.EgressDeniedBy, pol())
		f.IngressDeniedBy = append(f.IngressDeniedBy, pol())
		if h := f.GetL7().GetHttp(); h != nil {
			h.Headers = append(h.Headers, &flowpb.HTTPHeader{Key: "x-extra", Value: fmt.Sprint(i)})
		}
		want[i] = f
	}
	for i := range b.Events {
		line, err := flowjson.AppendFlow(nil, want[i])
		if err != nil {
			t.Fatal(err)
		}
		if err := flowjson.UnmarshalFlow(line, b.Events[i].FlowStorage()); err != nil {
			t.Fatal(err)
		}
	}
	bad := 0
	for i := range b.Events {
		if !proto.Equal(b.Events[i].Flow, want[i]) {
			if bad == 0 {
				t.Errorf("flow %d changed by decoding into other slots:\n got %v\nwant %v", i, b.Events[i].Flow, want[i])
			}
			bad++
		}
	}
	if bad > 0 {
		t.Errorf("%d of %d flows corrupted", bad, b.Len())
	}
}
