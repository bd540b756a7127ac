package ciliummonitor

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/gob"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/encoding/prototext"
	"google.golang.org/protobuf/proto"
	"gopkg.in/yaml.v3"

	flowpb "github.com/flowbus/flowbus/flow"
	"github.com/flowbus/flowbus/flow/datapath"
	"github.com/flowbus/flowbus/flow/monitor"
	"github.com/flowbus/flowbus/pipeline"
)

// collector is a pipeline.Output that keeps everything it is given.
type collector struct {
	mu     sync.Mutex
	events []pipeline.Event // flows cloned
	lost   []lostCall
	n      chan struct{}
}

type lostCall struct {
	src flowpb.LostEventSource
	cpu int32
	n   uint64
}

func newCollector() *collector { return &collector{n: make(chan struct{}, 1<<16)} }

func (c *collector) Emit(ctx context.Context, b *pipeline.Batch) error {
	c.mu.Lock()
	for i := range b.Events {
		e := b.Events[i]
		if e.Flow != nil {
			e.Flow = proto.Clone(e.Flow).(*flowpb.Flow)
			e.Time = e.Flow.Time
		}
		c.events = append(c.events, e)
		c.n <- struct{}{}
	}
	c.mu.Unlock()
	b.Release()
	return nil
}

func (c *collector) Lost(src flowpb.LostEventSource, cpu int32, n uint64) {
	c.mu.Lock()
	c.lost = append(c.lost, lostCall{src, cpu, n})
	c.mu.Unlock()
	c.n <- struct{}{}
}

// wait waits until n items (flows + lost calls) arrived.
func (c *collector) wait(t *testing.T, n int) {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for i := 0; i < n; i++ {
		select {
		case <-c.n:
		case <-deadline:
			t.Fatalf("timed out after %d of %d items", i, n)
		}
	}
}

var ne = binary.NativeEndian

// Samples in Cilium's layouts.

func ethIPv4TCP(flags byte) []byte {
	pkt := make([]byte, 14+20+20)
	copy(pkt[0:6], []byte{0x0a, 0x58, 0x0a, 0xf4, 0x00, 0x9c})
	copy(pkt[6:12], []byte{0x0a, 0x58, 0x0a, 0xf4, 0x00, 0x01})
	pkt[12], pkt[13] = 0x08, 0x00
	ip := pkt[14:]
	ip[0], ip[3], ip[9] = 0x45, 40, 6
	copy(ip[12:], []byte{10, 244, 0, 156})
	copy(ip[16:], []byte{10, 96, 0, 10})
	tcp := ip[20:]
	binary.BigEndian.PutUint16(tcp[0:], 43512)
	binary.BigEndian.PutUint16(tcp[2:], 8080)
	tcp[12], tcp[13] = 5<<4, flags
	return pkt
}

func traceSample(obs uint8, flags byte) []byte {
	pkt := ethIPv4TCP(flags)
	b := make([]byte, 56, 56+len(pkt))
	b[0], b[1] = datapath.MessageTypeTrace, obs
	ne.PutUint16(b[2:], 7)
	ne.PutUint16(b[12:], uint16(len(pkt)))
	b[14] = 2
	ne.PutUint32(b[16:], 1000)
	ne.PutUint32(b[20:], 2000)
	b[26] = 1
	ne.PutUint32(b[28:], 4)
	b = append(b, pkt...)
	for (len(b)+4)%8 != 0 { // perf padding
		b = append(b, 0)
	}
	return b
}

func dropSample() []byte {
	pkt := ethIPv4TCP(0x02)
	b := make([]byte, 48, 48+len(pkt))
	b[0], b[1] = datapath.MessageTypeDrop, 133
	ne.PutUint16(b[12:], uint16(len(pkt)))
	b[14] = 3
	b[30] = 2
	return append(b, pkt...)
}

func agentEvent() []byte {
	var buf bytes.Buffer
	buf.WriteByte(datapath.MessageTypeAgent)
	_ = gob.NewEncoder(&buf).Encode(struct {
		Type uint32
		Text string
	}{Type: 2, Text: `{"time":"2026-11-25T05:00:00Z"}`})
	return buf.Bytes()
}

func debugMsg() []byte {
	b := make([]byte, 20)
	b[0] = datapath.MessageTypeDebug
	return b
}

