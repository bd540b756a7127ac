//go:build linux

package ebpf

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	ciliumebpf "github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"
	"gopkg.in/yaml.v3"

	"github.com/flowbus/flowbus/bpf"
	"github.com/flowbus/flowbus/bpf/bpftest"
	flowpb "github.com/flowbus/flowbus/flow"
	"github.com/flowbus/flowbus/flow/datapath"
	"github.com/flowbus/flowbus/flow/monitor"
	"github.com/flowbus/flowbus/pipeline"
)

// hooks are the values of the hook key: the tests of what flows carry run
// with each.
var hooks = []string{"tc", "tracepoint"}

// TestFlows checks the flows of TCP, UDP and ICMP over IPv4 and IPv6, with
// each hook.
func TestFlows(t *testing.T) {
	bpftest.RequireRoot(t)
	for _, hook := range hooks {
		t.Run(hook, func(t *testing.T) { testFlows(t, hook) })
	}
}

func testFlows(t *testing.T, hook string) {
	p := bpftest.NewPair(t)
	r := startSource(t, ifaceYAML(p, "aggregation: none", "drops: false", "hook: "+hook))

	tcp := listenTCP(t, p, p.PeerIP)
	udp := listenUDP(t, p, p.PeerIP)
	udp6 := listenUDP(t, p, p.PeerIP6)

	conn, err := net.DialTCP("tcp", nil, tcp)
	if err != nil {
		t.Fatal(err)
	}
	local := conn.LocalAddr().(*net.TCPAddr)
	conn.Write([]byte("hello"))
	conn.Close()
	for _, dst := range []*net.UDPAddr{udp, udp6} {
		uc, err := net.DialUDP("udp", nil, dst)
		if err != nil {
			t.Fatal(err)
		}
		uc.Write([]byte("datagram"))
		uc.Close()
	}
	if err := bpftest.Ping(p.PeerIP, 1); err != nil {
		t.Fatal(err)
	}
	if err := bpftest.Ping(p.PeerIP6, 1); err != nil {
		t.Fatal(err)
	}

	egress := func(f *flowpb.Flow) bool {
		return f.TraceObservationPoint == flowpb.TraceObservationPoint_TO_NETWORK
	}
	ingress := func(f *flowpb.Flow) bool {
		return f.TraceObservationPoint == flowpb.TraceObservationPoint_FROM_NETWORK
	}
	checkCommon := func(name string, f *flowpb.Flow, out bool) {
		t.Helper()
		obs, dir := flowpb.TraceObservationPoint_FROM_NETWORK, flowpb.TrafficDirection_INGRESS
		if out {
			obs, dir = flowpb.TraceObservationPoint_TO_NETWORK, flowpb.TrafficDirection_EGRESS
		}
		if f.TraceObservationPoint != obs || f.TrafficDirection != dir {
			t.Errorf("%s: observation point %v direction %v, want %v %v", name, f.TraceObservationPoint, f.TrafficDirection, obs, dir)
		}
		if f.Verdict != flowpb.Verdict_FORWARDED || f.Type != flowpb.FlowType_L3_L4 {
			t.Errorf("%s: verdict %v type %v", name, f.Verdict, f.Type)
		}
		if f.GetEventType().GetType() != 4 || f.GetEventType().GetSubType() != int32(obs) {
			t.Errorf("%s: event_type %v", name, f.EventType)
		}
		if f.GetInterface().GetIndex() != uint32(p.HostIndex) || f.GetInterface().GetName() != p.Host {
			t.Errorf("%s: interface %v, want %d %s", name, f.Interface, p.HostIndex, p.Host)
		}
		if f.NodeName != "test-node" || f.Time == nil {
			t.Errorf("%s: node_name %q time %v", name, f.NodeName, f.Time)
		}
		if len(f.Uuid) != 36 || f.Uuid[14] != '4' {
			t.Errorf("%s: uuid %q, want a version 4 UUID", name, f.Uuid)
		}
		src, dst := p.HostMAC, p.PeerMAC
		if !out {
			src, dst = dst, src
		}
		if f.GetEthernet().GetSource() != src.String() || f.GetEthernet().GetDestination() != dst.String() {
			t.Errorf("%s: ethernet %v, want %s > %s", name, f.Ethernet, src, dst)
		}
	}

	syn := r.out.waitFlow(t, "TCP SYN", func(f *flowpb.Flow) bool {
		tc := f.GetL4().GetTCP()
		return egress(f) && is(f, p.HostIP, p.PeerIP) && tc != nil && tc.GetFlags().GetSYN() && !tc.GetFlags().GetACK()
	})
	checkCommon("SYN", syn, true)
	if tc := syn.L4.GetTCP(); tc.SourcePort != uint32(local.Port) || tc.DestinationPort != uint32(tcp.Port) {
		t.Errorf("SYN ports %d > %d, want %d > %d", tc.SourcePort, tc.DestinationPort, local.Port, tcp.Port)
	}
	if syn.GetIP().GetIpVersion() != flowpb.IPVersion_IPv4 {
		t.Errorf("SYN ip version %v", syn.IP.IpVersion)
	}
	synack := r.out.waitFlow(t, "TCP SYN-ACK", func(f *flowpb.Flow) bool {
		tc := f.GetL4().GetTCP()
		return ingress(f) && is(f, p.PeerIP, p.HostIP) && tc.GetFlags().GetSYN() && tc.GetFlags().GetACK()
	})
	checkCommon("SYN-ACK", synack, false)
	if tc := synack.L4.GetTCP(); tc.SourcePort != uint32(tcp.Port) || tc.DestinationPort != uint32(local.Port) {
		t.Errorf("SYN-ACK ports %d > %d", tc.SourcePort, tc.DestinationPort)
	}
	if synack.Summary != "TCP Flags: SYN, ACK" {
		t.Errorf("SYN-ACK summary %q", synack.Summary)
	}
	r.out.waitFlow(t, "TCP FIN", func(f *flowpb.Flow) bool {
		return egress(f) && is(f, p.HostIP, p.PeerIP) && f.GetL4().GetTCP().GetFlags().GetFIN()
	})

	for _, c := range []struct {
		name     string
		src, dst net.IP
		port     int
		v        flowpb.IPVersion
	}{
		{"UDP", p.HostIP, p.PeerIP, udp.Port, flowpb.IPVersion_IPv4},
		{"UDP6", p.HostIP6, p.PeerIP6, udp6.Port, flowpb.IPVersion_IPv6},
	} {
		f := r.out.waitFlow(t, c.name, func(f *flowpb.Flow) bool {
			return egress(f) && is(f, c.src, c.dst) && f.GetL4().GetUDP() != nil
		})
		checkCommon(c.name, f, true)
		if f.L4.GetUDP().DestinationPort != uint32(c.port) || f.IP.IpVersion != c.v {
			t.Errorf("%s: port %d version %v, want %d %v", c.name, f.L4.GetUDP().DestinationPort, f.IP.IpVersion, c.port, c.v)
		}
	}

	req := r.out.waitFlow(t, "ICMPv4 echo request", func(f *flowpb.Flow) bool {
		return egress(f) && is(f, p.HostIP, p.PeerIP) && f.GetL4().GetICMPv4() != nil
	})
	checkCommon("ICMPv4 request", req, true)
	if req.L4.GetICMPv4().Type != 8 {
		t.Errorf("ICMPv4 request type %d", req.L4.GetICMPv4().Type)
	}
	rep := r.out.waitFlow(t, "ICMPv4 echo reply", func(f *flowpb.Flow) bool {
		return ingress(f) && is(f, p.PeerIP, p.HostIP) && f.GetL4().GetICMPv4() != nil
	})
	checkCommon("ICMPv4 reply", rep, false)
	if rep.L4.GetICMPv4().Type != 0 {
		t.Errorf("ICMPv4 reply type %d", rep.L4.GetICMPv4().Type)
	}
	rep6 := r.out.waitFlow(t, "ICMPv6 echo reply", func(f *flowpb.Flow) bool {
		return ingress(f) && is(f, p.PeerIP6, p.HostIP6) && f.GetL4().GetICMPv6().GetType() == 129
	})
	checkCommon("ICMPv6 reply", rep6, false)
	if rep6.IP.IpVersion != flowpb.IPVersion_IPv6 {
		t.Errorf("ICMPv6 version %v", rep6.IP.IpVersion)
	}
}

