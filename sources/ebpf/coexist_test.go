//go:build linux

package ebpf

import (
	"net"
	"os/exec"
	"strings"
	"testing"
	"time"

	ciliumebpf "github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/flowbus/flowbus/bpf"
	"github.com/flowbus/flowbus/bpf/bpftest"
	flowpb "github.com/flowbus/flowbus/flow"
)

// otherAgent loads a TC program named other_agent that returns ret for
// every packet: 0 (TC_ACT_OK, TCX_PASS) passes the packet and ends the
// chain, as a datapath like Cilium's does.
func otherAgent(t *testing.T, ret int32) *ciliumebpf.Program {
	t.Helper()
	prog, err := ciliumebpf.NewProgram(&ciliumebpf.ProgramSpec{
		Name:         "other_agent",
		Type:         ciliumebpf.SchedCLS,
		License:      "GPL",
		Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, ret), asm.Return()},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { prog.Close() })
	return prog
}

// attachOtherTCX attaches prog at the head of both tcx chains of the
// interface.
func attachOtherTCX(t *testing.T, ifindex int, prog *ciliumebpf.Program) []link.Link {
	t.Helper()
	var ls []link.Link
	for _, at := range []ciliumebpf.AttachType{ciliumebpf.AttachTCXIngress, ciliumebpf.AttachTCXEgress} {
		l, err := link.AttachTCX(link.TCXOptions{Interface: ifindex, Program: prog, Attach: at, Anchor: link.Head()})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { l.Close() })
		ls = append(ls, l)
	}
	return ls
}

// attachOtherClsact adds prog as a direct-action cls_bpf filter of
// priority prio on both clsact hooks of the interface.
func attachOtherClsact(t *testing.T, ifindex int, prog *ciliumebpf.Program, prio uint16) {
	t.Helper()
	q := &netlink.GenericQdisc{
		QdiscAttrs: netlink.QdiscAttrs{LinkIndex: ifindex, Handle: netlink.MakeHandle(0xffff, 0), Parent: netlink.HANDLE_CLSACT},
		QdiscType:  "clsact",
	}
	if err := netlink.QdiscAdd(q); err != nil && err != unix.EEXIST {
		t.Fatal(err)
	}
	for _, parent := range []uint32{netlink.HANDLE_MIN_INGRESS, netlink.HANDLE_MIN_EGRESS} {
		f := &netlink.BpfFilter{
			FilterAttrs:  netlink.FilterAttrs{LinkIndex: ifindex, Parent: parent, Handle: 1, Priority: prio, Protocol: unix.ETH_P_ALL},
			Fd:           prog.FD(),
			Name:         "other_agent",
			DirectAction: true,
		}
		if err := netlink.FilterAdd(f); err != nil {
			t.Fatal(err)
		}
	}
}

