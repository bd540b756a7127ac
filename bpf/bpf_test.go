//go:build linux

package bpf

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"
	"github.com/cilium/ebpf/perf"
	"github.com/cilium/ebpf/rlimit"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/flowbus/flowbus/bpf/bpftest"
)

// attached loads the programs with cfg and attaches them to both
// directions of the pair's host interface.
func attached(t *testing.T, p *bpftest.Pair, cfg Config) (*Objects, *perf.Reader) {
	t.Helper()
	if err := rlimit.RemoveMemlock(); err != nil {
		t.Fatal(err)
	}
	o, err := Load(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { o.Close() })
	for _, d := range []Direction{Ingress, Egress} {
		l, err := o.AttachTC(p.HostIndex, d)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { l.Close() })
	}
	if cfg.Drops {
		inum, err := NetnsInode("/proc/self/ns/net")
		if err != nil {
			t.Fatal(err)
		}
		if err := o.WatchNetns(inum); err != nil {
			t.Fatal(err)
		}
		names, err := KernelDropReasons()
		if err != nil {
			t.Fatal(err)
		}
		if err := o.SetDropReasons(DropReasonConfig(names)); err != nil {
			t.Fatal(err)
		}
		l, err := o.AttachDrops()
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { l.Close() })
	}
	rd, err := perf.NewReader(o.Events(), 64*os.Getpagesize())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rd.Close() })
	return o, rd
}

// waitSample reads samples until match accepts one.
func waitSample(t *testing.T, rd *perf.Reader, match func([]byte) bool) []byte {
	t.Helper()
	rd.SetDeadline(time.Now().Add(5 * time.Second))
	for {
		rec, err := rd.Read()
		if err != nil {
			t.Fatalf("no matching sample: %v", err)
		}
		if rec.LostSamples == 0 && match(rec.RawSample) {
			return rec.RawSample
		}
	}
}

func TestTraceSampleLayout(t *testing.T) {
	bpftest.RequireRoot(t)
	p := bpftest.NewPair(t)
	_, rd := attached(t, p, Config{CaptureLength: 128})

	if err := bpftest.Ping(p.PeerIP, 1); err != nil {
		t.Fatal(err)
	}
	isICMP := func(obs byte, src, dst net.IP) func([]byte) bool {
		return func(s []byte) bool {
			return len(s) >= TraceHeaderLen+34 && s[0] == 4 && s[1] == obs &&
				s[TraceHeaderLen+23] == 1 && // IPv4 protocol ICMP
				bytes.Equal(s[TraceHeaderLen+26:TraceHeaderLen+30], src) &&
				bytes.Equal(s[TraceHeaderLen+30:TraceHeaderLen+34], dst)
		}
	}
	for _, c := range []struct {
		name     string
		obs      byte
		src, dst net.IP
		reason   byte // the echo's direction: CT_NEW (0) or CT_REPLY (2)
	}{
		{"egress request", 11, p.HostIP, p.PeerIP, 0},
		{"ingress reply", 10, p.PeerIP, p.HostIP, 2},
	} {
		s := waitSample(t, rd, isICMP(c.obs, c.src, c.dst))
		ne := binary.NativeEndian
		origLen := ne.Uint32(s[8:12])
		capLen := ne.Uint16(s[12:14])
		if s[14] != 1 || s[15] != 0 {
			t.Errorf("%s: version %d/%d, want 1/0", c.name, s[14], s[15])
		}
		if origLen != 14+20+8+4 || int(capLen) != int(origLen) {
			t.Errorf("%s: len_orig %d len_cap %d, want 46/46", c.name, origLen, capLen)
		}
		if got := ne.Uint32(s[28:32]); got != uint32(p.HostIndex) {
			t.Errorf("%s: ifindex %d, want %d", c.name, got, p.HostIndex)
		}
		if s[26] != c.reason || s[27] != 0 {
			t.Errorf("%s: reason %d flags %d, want %d and 0", c.name, s[26], s[27], c.reason)
		}
		if len(s) < TraceHeaderLen+int(capLen) {
			t.Errorf("%s: sample %d bytes, header says %d captured", c.name, len(s), capLen)
		}
	}
}