func accessLogSample(t *testing.T) []byte {
	b, err := datapath.EncodeAccessLog(&datapath.AccessLogRecord{Type: "Request", Timestamp: "2026-11-25T05:00:00Z",
		Verdict: "Forwarded", TransportProtocol: 17, DNS: &datapath.AccessLogDNS{Query: "example.com.", QTypes: []uint16{1}}})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// script is a stream of payloads and the flows/lost calls it yields.
func script(t *testing.T) (payloads []monitor.Payload, flowSamples [][]byte, lost []lostCall) {
	t.Helper()
	samples := [][]byte{traceSample(0, 0x12), dropSample(), accessLogSample(t), traceSample(11, 0x11)}
	payloads = []monitor.Payload{
		{Type: monitor.PayloadSample, CPU: 0, Data: samples[0]},
		{Type: monitor.PayloadSample, CPU: 1, Data: agentEvent()},
		{Type: monitor.PayloadSample, CPU: 1, Data: samples[1]},
		{Type: monitor.PayloadLost, CPU: 1, Lost: 17},
		{Type: monitor.PayloadSample, CPU: 0, Data: debugMsg()},
		{Type: monitor.PayloadSample, CPU: 0, Data: []byte{datapath.MessageTypeTrace, 0, 0}}, // malformed
		{Type: monitor.PayloadSample, CPU: 0, Data: samples[2]},
		{Type: 42, CPU: 0},
		{Type: monitor.PayloadSample, CPU: 3, Data: samples[3]},
	}
	return payloads, samples, []lostCall{{flowpb.LostEventSource_PERF_EVENT_RING_BUFFER, 1, 17}}
}

func build(t *testing.T, cfg string, reg prometheus.Registerer) *Source {
	t.Helper()
	var n yaml.Node
	if err := yaml.Unmarshal([]byte(cfg), &n); err != nil {
		t.Fatal(err)
	}
	src, err := pipeline.Make(&pipeline.Build{Name: "mon", Type: "cilium-monitor", NodeName: "node-1", Dir: t.TempDir(),
		Log: slog.New(slog.NewTextHandler(io.Discard, nil)), Metrics: reg}, n.Content[0], New)
	if err != nil {
		t.Fatal(err)
	}
	return src
}

// flowUUID matches a version 4 UUID, which every flow from the source has.
var flowUUID = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`)

// checkFlows compares the collected flows with decoding the samples
// directly (time and uuid aside), and checks the envelope and that every
// flow got its own uuid. With named (flows read from the socket), each
// flow's interface has the name this host's link table gives its index.
func checkFlows(t *testing.T, got []pipeline.Event, samples [][]byte, named bool) {
	t.Helper()
	if len(got) != len(samples) {
		t.Fatalf("got %d flows, want %d", len(got), len(samples))
	}
	var d datapath.Decoder
	seen := make(map[string]bool)
	for i, s := range samples {
		want := new(flowpb.Flow)
		if err := d.Decode(s, want); err != nil {
			t.Fatal(err)
		}
		e := got[i]
		if e.NodeName != "node-1" || e.Flow.NodeName != "node-1" {
			t.Errorf("flow %d: node names %q/%q", i, e.NodeName, e.Flow.NodeName)
		}
		if e.Time == nil || e.Time != e.Flow.Time {
			t.Errorf("flow %d: envelope time not the flow's", i)
		}
		if !flowUUID.MatchString(e.Flow.Uuid) || seen[e.Flow.Uuid] {
			t.Errorf("flow %d: uuid %q is not a new version 4 UUID", i, e.Flow.Uuid)
		}
		seen[e.Flow.Uuid] = true
		want.NodeName = "node-1"
		if named && want.Interface != nil {
			if ifi, err := net.InterfaceByIndex(int(want.Interface.Index)); err == nil {
				want.Interface.Name = ifi.Name
			}
		}
		want.Time = e.Flow.Time
		want.Uuid = e.Flow.Uuid
		if !proto.Equal(want, e.Flow) {
			t.Errorf("flow %d:\nwant %s\ngot  %s", i, prototext.Format(want), prototext.Format(e.Flow))
		}
	}
}

// server is a stand-in for the agent's monitor socket.
type server struct {
	ln    net.Listener
	conns chan net.Conn
}

func newServer(t *testing.T, path string) *server {
	t.Helper()
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	s := &server{ln: ln, conns: make(chan net.Conn, 4)}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				close(s.conns)
				return
			}
			s.conns <- c
		}
	}()
	t.Cleanup(func() { ln.Close() })
	return s
}

func (s *server) accept(t *testing.T) net.Conn {
	t.Helper()
	select {
	case c := <-s.conns:
		return c
	case <-time.After(10 * time.Second):
		t.Fatal("no connection")
		return nil
	}
}

// send writes payloads on c as the agent does: one gob encoder per
// connection.
func send(t *testing.T, enc *gob.Encoder, ps []monitor.Payload) {
	t.Helper()
	for i := range ps {
		if err := enc.Encode(&ps[i]); err != nil {
			t.Fatal(err)
		}
	}
}

func TestSocket(t *testing.T) {
	dir := t.TempDir()
	sock := filepath.Join(dir, "monitor1_2.sock")
	srv := newServer(t, sock)
	reg := prometheus.NewRegistry()
	src := build(t, "socket: "+sock+"\nreconnect: {initial_backoff: 10ms, max_backoff: 50ms}\n", reg)
	if err := src.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	out := newCollector()
	done := make(chan error, 1)
	go func() { done <- src.Run(ctx, out) }()

	payloads, samples, lost := script(t)
	c := srv.accept(t)
	send(t, gob.NewEncoder(c), payloads)
	out.wait(t, len(samples)+len(lost))
	waitFor(t, func() bool { return src.Ready() == nil })

	// The agent goes away: the source reports it and, once the agent is
	// back, reconnects. (The listener goes first, so that the source
	// stays unready until the new one listens, however late this
	// goroutine runs.)
	srv.ln.Close()
	c.Close()
	waitFor(t, func() bool { return src.Ready() != nil })
	os.Remove(sock)
	srv = newServer(t, sock)
	c = srv.accept(t)
	waitFor(t, func() bool { return src.Ready() == nil })
	send(t, gob.NewEncoder(c), payloads[:1])
	out.wait(t, 1)

	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
	c.Close()
	out.mu.Lock()
	defer out.mu.Unlock()
	checkFlows(t, out.events, append(samples, samples[0]), true)
	if len(out.lost) != 1 || out.lost[0] != lost[0] {
		t.Errorf("lost calls %v, want %v", out.lost, lost)
	}
	for name, want := range map[string]float64{
		"flowbus_cilium_monitor_flows_total":             5,
		"flowbus_cilium_monitor_malformed_samples_total": 1,
		"flowbus_cilium_monitor_perf_lost_samples_total": 17,
		"flowbus_cilium_monitor_unknown_payloads_total":  1,
		"flowbus_cilium_monitor_connections_total":       2,
	} {
		if got := gather(t, reg, name, ""); got != want {
			t.Errorf("%s = %v, want %v", name, got, want)
		}
	}
	if got := gather(t, reg, "flowbus_cilium_monitor_skipped_samples_total", "agent"); got != 1 {
		t.Errorf("skipped agent = %v", got)
	}
	if got := gather(t, reg, "flowbus_cilium_monitor_skipped_samples_total", "debug"); got != 1 {
		t.Errorf("skipped debug = %v", got)
	}
}

func gather(t *testing.T, reg *prometheus.Registry, name, kind string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.Metric {
			if kind != "" && (len(m.Label) == 0 || m.Label[0].GetValue() != kind) {
				continue
			}
			if m.Counter != nil {
				return m.Counter.GetValue()
			}
			return m.Gauge.GetValue()
		}
	}
	return -1
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met in time")
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func TestSocketUnreachable(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "none.sock")
	reg := prometheus.NewRegistry()
	src := build(t, "socket: "+sock+"\nreconnect: {initial_backoff: 5ms, max_backoff: 20ms}\n", reg)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- src.Run(ctx, newCollector()) }()
	waitFor(t, func() bool { return gather(t, reg, "flowbus_cilium_monitor_connect_failures_total", "") >= 3 })
	if err := src.Ready(); err == nil || !strings.Contains(err.Error(), "connect") {
		t.Errorf("Ready = %v", err)
	}
	// The agent appears: the source connects.
	srv := newServer(t, sock)
	c := srv.accept(t)
	defer c.Close()
	waitFor(t, func() bool { return src.Ready() == nil })
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

func TestNoReconnect(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "m.sock")
	src := build(t, "socket: "+sock+"\nreconnect: {enabled: false}\n", nil)
	if err := src.Start(context.Background()); err == nil {
		t.Fatal("Start succeeded without a socket")
	}
	srv := newServer(t, sock)
	src = build(t, "socket: "+sock+"\nreconnect: false\n", nil)
	if err := src.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	out := newCollector()
	done := make(chan error, 1)
	go func() { done <- src.Run(context.Background(), out) }()
	c := srv.accept(t)
	payloads, samples, _ := script(t)
	send(t, gob.NewEncoder(c), payloads)
	c.Close()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	checkFlows(t, out.events, samples, true)
}

func TestReplay(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "rec.gob")
	rec, err := monitor.CreateRecorder(path)
	if err != nil {
		t.Fatal(err)
	}
	payloads, samples, lost := script(t)
	for i := range payloads {
		p := payloads[i]
		switch p.Type {
		case monitor.PayloadSample:
			err = rec.Sample(p.CPU, p.Data)
		case monitor.PayloadLost:
			err = rec.Lost(p.CPU, p.Lost)
		default:
			err = rec.Write(&p)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	if err := rec.Close(); err != nil {
		t.Fatal(err)
	}
	// More samples than a batch holds: batches are cut at batch_size.
	src := build(t, "path: "+path+"\nbatch_size: 2\n", nil)
	if err := src.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	out := newCollector()
	if err := src.Run(context.Background(), out); err != nil {
		t.Fatal(err)
	}
	checkFlows(t, out.events, samples, false)
	if len(out.lost) != 1 || out.lost[0] != lost[0] {
		t.Errorf("lost = %v", out.lost)
	}

	// A recording cut short keeps what came before the cut.
	data, _ := os.ReadFile(path)
	cut := filepath.Join(dir, "cut.gob")
	os.WriteFile(cut, data[:len(data)-5], 0o644)
	src = build(t, "path: "+cut+"\n", nil)
	out = newCollector()
	if err := src.Run(context.Background(), out); err != nil {
		t.Fatal(err)
	}
	checkFlows(t, out.events, samples[:3], false)

	// A corrupt recording is an error naming the file.
	bad := filepath.Join(dir, "bad.gob")
	os.WriteFile(bad, append(data[:40:40], bytes.Repeat([]byte{0xfe}, 20)...), 0o644)
	src = build(t, "path: "+bad+"\n", nil)
	if err := src.Run(context.Background(), newCollector()); err == nil || !strings.Contains(err.Error(), "bad.gob") {
		t.Errorf("corrupt recording: err = %v", err)
	}

	// A missing recording fails at Start.
	src = build(t, "path: "+filepath.Join(dir, "missing")+"\n", nil)
	if err := src.Start(context.Background()); err == nil {
		t.Error("Start succeeded for a missing file")
	}
}

func TestConfigErrors(t *testing.T) {
	for cfg, want := range map[string]string{
		"socket: /a\npath: /b\n":                                "not both",
		"cilium_version: banana\n":                              "cilium_version",
		"reconnect: {initial_backoff: 1s, max_backoff: 10ms}\n": "max_backoff",
		"batch_size: -1\n":                                      "batch_size",
		"sockett: /x\n":                                         "sockett",
		"reconnect: maybe\n":                                    "reconnect: want true, false",
		"reconnect: {enabeld: true}\n":                          "enabeld",
	} {
		var n yaml.Node
		if err := yaml.Unmarshal([]byte(cfg), &n); err != nil {
			t.Fatal(err)
		}
		_, err := pipeline.Make(&pipeline.Build{Name: "m"}, n.Content[0], New)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: err = %v, want mention of %q", cfg, err, want)
		}
	}
}

func TestCiliumVersion(t *testing.T) {
	for v, want := range map[string]datapath.SockTraceVersion{
		"1.16": datapath.SockTraceV1_18, "v1.18.4": datapath.SockTraceV1_18,
		"1.19": datapath.SockTraceV1_19, "v1.20.2": datapath.SockTraceV1_19, "2.0": datapath.SockTraceV1_19,
	} {
		got, err := sockTraceVersion(v)
		if err != nil || got != want {
			t.Errorf("%s: %v, %v", v, got, err)
		}
	}
}

// TestSocketServesRecording serves a recorded stream, byte for byte, over
// a real unix socket, as the agent would have sent it.
func TestSocketServesRecording(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "rec.gob")
	rec, err := monitor.CreateRecorder(path)
	if err != nil {
		t.Fatal(err)
	}
	payloads, samples, lost := script(t)
	for i := range payloads {
		if err := rec.Write(&payloads[i]); err != nil {
			t.Fatal(err)
		}
	}
	if err := rec.Close(); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "monitor1_2.sock")
	srv := newServer(t, sock)
	src := build(t, "socket: "+sock+"\nreconnect: false\n", nil)
	if err := src.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	out := newCollector()
	done := make(chan error, 1)
	go func() { done <- src.Run(context.Background(), out) }()
	c := srv.accept(t)
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(c, f); err != nil {
		t.Fatal(err)
	}
	f.Close()
	c.Close()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	checkFlows(t, out.events, samples, true)
	if len(out.lost) != 1 || out.lost[0] != lost[0] {
		t.Errorf("lost calls %v, want %v", out.lost, lost)
	}
}

// traceOn is a trace sample observed on the interface with this index.
func traceOn(ifindex uint32) []byte {
	b := traceSample(0, 0x12)
	ne.PutUint32(b[28:], ifindex)
	return b
}

// TestInterfaceNames: flows read from the socket carry the name the
// node's link table gives their interface's index, also for an interface
// created while the source runs (a new pod's veth), and for a renamed one;
// with interface_names: false they keep only the index.
func TestInterfaceNames(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("needs root: creates network interfaces (CI runs the tests as root)")
	}
	mkLink := func(name string) uint32 {
		t.Helper()
		if out, err := exec.Command("ip", "link", "add", name, "type", "veth", "peer", "name", name+"p").CombinedOutput(); err != nil {
			t.Fatalf("ip link add %s: %v: %s", name, err, out)
		}
		t.Cleanup(func() { exec.Command("ip", "link", "del", name).Run() })
		ifi, err := net.InterfaceByName(name)
		if err != nil {
			t.Fatal(err)
		}
		return uint32(ifi.Index)
	}
	prefix := fmt.Sprintf("fbm%d", os.Getpid()%1000000)
	before := mkLink(prefix + "a")

	for _, named := range []bool{true, false} {
		t.Run(fmt.Sprintf("interface_names=%v", named), func(t *testing.T) {
			sock := filepath.Join(t.TempDir(), "m.sock")
			srv := newServer(t, sock)
			src := build(t, fmt.Sprintf("socket: %s\nreconnect: false\ninterface_names: %v\n", sock, named), nil)
			if err := src.Start(context.Background()); err != nil {
				t.Fatal(err)
			}
			out := newCollector()
			done := make(chan error, 1)
			go func() { done <- src.Run(context.Background(), out) }()
			c := srv.accept(t)
			enc := gob.NewEncoder(c)
			send(t, enc, []monitor.Payload{{Type: monitor.PayloadSample, Data: traceOn(before)}})
			out.wait(t, 1)
			var after uint32
			if named {
				// Created while the source runs; then renamed.
				after = mkLink(prefix + "b")
				send(t, enc, []monitor.Payload{{Type: monitor.PayloadSample, Data: traceOn(after)}})
				out.wait(t, 1)
				for _, args := range [][]string{{"link", "set", prefix + "b", "name", prefix + "c"}} {
					if o, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
						t.Fatalf("ip %v: %v: %s", args, err, o)
					}
				}
				t.Cleanup(func() { exec.Command("ip", "link", "del", prefix+"c").Run() })
				// The rename reaches the source through its link events.
				deadline := time.Now().Add(5 * time.Second)
				for src.names.Get(after) != prefix+"c" {
					if time.Now().After(deadline) {
						t.Fatalf("rename not seen: %q", src.names.Get(after))
					}
					time.Sleep(10 * time.Millisecond)
				}
				send(t, enc, []monitor.Payload{{Type: monitor.PayloadSample, Data: traceOn(after)}})
				out.wait(t, 1)
			}
			c.Close()
			if err := <-done; err != nil {
				t.Fatal(err)
			}
			out.mu.Lock()
			defer out.mu.Unlock()
			var got []string
			for _, e := range out.events {
				got = append(got, fmt.Sprintf("%d:%s", e.Flow.GetInterface().GetIndex(), e.Flow.GetInterface().GetName()))
			}
			want := []string{fmt.Sprintf("%d:", before)}
			if named {
				want = []string{fmt.Sprintf("%d:%sa", before, prefix), fmt.Sprintf("%d:%sb", after, prefix), fmt.Sprintf("%d:%sc", after, prefix)}
			}
			if !slices.Equal(got, want) {
				t.Errorf("interfaces = %v, want %v", got, want)
			}
		})
	}
}