// checkSeesEverything sends TCP, UDP and ICMP traffic through the pair and
// checks that the source reports every packet of it.
func checkSeesEverything(t *testing.T, p *bpftest.Pair, r *running) {
	t.Helper()
	tcp := listenTCP(t, p, p.PeerIP)
	udp := listenUDP(t, p, p.PeerIP6)
	conn, err := net.DialTCP("tcp", nil, tcp)
	if err != nil {
		t.Fatal(err)
	}
	local := conn.LocalAddr().(*net.TCPAddr)
	conn.Write([]byte("hello"))
	conn.Close()
	uc, err := net.DialUDP("udp", nil, udp)
	if err != nil {
		t.Fatal(err)
	}
	const datagrams = 5
	for range datagrams {
		uc.Write([]byte("datagram"))
	}
	uc.Close()
	const pings = 5
	if err := bpftest.Ping(p.PeerIP, pings); err != nil {
		t.Fatal(err)
	}
	r.out.waitFlow(t, "SYN", func(f *flowpb.Flow) bool {
		tc := f.GetL4().GetTCP()
		return tc.GetSourcePort() == uint32(local.Port) && tc.GetFlags().GetSYN() && !tc.GetFlags().GetACK()
	})
	r.out.waitFlow(t, "SYN-ACK", func(f *flowpb.Flow) bool {
		tc := f.GetL4().GetTCP()
		return tc.GetDestinationPort() == uint32(local.Port) && tc.GetFlags().GetSYN() && tc.GetFlags().GetACK()
	})
	r.out.waitFlow(t, "FIN", func(f *flowpb.Flow) bool {
		tc := f.GetL4().GetTCP()
		return tc.GetSourcePort() == uint32(local.Port) && tc.GetFlags().GetFIN()
	})
	r.stop() // drains every sample
	if n := r.out.count(func(f *flowpb.Flow) bool {
		return f.GetL4().GetUDP().GetDestinationPort() == uint32(udp.Port)
	}); n != datagrams {
		t.Errorf("%d UDP flows, want %d", n, datagrams)
	}
	for _, c := range []struct {
		name string
		typ  uint32
		src  net.IP
	}{{"echo requests", 8, p.HostIP}, {"echo replies", 0, p.PeerIP}} {
		if n := r.out.count(func(f *flowpb.Flow) bool {
			return f.GetL4().GetICMPv4() != nil && f.L4.GetICMPv4().Type == c.typ && f.GetIP().GetSource() == c.src.String()
		}); n != pings {
			t.Errorf("%d %s, want %d", n, c.name, pings)
		}
	}
}

// A node's datapath (a tcx program that passes every packet and so ends
// the chain) attached before flowbus: flowbus attaches at the head of the
// chain and sees every packet.
func TestCoexistTCX(t *testing.T) {
	bpftest.RequireRoot(t)
	p := bpftest.NewPair(t)
	attachOtherTCX(t, p.HostIndex, otherAgent(t, 0))
	r := startSource(t, ifaceYAML(p, "aggregation: none", "drops: false", "attach: tcx"))
	checkAttachment(t, r, "tcx")
	checkSeesEverything(t, p, r)
}

// The same with clsact filters that return TC_ACT_OK, at priority 1 (as
// Cilium's) or higher: flowbus's filter runs first.
func TestCoexistClsact(t *testing.T) {
	bpftest.RequireRoot(t)
	for _, prio := range []uint16{1, 10} {
		t.Run("pref "+string(rune('0'+prio/10))+string(rune('0'+prio%10)), func(t *testing.T) {
			p := bpftest.NewPair(t)
			attachOtherClsact(t, p.HostIndex, otherAgent(t, 0), prio)
			r := startSource(t, ifaceYAML(p, "aggregation: none", "drops: false", "attach: clsact"))
			checkAttachment(t, r, "clsact")
			checkSeesEverything(t, p, r)
		})
	}
}

// checkAttachment checks that the source's programs run ahead of the
// other agent's, which it knows about.
func checkAttachment(t *testing.T, r *running, mode string) {
	t.Helper()
	r.src.mu.Lock()
	defer r.src.mu.Unlock()
	for _, a := range r.src.attached {
		for i, l := range a.links {
			if l.Mode != mode || !l.Ahead || len(l.Others) != 1 || !strings.Contains(l.Others[0], "other_agent") {
				t.Errorf("%s %s: mode %s ahead %v others %q, want %s, ahead of other_agent", a.name, a.dirs[i], l.Mode, l.Ahead, l.Others, mode)
			}
		}
	}
}