func TestDropSampleLayout(t *testing.T) {
	bpftest.RequireRoot(t)
	p := bpftest.NewPair(t)
	_, rd := attached(t, p, Config{CaptureLength: 128, Drops: true})
	names, err := KernelDropReasons()
	if err != nil {
		t.Fatal(err)
	}
	noSocket := uint16(0)
	for v, n := range names {
		if n == "NO_SOCKET" {
			noSocket = uint16(v)
		}
	}

	// A UDP datagram from the peer to a closed port on the host is dropped
	// by the host's stack (reason NO_SOCKET) after an ICMP unreachable.
	if err := p.InNS(func() error {
		c, err := net.DialUDP("udp4", nil, &net.UDPAddr{IP: p.HostIP, Port: 9})
		if err != nil {
			return err
		}
		defer c.Close()
		_, err = c.Write([]byte("dropped"))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	s := waitSample(t, rd, func(s []byte) bool {
		return s[0] == 1 && len(s) >= DropHeaderLen+14+20 &&
			bytes.Equal(s[DropHeaderLen+14+12:DropHeaderLen+14+16], p.PeerIP)
	})
	ne := binary.NativeEndian
	if s[14] != 2 {
		t.Errorf("version %d, want 2", s[14])
	}
	if got := ne.Uint16(s[28:30]); got != noSocket {
		t.Errorf("line (kernel reason) %d, want NO_SOCKET %d", got, noSocket)
	}
	if s[1] != DropReasonUnknown {
		t.Errorf("subtype %d, want %d (no Cilium equivalent)", s[1], DropReasonUnknown)
	}
	if got := ne.Uint32(s[32:36]); got != uint32(p.HostIndex) {
		t.Errorf("ifindex %d, want %d", got, p.HostIndex)
	}
	if s[36] != 0 {
		t.Errorf("flags %#x, want 0 (Ethernet)", s[36])
	}
	if origLen, capLen := ne.Uint32(s[8:12]), ne.Uint16(s[12:14]); origLen != 14+20+8+7 || capLen != uint16(origLen) {
		t.Errorf("len_orig %d len_cap %d, want 49/49", origLen, capLen)
	}
	if !bytes.Equal(s[DropHeaderLen+6:DropHeaderLen+12], p.PeerMAC) {
		t.Errorf("source MAC % x, want %s", s[DropHeaderLen+6:DropHeaderLen+12], p.PeerMAC)
	}
}

func TestAttachDetach(t *testing.T) {
	bpftest.RequireRoot(t)
	p := bpftest.NewPair(t)
	o, err := Load(Config{CaptureLength: MinCaptureLength})
	if err != nil {
		t.Fatal(err)
	}
	defer o.Close()
	var links []io.Closer
	for _, d := range []Direction{Ingress, Egress} {
		l, err := o.AttachTC(p.HostIndex, d)
		if err != nil {
			t.Fatal(err)
		}
		links = append(links, l)
	}
	if n := countTCX(t, p.HostIndex); n != 2 {
		t.Fatalf("%d tcx programs attached, want 2", n)
	}
	for _, l := range links {
		l.Close()
	}
	if n := countTCX(t, p.HostIndex); n != 0 {
		t.Fatalf("%d tcx programs still attached after Close", n)
	}
}

func countTCX(t *testing.T, ifindex int) int {
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
	if err := it.Err(); err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
	return n
}

// tcFilters lists the cls_bpf filter lines tc shows in direction d.
func tcFilters(t *testing.T, dev string, d Direction) []string {
	t.Helper()
	out, err := exec.Command("tc", "filter", "show", "dev", dev, d.String()).CombinedOutput()
	if err != nil {
		t.Fatalf("tc filter show: %v: %s", err, out)
	}
	var lines []string
	for _, l := range strings.Split(string(out), "\n") {
		if strings.Contains(l, "flowbus_trace_") {
			lines = append(lines, l)
		}
	}
	return lines
}

func TestClsactFallback(t *testing.T) {
	bpftest.RequireRoot(t)
	if _, err := exec.LookPath("tc"); err != nil {
		t.Fatal("tc (iproute2) is needed to inspect clsact filters")
	}
	p := bpftest.NewPair(t)
	o, err := Load(Config{CaptureLength: 128})
	if err != nil {
		t.Fatal(err)
	}
	defer o.Close()
	attach := func() []io.Closer {
		var cs []io.Closer
		for _, d := range []Direction{Ingress, Egress} {
			c, err := o.AttachTCMode(p.HostIndex, d, AttachClsact)
			if err != nil {
				t.Fatal(err)
			}
			cs = append(cs, c)
		}
		return cs
	}
	attach() // a "crashed" run: never closed
	filters := attach()
	for _, d := range []Direction{Ingress, Egress} {
		if got := tcFilters(t, p.Host, d); len(got) != 1 || !strings.Contains(got[0], "flowbus_trace_"+d.String()) || !strings.Contains(got[0], "direct-action") {
			t.Errorf("%s filters after re-attach: %q, want one direct-action flowbus filter", d, got)
		}
	}

	rd, err := perf.NewReader(o.Events(), 16*os.Getpagesize())
	if err != nil {
		t.Fatal(err)
	}
	defer rd.Close()
	if err := bpftest.Ping(p.PeerIP, 1); err != nil {
		t.Fatal(err)
	}
	for _, obs := range []byte{11, 10} {
		waitSample(t, rd, func(s []byte) bool {
			return s[0] == 4 && s[1] == obs && len(s) > TraceHeaderLen+23 && s[TraceHeaderLen+23] == 1
		})
	}

	for _, f := range filters {
		if err := f.Close(); err != nil {
			t.Fatal(err)
		}
	}
	for _, d := range []Direction{Ingress, Egress} {
		if got := tcFilters(t, p.Host, d); len(got) != 0 {
			t.Errorf("%s filters after Close: %q", d, got)
		}
	}
}

// A classifier flowbus cannot join holds priority 1 (a cls_bpf filter for
// IPv4 only, passing every packet and so ending the chain; flowbus's
// filter is for every protocol): flowbus's filter goes after it, and the
// attachment says that it is not ahead and why.
func TestClsactBehindForeignClassifier(t *testing.T) {
	bpftest.RequireRoot(t)
	p := bpftest.NewPair(t)
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Name: "ipv4_only", Type: ebpf.SchedCLS, License: "GPL",
		Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, 0), asm.Return()},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer prog.Close()
	q := &netlink.GenericQdisc{
		QdiscAttrs: netlink.QdiscAttrs{LinkIndex: p.HostIndex, Handle: netlink.MakeHandle(0xffff, 0), Parent: netlink.HANDLE_CLSACT},
		QdiscType:  "clsact",
	}
	if err := netlink.QdiscAdd(q); err != nil {
		t.Fatal(err)
	}
	if err := netlink.FilterAdd(&netlink.BpfFilter{
		FilterAttrs: netlink.FilterAttrs{LinkIndex: p.HostIndex, Parent: netlink.HANDLE_MIN_INGRESS, Handle: 1, Priority: 1, Protocol: unix.ETH_P_IP},
		Fd:          prog.FD(), Name: "ipv4_only", DirectAction: true,
	}); err != nil {
		t.Fatal(err)
	}
	o, err := Load(Config{CaptureLength: 128})
	if err != nil {
		t.Fatal(err)
	}
	defer o.Close()
	a, err := o.AttachTCMode(p.HostIndex, Ingress, AttachClsact)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	if a.Ahead || len(a.Others) != 1 || a.Others[0] != "clsact pref 1 bpf ipv4_only" {
		t.Errorf("ahead %v others %q, want behind [clsact pref 1 bpf ipv4_only]", a.Ahead, a.Others)
	}
	if got := tcFilters(t, p.Host, Ingress); len(got) != 1 || !strings.Contains(got[0], "pref 2 ") {
		t.Errorf("flowbus filters %q, want one at pref 2", got)
	}
}