func TestAggregation(t *testing.T) {
	bpftest.RequireRoot(t)
	p := bpftest.NewPair(t)
	r := startSource(t, ifaceYAML(p, "aggregation: connection", "aggregation_interval: 1h", "drops: false"))
	tcp := listenTCP(t, p, p.PeerIP)

	conn, err := net.DialTCP("tcp", nil, tcp)
	if err != nil {
		t.Fatal(err)
	}
	local := conn.LocalAddr().(*net.TCPAddr)
	chunk := make([]byte, 64<<10)
	const total = 16 << 20
	for sent := 0; sent < total; sent += len(chunk) {
		if _, err := conn.Write(chunk); err != nil {
			t.Fatal(err)
		}
	}
	conn.Close()
	ours := func(f *flowpb.Flow) bool {
		tc := f.GetL4().GetTCP()
		return tc != nil && (tc.SourcePort == uint32(local.Port) || tc.DestinationPort == uint32(local.Port))
	}
	// The connection's end (FIN from both sides) is a flag change, so it
	// is reported in each direction.
	r.out.waitFlow(t, "client FIN", func(f *flowpb.Flow) bool {
		return ours(f) && f.TraceObservationPoint == flowpb.TraceObservationPoint_TO_NETWORK && f.L4.GetTCP().GetFlags().GetFIN()
	})
	r.out.waitFlow(t, "server FIN", func(f *flowpb.Flow) bool {
		return ours(f) && f.TraceObservationPoint == flowpb.TraceObservationPoint_FROM_NETWORK && f.L4.GetTCP().GetFlags().GetFIN()
	})
	counters, err := r.src.Counters()
	if err != nil {
		t.Fatal(err)
	}
	n := r.out.count(ours)
	t.Logf("16 MiB transfer: %d flows, %d packets aggregated away", n, counters[bpf.CounterTraceAggregated])
	// Per direction: first packet, then each new flag (ACK, PSH, FIN).
	if n < 4 || n > 10 {
		t.Errorf("%d flows for one 16 MiB connection, want a handful (4..10)", n)
	}
	if counters[bpf.CounterTraceAggregated] < 100 {
		t.Errorf("only %d packets aggregated away", counters[bpf.CounterTraceAggregated])
	}
}