// An agent that puts its chain-ending program ahead of flowbus's after
// flowbus started blinds it: the source says so in a warning, in /readyz
// and in its metrics, and recovers when the program goes.
func TestBlindIsReported(t *testing.T) {
	bpftest.RequireRoot(t)
	defer func(d time.Duration) { healthInterval = d }(healthInterval)
	healthInterval = 100 * time.Millisecond
	for _, mode := range []string{"tcx", "clsact"} {
		t.Run(mode, func(t *testing.T) {
			p := bpftest.NewPair(t)
			r := startSource(t, ifaceYAML(p, "aggregation: none", "drops: false", "attach: "+mode))
			if err := r.src.Ready(); err != nil {
				t.Fatalf("not ready at start: %v", err)
			}
			prog := otherAgent(t, 0)
			var links []link.Link
			if mode == "tcx" {
				links = attachOtherTCX(t, p.HostIndex, prog)
			} else {
				attachOtherClsact(t, p.HostIndex, prog, 1) // joins flowbus's priority, ahead of it
			}
			waitReady(t, p, r, func(err error) bool {
				return err != nil && strings.Contains(err.Error(), "interface "+p.Host+" ingress: packets pass but flowbus sees none") &&
					strings.Contains(err.Error(), "interface "+p.Host+" egress") && strings.Contains(err.Error(), "hook: tracepoint would see them")
			})
			if g := seesTraffic(t, r, p.Host, bpf.Ingress); g != 0 {
				t.Errorf("sees_traffic %v while blind, want 0", g)
			}
			if mode == "tcx" {
				for _, l := range links {
					l.Close()
				}
			} else {
				for _, parent := range []uint32{netlink.HANDLE_MIN_INGRESS, netlink.HANDLE_MIN_EGRESS} {
					if err := netlink.FilterDel(&netlink.BpfFilter{FilterAttrs: netlink.FilterAttrs{LinkIndex: p.HostIndex, Parent: parent, Handle: 1, Priority: 1, Protocol: unix.ETH_P_ALL}}); err != nil {
						t.Fatal(err)
					}
				}
			}
			waitReady(t, p, r, func(err error) bool { return err == nil })
			if g := seesTraffic(t, r, p.Host, bpf.Ingress); g != 1 {
				t.Errorf("sees_traffic %v after recovery, want 1", g)
			}
		})
	}
}