// The tracepoint programs read packets from kernel memory and capture
// only the linear part of a packet: a TCP bulk transfer's large segments
// keep most of their bytes in pages, and their samples' len_cap says how
// many bytes the sample carries.
func TestTracepointCapturesLinearPart(t *testing.T) {
	bpftest.RequireRoot(t)
	p := bpftest.NewPair(t)
	if err := rlimit.RemoveMemlock(); err != nil {
		t.Fatal(err)
	}
	o, err := Load(Config{CaptureLength: 256, Hook: HookTracepoint})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { o.Close() })
	inum, err := NetnsInode("/proc/self/ns/net")
	if err != nil {
		t.Fatal(err)
	}
	if err := o.WatchNetns(inum); err != nil {
		t.Fatal(err)
	}
	if err := o.SetInterface(p.HostIndex, false); err != nil {
		t.Fatal(err)
	}
	if _, err := o.WatchInterface(p.HostIndex, Egress); err != nil {
		t.Fatal(err)
	}
	rd, err := perf.NewReader(o.Events(), 256*os.Getpagesize())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rd.Close() })
	links, err := o.AttachTracepoints([]Direction{Egress})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		for _, l := range links {
			l.Close()
		}
	})

	var ln net.Listener
	if err := p.InNS(func() (err error) {
		ln, err = net.Listen("tcp", net.JoinHostPort(p.PeerIP.String(), "0"))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		io.Copy(io.Discard, c)
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	block := make([]byte, 256<<10)
	for range 8 {
		if _, err := c.Write(block); err != nil {
			t.Fatal(err)
		}
	}
	c.Close()

	ne := binary.NativeEndian
	var samples, short int
	rd.SetDeadline(time.Now().Add(2 * time.Second))
	for {
		rec, err := rd.Read()
		if errors.Is(err, os.ErrDeadlineExceeded) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		s := rec.RawSample
		if rec.LostSamples > 0 || len(s) < TraceHeaderLen || s[0] != 4 {
			continue
		}
		samples++
		origLen, capLen := ne.Uint32(s[8:12]), int(ne.Uint16(s[12:14]))
		if len(s) < TraceHeaderLen+capLen {
			t.Errorf("sample of %d bytes says %d captured (len_orig %d)", len(s), capLen, origLen)
			break
		}
		if capLen < 256 && int(origLen) > capLen {
			short++ // a packet whose linear part is shorter than the capture
		}
	}
	if samples == 0 {
		t.Fatal("no sample")
	}
	t.Logf("%d samples, %d captured their linear part only", samples, short)
}