func TestAggregationRefresh(t *testing.T) {
	bpftest.RequireRoot(t)
	p := bpftest.NewPair(t)
	r := startSource(t, ifaceYAML(p, "aggregation: connection", "aggregation_interval: 50ms", "drops: false"))
	udp := listenUDP(t, p, p.PeerIP)
	uc, err := net.DialUDP("udp", nil, udp)
	if err != nil {
		t.Fatal(err)
	}
	defer uc.Close()
	ours := func(f *flowpb.Flow) bool {
		return is(f, p.HostIP, p.PeerIP) && f.GetL4().GetUDP().GetDestinationPort() == uint32(udp.Port)
	}
	// 40 datagrams 10ms apart: the first is reported, then at most one
	// per 50ms interval.
	start := time.Now()
	for range 40 {
		uc.Write([]byte("x"))
		time.Sleep(10 * time.Millisecond)
	}
	elapsed := time.Since(start)
	r.out.waitFlow(t, "a refresh", func(f *flowpb.Flow) bool {
		return ours(f) && f.Time.AsTime().After(start.Add(50*time.Millisecond))
	})
	r.stop() // drains every sample
	n := r.out.count(ours)
	if most := int(elapsed/(50*time.Millisecond)) + 2; n < 2 || n > most {
		t.Errorf("%d flows for 40 datagrams over %v with a 50ms refresh, want 2..%d", n, elapsed, most)
	}
}

// Losses are reported as the kernel counts them, with the perf rings (per
// CPU, from their LOST records) and with the ring buffer (from the
// programs' counters).
func TestLostEventsMatchKernel(t *testing.T) {
	bpftest.RequireRoot(t)
	for _, buffer := range []string{"perf", "ring"} {
		t.Run(buffer, func(t *testing.T) { testLostEvents(t, buffer) })
	}
}