// waitReady pings through the pair until the source's Ready satisfies ok.
func waitReady(t *testing.T, p *bpftest.Pair, r *running, ok func(error) bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if err := bpftest.Ping(p.PeerIP, 1); err != nil {
			t.Fatal(err)
		}
		err := r.src.Ready()
		if ok(err) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("Ready: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// seesTraffic reads flowbus_ebpf_interface_sees_traffic.
func seesTraffic(t *testing.T, r *running, iface string, d bpf.Direction) float64 {
	t.Helper()
	ch := make(chan prometheusMetric, 64)
	go func() { interfaceMetrics{r.src}.Collect(ch); close(ch) }()
	v := -1.0
	for m := range ch {
		if desc, labels, val := readMetric(t, m); desc == ifaceSeesDesc.String() && labels["interface"] == iface && labels["direction"] == d.String() {
			v = val
		}
	}
	return v
}

type prometheusMetric = prometheus.Metric

// readMetric returns a metric's description, labels and value.
func readMetric(t *testing.T, m prometheus.Metric) (string, map[string]string, float64) {
	t.Helper()
	var pb dto.Metric
	if err := m.Write(&pb); err != nil {
		t.Fatal(err)
	}
	labels := map[string]string{}
	for _, l := range pb.GetLabel() {
		labels[l.GetName()] = l.GetValue()
	}
	v := pb.GetGauge().GetValue() + pb.GetCounter().GetValue()
	return m.Desc().String(), labels, v
}

// A datapath that drops what the host sends (a tcx egress program
// returning TC_ACT_SHOT): flowbus, at the head of the chain, still reports
// the packet on its way out, and then its drop, as an EGRESS drop. With
// hook: tracepoint, which sees packets after TC egress, only the drop.
func TestCoexistDroppingProgram(t *testing.T) {
	bpftest.RequireRoot(t)
	for _, hook := range hooks {
		t.Run(hook, func(t *testing.T) { testCoexistDropping(t, hook) })
	}
}

func testCoexistDropping(t *testing.T, hook string) {
	p := bpftest.NewPair(t)
	l, err := link.AttachTCX(link.TCXOptions{Interface: p.HostIndex, Program: otherAgent(t, 2), Attach: ciliumebpf.AttachTCXEgress, Anchor: link.Head()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	// No ARP either: the peer's address is resolved statically.
	if out, err := exec.Command("ip", "neigh", "replace", p.PeerIP.String(), "lladdr", p.PeerMAC.String(), "dev", p.Host, "nud", "permanent").CombinedOutput(); err != nil {
		t.Fatalf("ip neigh: %v %s", err, out)
	}
	r := startSource(t, ifaceYAML(p, "aggregation: none", "hook: "+hook))
	uc, err := net.DialUDP("udp4", nil, &net.UDPAddr{IP: p.PeerIP, Port: 9})
	if err != nil {
		t.Fatal(err)
	}
	defer uc.Close()
	port := uint32(uc.LocalAddr().(*net.UDPAddr).Port)
	uc.Write([]byte("dropped on its way out"))
	ours := func(f *flowpb.Flow) bool {
		return is(f, p.HostIP, p.PeerIP) && f.GetL4().GetUDP().GetSourcePort() == port
	}
	leaving := func(f *flowpb.Flow) bool {
		return ours(f) && f.Verdict == flowpb.Verdict_FORWARDED && f.TraceObservationPoint == flowpb.TraceObservationPoint_TO_NETWORK
	}
	if hook == "tc" {
		r.out.waitFlow(t, "the datagram leaving", leaving)
	}
	f := r.out.waitFlow(t, "its drop", func(f *flowpb.Flow) bool { return ours(f) && f.Verdict == flowpb.Verdict_DROPPED })
	if hook == "tracepoint" {
		r.stop()
		if n := r.out.count(leaving); n != 0 {
			t.Errorf("%d flows of the datagram leaving, want none: the tracepoint is after TC egress", n)
		}
	}
	if got := KernelDropReason(f); got != "TC_EGRESS" {
		t.Errorf("kernel drop reason %q, want TC_EGRESS", got)
	}
	if f.TrafficDirection != flowpb.TrafficDirection_EGRESS || f.DropReason == 0 {
		t.Errorf("traffic_direction %v drop_reason %d, want EGRESS and non-zero", f.TrafficDirection, f.DropReason)
	}
}

// With hook: tracepoint, no TC program can hide a packet from flowbus: a
// chain-ending tcx program and a clsact filter attached before flowbus
// starts, and another put at the head of the tcx chain after it started,
// and flowbus still sees every packet, stays ready, and samples only the
// interface it watches.
func TestTracepointHookIgnoresTC(t *testing.T) {
	bpftest.RequireRoot(t)
	for _, buffer := range []string{"ring", "perf"} {
		t.Run(buffer, func(t *testing.T) {
			p := bpftest.NewPair(t)
			prog := otherAgent(t, 0)
			attachOtherTCX(t, p.HostIndex, prog)
			attachOtherClsact(t, p.HostIndex, prog, 1)
			r := startSource(t, ifaceYAML(p, "aggregation: none", "drops: false", "hook: tracepoint", "event_buffer: "+buffer))
			attachOtherTCX(t, p.HostIndex, otherAgent(t, 0))
			if err := bpftest.Ping(p.PeerIP6, 2); err != nil { // IPv6: checkSeesEverything counts IPv4 echoes
				t.Fatal(err)
			}
			r.src.mu.Lock()
			r.src.checkHealthLocked()
			for _, a := range r.src.attached {
				for i, l := range a.links {
					if l.Mode != "tracepoint" || !l.Ahead || len(l.Others) != 0 {
						t.Errorf("%s %s: mode %s ahead %v others %q, want tracepoint, ahead, alone", a.name, a.dirs[i], l.Mode, l.Ahead, l.Others)
					}
				}
			}
			r.src.mu.Unlock()
			if err := r.src.Ready(); err != nil {
				t.Errorf("not ready: %v", err)
			}
			checkSeesEverything(t, p, r)
			if n := r.out.count(func(f *flowpb.Flow) bool {
				return f.GetInterface().GetIndex() != uint32(p.HostIndex) || f.GetInterface().GetName() != p.Host
			}); n != 0 {
				t.Errorf("%d flows of another interface than %s (index %d)", n, p.Host, p.HostIndex)
			}
		})
	}
}