func testLostEvents(t *testing.T, buffer string) {
	p := bpftest.NewPair(t)
	r := startSource(t, ifaceYAML(p, "aggregation: none", "drops: false", "perf_buffer_pages: 1", "capture_length: 256", "event_buffer: "+buffer))
	udp := listenUDP(t, p, p.PeerIP)

	// Hold the reader back while the load runs, so the 1-page rings fill.
	r.out.gate.Lock()
	send := func(n int) func() error {
		return func() error {
			uc, err := net.DialUDP("udp", nil, udp)
			if err != nil {
				return err
			}
			defer uc.Close()
			msg := make([]byte, 200)
			for range n {
				uc.Write(msg)
			}
			return nil
		}
	}
	if err := onCPU(0, send(20000)); err != nil {
		t.Fatal(err)
	}
	r.out.gate.Unlock()

	// The kernel reports a ring's losses with its next sample: send a few
	// packets on every CPU until the counts agree.
	deadline := time.Now().Add(10 * time.Second)
	for {
		counters, err := r.src.Counters()
		if err != nil {
			t.Fatal(err)
		}
		kernel := counters[bpf.CounterTraceLost] + counters[bpf.CounterDropLost]
		got := r.out.lostTotal()
		if kernel > 0 && got == kernel {
			t.Logf("lost %d samples (kernel count %d), by CPU %v; %d samples sent", got, kernel, r.out.lost, counters[bpf.CounterTraceSent])
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("LostEvents total %d, BPF output failures %d", got, kernel)
		}
		for cpu := range runtime.NumCPU() {
			if err := onCPU(cpu, send(2)); err != nil {
				t.Fatal(err)
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Losses at the end of a burst that no sample follows are reported when
// the source stops: the perf rings record them only at a ring's next
// sample, which never comes once the programs are detached, so the source
// takes them from the programs' counters. And a stop while the reader
// waits in Emit still drains the rings: every sample the programs wrote
// arrives.
func TestLostAtEndReportedAtStop(t *testing.T) {
	bpftest.RequireRoot(t)
	for _, buffer := range []string{"perf", "ring"} {
		t.Run(buffer, func(t *testing.T) {
			p := bpftest.NewPair(t)
			r := startSource(t, ifaceYAML(p, "aggregation: none", "drops: false", "direction: egress", "perf_buffer_pages: 1", "event_buffer: "+buffer))
			r.src.mu.Lock()
			objs := r.src.objs
			r.src.mu.Unlock()
			// Hold the reader back while the burst fills the rings.
			r.out.gate.Lock()
			if err := onCPU(0, func() error { return objs.RunTrace(bpf.Egress, p.HostIndex, udpFrame(p), 5000) }); err != nil {
				t.Fatal(err)
			}
			counters, err := r.src.Counters()
			if err != nil {
				t.Fatal(err)
			}
			// Stop while the reader waits in Emit (its flush of the first
			// samples), which then fails with the ended context.
			time.Sleep(2 * flushInterval)
			stopped := make(chan struct{})
			go func() { r.stop(); close(stopped) }()
			time.Sleep(50 * time.Millisecond)
			r.out.gate.Unlock()
			<-stopped
			kernel := counters[bpf.CounterTraceLost]
			if kernel == 0 {
				t.Fatal("no sample lost: the burst did not fill the rings")
			}
			// The interface's own traffic (IPv6 neighbour discovery) may
			// lose a few samples more while the rings are still full.
			if got := r.out.lostTotal(); got < kernel || got > kernel+4 {
				t.Errorf("LostEvents total %d, BPF output failures %d before the stop", got, kernel)
			}
			ours := func(f *flowpb.Flow) bool { return is(f, p.HostIP, p.PeerIP) }
			if got, sent := r.out.count(ours), counters[bpf.CounterTraceSent]; uint64(got) < sent-min(sent, 4) {
				// (a few samples may be the interface's own traffic)
				t.Errorf("%d flows, the programs sent %d samples", got, sent)
			}
		})
	}
}

func TestDrops(t *testing.T) {
	bpftest.RequireRoot(t)
	p := bpftest.NewPair(t)
	r := startSource(t, ifaceYAML(p, "aggregation: connection"))

	// A datagram from the peer to a closed port on the host: the host's
	// UDP stack drops it (NO_SOCKET) after answering port-unreachable.
	var srcPort int
	if err := p.InNS(func() error {
		c, err := net.DialUDP("udp4", nil, &net.UDPAddr{IP: p.HostIP, Port: 9})
		if err != nil {
			return err
		}
		defer c.Close()
		srcPort = c.LocalAddr().(*net.UDPAddr).Port
		_, err = c.Write([]byte("to a closed port"))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	f := r.out.waitFlow(t, "NO_SOCKET drop", func(f *flowpb.Flow) bool {
		return f.Verdict == flowpb.Verdict_DROPPED && is(f, p.PeerIP, p.HostIP)
	})
	if got := KernelDropReason(f); got != "NO_SOCKET" {
		t.Errorf("kernel drop reason %q, want NO_SOCKET", got)
	}
	if f.DropReasonDesc != flowpb.DropReason_DROP_REASON_UNKNOWN || f.DropReason != bpf.DropReasonUnknown ||
		f.GetEventType().GetType() != 1 || f.GetEventType().GetSubType() != bpf.DropReasonUnknown {
		t.Errorf("drop_reason %d drop_reason_desc %v event_type %v, want %d DROP_REASON_UNKNOWN {1,%d}", f.DropReason, f.DropReasonDesc, f.EventType, bpf.DropReasonUnknown, bpf.DropReasonUnknown)
	}
	if u := f.GetL4().GetUDP(); u.GetSourcePort() != uint32(srcPort) || u.GetDestinationPort() != 9 {
		t.Errorf("l4 %v, want UDP %d > 9", f.L4, srcPort)
	}
	if f.TrafficDirection != flowpb.TrafficDirection_INGRESS {
		t.Errorf("traffic_direction %v of a drop on arrival, want INGRESS", f.TrafficDirection)
	}
	if f.GetInterface().GetName() != p.Host || f.NodeName != "test-node" {
		t.Errorf("interface %v node %q", f.Interface, f.NodeName)
	}

	// The same over IPv6.
	if err := p.InNS(func() error {
		c, err := net.DialUDP("udp6", nil, &net.UDPAddr{IP: p.HostIP6, Port: 9})
		if err != nil {
			return err
		}
		defer c.Close()
		_, err = c.Write([]byte("to a closed port"))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	f = r.out.waitFlow(t, "IPv6 NO_SOCKET drop", func(f *flowpb.Flow) bool {
		return f.Verdict == flowpb.Verdict_DROPPED && is(f, p.PeerIP6, p.HostIP6)
	})
	if got := KernelDropReason(f); got != "NO_SOCKET" || f.GetL4().GetUDP().GetDestinationPort() != 9 || f.IP.IpVersion != flowpb.IPVersion_IPv6 {
		t.Errorf("IPv6 drop: kernel reason %q, l4 %v, version %v", got, f.L4, f.IP.IpVersion)
	}

	// A datagram whose source the host's strict reverse-path filter
	// rejects is dropped as IP_RPFILTER, which Cilium calls
	// INVALID_SOURCE_IP.
	spoofed := sendSpoofed(t, p)
	f = r.out.waitFlow(t, "IP_RPFILTER drop", func(f *flowpb.Flow) bool {
		return f.Verdict == flowpb.Verdict_DROPPED && is(f, spoofed, p.HostIP)
	})
	if got := KernelDropReason(f); got != "IP_RPFILTER" {
		t.Errorf("kernel drop reason %q, want IP_RPFILTER", got)
	}
	if f.DropReasonDesc != flowpb.DropReason_INVALID_SOURCE_IP || f.DropReason != 132 || f.GetEventType().GetSubType() != 132 {
		t.Errorf("drop_reason_desc %v (%d), event_type %v, want INVALID_SOURCE_IP", f.DropReasonDesc, f.DropReason, f.EventType)
	}
}

func TestStopDetaches(t *testing.T) {
	bpftest.RequireRoot(t)
	for _, hook := range hooks {
		t.Run(hook, func(t *testing.T) { testStopDetaches(t, hook) })
	}
}

func testStopDetaches(t *testing.T, hook string) {
	p := bpftest.NewPair(t)
	r := startSource(t, ifaceYAML(p, "hook: "+hook))
	r.src.mu.Lock()
	ids := r.src.objs.ProgramIDs()
	tracepoints := len(r.src.tpLinks)
	r.src.mu.Unlock()
	if len(ids) != 3 {
		t.Fatalf("%d programs loaded, want 3", len(ids))
	}
	wantTCX, wantTP := 2, 0
	if hook == "tracepoint" {
		wantTCX, wantTP = 0, 2
	}
	if n := tcxCount(t, p.HostIndex); n != wantTCX || tracepoints != wantTP {
		t.Fatalf("%d tcx links on %s and %d tracepoint links while running, want %d and %d", n, p.Host, tracepoints, wantTCX, wantTP)
	}
	r.stop()
	if n := tcxCount(t, p.HostIndex); n != 0 {
		t.Errorf("%d tcx links on %s after stop", n, p.Host)
	}
	// Every program is gone from the kernel, the drop tracepoint included
	// (a tracing program is freed after an RCU grace period).
	deadline := time.Now().Add(5 * time.Second)
	for _, id := range ids {
		for {
			prog, err := ciliumebpf.NewProgramFromID(id)
			if err != nil {
				break
			}
			prog.Close()
			if time.Now().After(deadline) {
				t.Errorf("program %d still loaded 5s after stop", id)
				break
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	if err := r.src.Ready(); err == nil {
		t.Error("Ready after stop")
	}
}

// TestCrashLeavesNothing kills a process running the source with SIGKILL
// and checks that the kernel detached everything.
func TestCrashLeavesNothing(t *testing.T) {
	bpftest.RequireRoot(t)
	p := bpftest.NewPair(t)
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), "FLOWBUS_EBPF_HELPER="+p.Host)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 6)
	if _, err := io.ReadFull(stdout, buf); err != nil || string(buf) != "ready\n" {
		cmd.Process.Kill()
		t.Fatalf("helper: %q %v", buf, err)
	}
	if n := tcxCount(t, p.HostIndex); n != 2 {
		t.Errorf("%d tcx links while the helper runs, want 2", n)
	}
	cmd.Process.Kill()
	cmd.Wait()
	// Link release after exit is synchronous with the process's files
	// being closed, but allow for the kernel's deferred work.
	deadline := time.Now().Add(5 * time.Second)
	for tcxCount(t, p.HostIndex) != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("tcx links left on %s after SIGKILL", p.Host)
		}
		time.Sleep(10 * time.Millisecond)
	}
	// A new source attaches cleanly after the crash.
	r := startSource(t, ifaceYAML(p))
	if n := tcxCount(t, p.HostIndex); n != 2 {
		t.Errorf("%d tcx links after restart, want 2", n)
	}
	r.stop()
}

// TestMain doubles as the process TestCrashLeavesNothing kills: with
// FLOWBUS_EBPF_HELPER set to an interface, it runs the source there until
// killed.
func TestMain(m *testing.M) {
	if iface := os.Getenv("FLOWBUS_EBPF_HELPER"); iface != "" {
		os.Exit(helperProcess(iface))
	}
	os.Exit(m.Run())
}

func helperProcess(iface string) int {
	var node yaml.Node
	if err := yaml.Unmarshal([]byte("interfaces: ["+iface+"]\n"), &node); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	s, err := pipeline.Make(&pipeline.Build{Name: "helper", Type: "ebpf", NodeName: "helper"}, node.Content[0], New)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	if err := s.Start(context.Background()); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	os.Stdout.WriteString("ready\n")
	s.Run(context.Background(), newCollector()) // until SIGKILL
	return 0
}

func TestRecord(t *testing.T) {
	bpftest.RequireRoot(t)
	p := bpftest.NewPair(t)
	path := filepath.Join(t.TempDir(), "monitor.gob")
	r := startSource(t, ifaceYAML(p, "aggregation: none", "drops: false", "record: "+path))
	if err := bpftest.Ping(p.PeerIP, 3); err != nil {
		t.Fatal(err)
	}
	replies := 0
	r.out.waitFlow(t, "third echo reply", func(f *flowpb.Flow) bool {
		if f.GetL4().GetICMPv4() != nil && f.L4.GetICMPv4().Type == 0 {
			replies++
		}
		return replies == 3
	})
	r.stop()

	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	rd := monitor.NewReader(bytes.NewReader(data))
	var d datapath.Decoder
	samples, echo := 0, 0
	for {
		var pl monitor.Payload
		if err := rd.Next(&pl); err != nil {
			if errors.Is(err, io.EOF) {
				break
			}
			t.Fatal(err)
		}
		if pl.Type != monitor.PayloadSample {
			continue
		}
		samples++
		var f flowpb.Flow
		if err := d.Decode(pl.Data, &f); err != nil {
			t.Fatalf("recorded sample %d: %v", samples, err)
		}
		if f.GetL4().GetICMPv4() != nil {
			echo++
		}
	}
	if samples != r.out.count(func(*flowpb.Flow) bool { return true }) || echo < 6 {
		t.Errorf("recorded %d samples (%d ICMP), emitted %d flows", samples, echo, r.out.count(func(*flowpb.Flow) bool { return true }))
	}
}

func tcxCount(t *testing.T, ifindex int) int {
	t.Helper()
	n := 0
	it := new(link.Iterator)
	defer it.Close()
	for it.Next() {
		info, err := it.Link.Info()
		it.Link.Close()
		if err != nil {
			continue
		}
		if tcx := info.TCX(); tcx != nil && int(tcx.Ifindex) == ifindex {
			n++
		}
	}
	if err := it.Err(); err != nil {
		t.Fatal(err)
	}
	return n
}

// TestL3Device attaches to a tun device, which has no Ethernet header:
// packets start at the IP header.
func TestL3Device(t *testing.T) {
	bpftest.RequireRoot(t)
	for _, hook := range hooks {
		t.Run(hook, func(t *testing.T) { testL3Device(t, hook) })
	}
}

func testL3Device(t *testing.T, hook string) {
	p := bpftest.NewPair(t) // for unique names and addresses
	tun := "fbt" + p.Host[3:]
	t.Cleanup(func() { exec.Command("ip", "link", "del", tun).Run() })
	subnet := fmt.Sprintf("10.%d.%d", p.HostIP[1]^0x20, p.HostIP[2])
	for _, args := range [][]string{
		{"ip", "tuntap", "add", "dev", tun, "mode", "tun"},
		{"ip", "addr", "add", subnet + ".1/24", "dev", tun},
		{"ip", "link", "set", tun, "up"},
	} {
		if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
			t.Fatalf("%v: %v %s", args, err, out)
		}
	}
	// A reader on the device gives it a carrier, so that its packets get
	// past the qdisc to the driver (where the tracepoint sees them).
	fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq(tun)
	if err != nil {
		t.Fatal(err)
	}
	ifr.SetUint16(unix.IFF_TUN | unix.IFF_NO_PI)
	if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
		t.Fatalf("attach to %s: %v", tun, err)
	}
	r := startSource(t, "interfaces: ["+tun+"]\ndirection: egress\naggregation: none\ndrops: false\nhook: "+hook+"\n")
	dst := net.ParseIP(subnet + ".2").To4()
	uc, err := net.DialUDP("udp4", nil, &net.UDPAddr{IP: dst, Port: 5353})
	if err != nil {
		t.Fatal(err)
	}
	defer uc.Close()
	uc.Write([]byte("over tun"))
	f := r.out.waitFlow(t, "UDP over tun", func(f *flowpb.Flow) bool {
		return f.GetIP().GetDestination() == dst.String() && f.GetL4().GetUDP().GetDestinationPort() == 5353
	})
	if f.Ethernet != nil || f.GetInterface().GetName() != tun || f.TraceObservationPoint != flowpb.TraceObservationPoint_TO_NETWORK {
		t.Errorf("flow on tun: ethernet %v interface %v obs %v", f.Ethernet, f.Interface, f.TraceObservationPoint)
	}
}

// TestSCTP sends a hand-made SCTP INIT through a raw socket.
func TestSCTP(t *testing.T) {
	bpftest.RequireRoot(t)
	p := bpftest.NewPair(t)
	r := startSource(t, ifaceYAML(p, "direction: egress", "aggregation: connection", "drops: false"))
	c, err := net.ListenPacket("ip4:132", p.HostIP.String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	pkt := []byte{
		0x30, 0x39, 0x0b, 0x59, // ports 12345 > 2905
		0, 0, 0, 0, // verification tag
		0, 0, 0, 0, // checksum (not checked by anyone here)
		1, 0, 0, 20, // INIT chunk, length 20
		0, 0, 0, 1, 0, 0, 0x10, 0, 0, 1, 0, 1, 0, 0, 0, 1,
	}
	if _, err := c.WriteTo(pkt, &net.IPAddr{IP: p.PeerIP}); err != nil {
		t.Fatal(err)
	}
	f := r.out.waitFlow(t, "SCTP INIT", func(f *flowpb.Flow) bool {
		return is(f, p.HostIP, p.PeerIP) && f.GetL4().GetSCTP() != nil
	})
	s := f.L4.GetSCTP()
	if s.SourcePort != 12345 || s.DestinationPort != 2905 || s.ChunkType != flowpb.SCTPChunkType_INIT {
		t.Errorf("SCTP %v, want 12345 > 2905 INIT", s)
	}
}

// TestInterfacesAll checks that `interfaces: all` attaches to interfaces
// that come up after the start, forgets those that go away, and detaches
// from all of them at stop.
//
// `all` would attach to every interface of the test's namespace, including
// those of tests running in parallel in other packages; so the test runs
// again in a child process inside a namespace of its own.
func TestInterfacesAll(t *testing.T) {
	bpftest.RequireRoot(t)
	if os.Getenv("FLOWBUS_EBPF_ISOLATED") == "" {
		ns := bpftest.NewPair(t).NS // a fresh namespace to run in
		cmd := exec.Command("ip", "netns", "exec", ns, os.Args[0], "-test.run=^TestInterfacesAll$", "-test.v", "-test.count=1")
		cmd.Env = append(os.Environ(), "FLOWBUS_EBPF_ISOLATED=1")
		out, err := cmd.CombinedOutput()
		if err != nil || !bytes.Contains(out, []byte("--- PASS: TestInterfacesAll")) {
			t.Fatalf("isolated run: %v\n%s", err, out)
		}
		return
	}
	// Only the kernel's link events can make the source see new
	// interfaces in time.
	defer func(d time.Duration) { rescanInterval = d }(rescanInterval)
	rescanInterval = time.Hour
	before := bpftest.NewPair(t)
	r := startSource(t, "interfaces: all\naggregation: none\ndrops: false\n")
	if n := tcxCount(t, before.HostIndex); n != 2 {
		t.Fatalf("%d tcx links on %s, an interface up at start", n, before.Host)
	}
	after := bpftest.NewPair(t)
	deadline := time.Now().Add(10 * time.Second)
	for tcxCount(t, after.HostIndex) != 2 {
		if time.Now().After(deadline) {
			t.Fatalf("no tcx links on %s, which came up after the start", after.Host)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := bpftest.Ping(after.PeerIP, 1); err != nil {
		t.Fatal(err)
	}
	f := r.out.waitFlow(t, "echo reply on the new interface", func(f *flowpb.Flow) bool {
		return is(f, after.PeerIP, after.HostIP) && f.GetL4().GetICMPv4() != nil
	})
	if f.GetInterface().GetName() != after.Host {
		t.Errorf("interface %v, want %s", f.Interface, after.Host)
	}

	// The interface goes away: the source forgets it.
	if out, err := exec.Command("ip", "link", "del", after.Host).CombinedOutput(); err != nil {
		t.Fatalf("ip link del: %v %s", err, out)
	}
	for {
		r.src.mu.Lock()
		_, still := r.src.attached[after.HostIndex]
		r.src.mu.Unlock()
		if !still {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s still in the attached set after it was deleted", after.Host)
		}
		time.Sleep(10 * time.Millisecond)
	}
	r.stop()
	if n := tcxCount(t, before.HostIndex); n != 0 {
		t.Errorf("%d tcx links on %s after stop", n, before.Host)
	}
}

// At the smallest capture_length, the handshake of an IPv6 TCP connection
// (whose SYN and SYN-ACK carry options) is still reported in full.
func TestHandshakeAtMinimumCapture(t *testing.T) {
	bpftest.RequireRoot(t)
	p := bpftest.NewPair(t)
	r := startSource(t, ifaceYAML(p, "aggregation: none", "drops: false", fmt.Sprintf("capture_length: %d", bpf.MinCaptureLength)))
	tcp := listenTCP(t, p, p.PeerIP6)
	conn, err := net.DialTCP("tcp", nil, tcp)
	if err != nil {
		t.Fatal(err)
	}
	local := conn.LocalAddr().(*net.TCPAddr)
	conn.Close()
	ours := func(syn, ack bool) func(*flowpb.Flow) bool {
		return func(f *flowpb.Flow) bool {
			tc := f.GetL4().GetTCP()
			return (tc.GetSourcePort() == uint32(local.Port) || tc.GetDestinationPort() == uint32(local.Port)) &&
				tc.GetFlags().GetSYN() == syn && tc.GetFlags().GetACK() == ack
		}
	}
	r.out.waitFlow(t, "SYN", ours(true, false))
	r.out.waitFlow(t, "SYN-ACK", ours(true, true))
	r.stop()
	if _, _, n := readMetric(t, r.src.m.malformed); n != 0 {
		t.Errorf("%v malformed samples", n)
	}
}

// A named interface that does not exist at start is waited for: the
// source starts, says it waits (not ready), and attaches as soon as the
// interface appears.
func TestNamedInterfaceWaited(t *testing.T) {
	bpftest.RequireRoot(t)
	defer func(d time.Duration) { rescanInterval = d }(rescanInterval)
	rescanInterval = time.Hour
	p := bpftest.PlanPair()
	r := startSource(t, ifaceYAML(p, "aggregation: none", "drops: false"))
	if err := r.src.Ready(); err == nil || !strings.Contains(err.Error(), "waiting for interface "+p.Host+" to exist") {
		t.Fatalf("Ready before the interface exists: %v", err)
	}
	p.Create(t)
	deadline := time.Now().Add(10 * time.Second)
	for r.src.Ready() != nil {
		if time.Now().After(deadline) {
			t.Fatalf("Ready after the interface appeared: %v", r.src.Ready())
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := bpftest.Ping(p.PeerIP, 1); err != nil {
		t.Fatal(err)
	}
	f := r.out.waitFlow(t, "echo reply on the new interface", func(f *flowpb.Flow) bool {
		return is(f, p.PeerIP, p.HostIP) && f.GetL4().GetICMPv4() != nil
	})
	if f.GetInterface().GetName() != p.Host {
		t.Errorf("interface %v, want %s", f.Interface, p.Host)
	}
}
