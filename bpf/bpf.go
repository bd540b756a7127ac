//go:build linux

package bpf

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/btf"
	"github.com/cilium/ebpf/features"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"
)

// Message layout facts shared with flowbus.c.
const (
	// TraceHeaderLen and DropHeaderLen are the lengths of the sample
	// headers the programs write (TraceNotify v1, DropNotify v2).
	TraceHeaderLen = 48
	DropHeaderLen  = 40
	// MaxCaptureLength is the largest capture length the programs accept
	// (drop samples copy at most this many bytes).
	MaxCaptureLength = 1536
	// MinCaptureLength is the smallest capture length that holds an
	// Ethernet header, an IPv6 header and a TCP header with the most
	// options (14 + 40 + 60): a shorter capture cuts the TCP header of
	// handshake packets (SYN and SYN-ACK carry options), whose flows could
	// then not be decoded.
	MinCaptureLength = 14 + 40 + 60
	// DropDirOffset is the offset in a drop sample of the byte (in Cilium's
	// padding) that says where the packet was dropped: DropDirIngress (it
	// had arrived on the device) or DropDirEgress (made on this host, or
	// forwarded, on its way out).
	DropDirOffset  = 37
	DropDirIngress = 1
	DropDirEgress  = 2
	// DropLineUnknown is the `line` a drop sample carries when the kernel's
	// reason does not fit in 16 bits (a subsystem reason).
	DropLineUnknown = 0xffff

	// Interface flags (iface_cfg.flags): the device has no Ethernet header.
	ifaceL3Dev = 1 << 1
	// Entries of the drop_reasons map.
	dropReasonEntries = 1024
)

// Counter indexes of the counters map (enum in flowbus.c).
const (
	CounterTraceSent = iota
	CounterTraceLost
	CounterTraceAggregated
	CounterDropSent
	CounterDropLost
	NumCounters
)

// Config is what the programs are loaded with.
type Config struct {
	// CaptureLength is the number of packet bytes after each header.
	CaptureLength uint32
	// Aggregate turns on connection aggregation with the given refresh
	// interval (0 means 5s).
	Aggregate           bool
	AggregationInterval time.Duration
	// Connections is the size of the aggregation LRU map (0 means 65536).
	Connections uint32
	// Drops loads the kfree_skb program.
	Drops bool
	// RingSize, when not 0, makes the programs write to one BPF ring buffer
	// of that many bytes (a power of two, a multiple of the page size),
	// shared by all CPUs, instead of the per-CPU perf event array. The
	// reader is woken once RingWakeupBytes wait (0: at every sample).
	RingSize        uint32
	RingWakeupBytes uint64
	// Hook selects where the trace programs run: HookTC (AttachTC) or
	// HookTracepoint (AttachTracepoints and WatchInterface).
	Hook Hook
}

// Hook is where the trace programs see packets.
type Hook int

const (
	// HookTC: TC programs on each interface (tcx, or clsact filters),
	// which must run ahead of other agents' programs to see every packet.
	HookTC Hook = iota
	// HookTracepoint: the BTF tracepoints net:netif_receive_skb and
	// net:net_dev_start_xmit, which see every packet of every device
	// whatever is attached to TC; the programs sample the packets of the
	// interfaces passed to WatchInterface, in the namespaces passed to
	// WatchNetns.
	HookTracepoint
)

func (h Hook) String() string {
	if h == HookTracepoint {
		return "tracepoint"
	}
	return "tc"
}

// HaveRingBuffer says whether the kernel has BPF ring buffers (Linux 5.8
// and later).
func HaveRingBuffer() bool {
	return features.HaveMapType(ebpf.RingBuf) == nil
}

// Objects are the loaded programs and maps.
type Objects struct {
	coll *ebpf.Collection
	objs struct {
		TraceIngress, TraceEgress, OnKfreeSkb *ebpf.Program
		TraceRx, TraceTx                      *ebpf.Program
		Events, Ring, Conns, Ifaces, Netns    *ebpf.Map
		DropReasons, Counters                 *ebpf.Map
	}
}

// Load loads the programs into the kernel with cfg. The caller must Close
// the result.
func Load(cfg Config) (*Objects, error) {
	if cfg.CaptureLength > MaxCaptureLength || cfg.CaptureLength < MinCaptureLength {
		return nil, fmt.Errorf("capture length %d outside %d..%d", cfg.CaptureLength, MinCaptureLength, MaxCaptureLength)
	}
	spec, err := loadFlowbus()
	if err != nil {
		return nil, err
	}
	interval := cfg.AggregationInterval
	if interval <= 0 {
		interval = 5 * time.Second
	}
	agg := uint32(0)
	if cfg.Aggregate {
		agg = 1
	}
	ring := uint32(0)
	if cfg.RingSize > 0 {
		ring = 1
		spec.Maps[flowbusMapRing].MaxEntries = cfg.RingSize
	} else {
		// Never written to (the code that would is dead, and the verifier
		// skips it), so kernels without ring buffers load the programs.
		spec.Maps[flowbusMapRing] = &ebpf.MapSpec{Name: "ring", Type: ebpf.Array, KeySize: 4, ValueSize: 4, MaxEntries: 1}
	}
	for name, v := range map[string]any{
		flowbusVarCaptureLen:            cfg.CaptureLength,
		flowbusVarAggregate:             agg,
		flowbusVarAggregationIntervalNs: uint64(interval),
		flowbusVarUseRingbuf:            ring,
		flowbusVarRingWakeupBytes:       cfg.RingWakeupBytes,
	} {
		if err := spec.Variables[name].Set(v); err != nil {
			return nil, fmt.Errorf("set %s: %w", name, err)
		}
	}
	if cfg.Connections > 0 {
		spec.Maps[flowbusMapConns].MaxEntries = cfg.Connections
	}
	if !cfg.Drops {
		delete(spec.Programs, flowbusProgOnKfreeSkb)
	}
	if cfg.Hook == HookTracepoint {
		delete(spec.Programs, flowbusProgTraceIngress)
		delete(spec.Programs, flowbusProgTraceEgress)
	} else {
		delete(spec.Programs, flowbusProgTraceRx)
		delete(spec.Programs, flowbusProgTraceTx)
	}
	coll, err := ebpf.NewCollection(spec)
	if err != nil {
		var ve *ebpf.VerifierError
		if errors.As(err, &ve) {
			return nil, fmt.Errorf("load BPF programs: %+v", ve)
		}
		return nil, fmt.Errorf("load BPF programs: %w", err)
	}
	o := &Objects{coll: coll}
	o.objs.TraceIngress = coll.Programs[flowbusProgTraceIngress]
	o.objs.TraceEgress = coll.Programs[flowbusProgTraceEgress]
	o.objs.OnKfreeSkb = coll.Programs[flowbusProgOnKfreeSkb]
	o.objs.TraceRx = coll.Programs[flowbusProgTraceRx]
	o.objs.TraceTx = coll.Programs[flowbusProgTraceTx]
	o.objs.Events = coll.Maps[flowbusMapEvents]
	if cfg.RingSize > 0 {
		o.objs.Ring = coll.Maps[flowbusMapRing]
	}
	o.objs.Conns = coll.Maps[flowbusMapConns]
	o.objs.Ifaces = coll.Maps[flowbusMapIfaces]
	o.objs.Netns = coll.Maps[flowbusMapNetns]
	o.objs.DropReasons = coll.Maps[flowbusMapDropReasons]
	o.objs.Counters = coll.Maps[flowbusMapCounters]
	return o, nil
}

// Close releases the programs and maps (links hold their own references).
func (o *Objects) Close() error {
	o.coll.Close()
	return nil
}

// Events is the perf event array the samples go to without a ring buffer.
func (o *Objects) Events() *ebpf.Map { return o.objs.Events }

// Ring is the ring buffer the samples go to, or nil (Config.RingSize 0).
func (o *Objects) Ring() *ebpf.Map { return o.objs.Ring }

// SetInterface records per-interface settings: l3 says that the device has
// no Ethernet header (tun, wireguard), so packets start at the IP header.
func (o *Objects) SetInterface(ifindex int, l3 bool) error {
	var cfg flowbusIfaceCfg
	if l3 {
		cfg.Flags = ifaceL3Dev
	}
	if err := o.objs.Ifaces.Put(uint32(ifindex), cfg); err != nil {
		return fmt.Errorf("configure interface %d: %w", ifindex, err)
	}
	return nil
}

// ForgetInterface removes an interface's settings: the tracepoint
// programs stop sampling its packets.
func (o *Objects) ForgetInterface(ifindex int) error {
	if err := o.objs.Ifaces.Delete(uint32(ifindex)); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return fmt.Errorf("forget interface %d: %w", ifindex, err)
	}
	return nil
}

// InterfacePackets returns the number of packets the trace programs saw
// on an interface since SetInterface, indexed by Direction.
func (o *Objects) InterfacePackets(ifindex int) ([2]uint64, error) {
	var cfg flowbusIfaceCfg
	if err := o.objs.Ifaces.Lookup(uint32(ifindex), &cfg); err != nil {
		return [2]uint64{}, fmt.Errorf("read interface %d counters: %w", ifindex, err)
	}
	return cfg.Packets, nil
}

// WatchNetns makes the drop program report drops in the network namespace
// with the given inode number.
func (o *Objects) WatchNetns(inum uint32) error {
	if err := o.objs.Netns.Put(inum, uint8(1)); err != nil {
		return fmt.Errorf("watch netns %d: %w", inum, err)
	}
	return nil
}

// DropReason says what to do with one kernel drop reason.
type DropReason struct {
	// Cilium is the Cilium drop reason the sample carries
	// (DropReasonUnknown when none means the same).
	Cilium uint8
	// Report says whether drops with this reason are emitted at all.
	Report bool
}

// SetDropReasons configures the drop program, indexed by the kernel's
// enum skb_drop_reason value; reasons not in m are not reported, except
// that key dropReasonEntries-1 (1023) stands for every larger reason.
func (o *Objects) SetDropReasons(m map[uint32]DropReason) error {
	for k, r := range m {
		if k >= dropReasonEntries {
			continue
		}
		v := flowbusDropReasonCfg{CiliumReason: r.Cilium}
		if r.Report {
			v.Report = 1
		}
		if err := o.objs.DropReasons.Put(k, v); err != nil {
			return fmt.Errorf("configure drop reason %d: %w", k, err)
		}
	}
	return nil
}

// Counters returns the programs' counters summed over CPUs, indexed by the
// Counter* constants.
func (o *Objects) Counters() ([NumCounters]uint64, error) {
	var sums [NumCounters]uint64
	for i := range sums {
		var per []uint64
		if err := o.objs.Counters.Lookup(uint32(i), &per); err != nil {
			return sums, fmt.Errorf("read counter %d: %w", i, err)
		}
		for _, v := range per {
			sums[i] += v
		}
	}
	return sums, nil
}

// Direction is where on an interface a TC program runs.
type Direction int

const (
	Ingress Direction = iota
	Egress
)

func (d Direction) String() string {
	if d == Egress {
		return "egress"
	}
	return "ingress"
}

// AttachMode selects how AttachTC attaches.
type AttachMode int

const (
	// AttachAuto uses tcx where the kernel has it (Linux 6.6 and later)
	// and a clsact cls_bpf filter otherwise.
	AttachAuto AttachMode = iota
	// AttachTCX and AttachClsact force one way.
	AttachTCX
	AttachClsact
)

func (m AttachMode) String() string {
	switch m {
	case AttachTCX:
		return "tcx"
	case AttachClsact:
		return "clsact"
	}
	return "auto"
}

// Attachment is a trace program attached to one hook of an interface.
// Closing it detaches the program.
type Attachment struct {
	io.Closer
	// Mode is "tcx" or "clsact".
	Mode string
	// Ahead says that flowbus's program runs before every other program
	// on the hook, so that none can end the chain before it sees a packet.
	Ahead bool
	// Others describes the other programs on the hook (and, with tcx, the
	// clsact filters that run after the tcx chain), in the order the
	// kernel runs them.
	Others []string

	ifindex int
	dir     Direction
	prog    *ebpf.Program
	name    string
}

// Refresh updates Ahead and Others from the kernel's view of the hook now
// (another agent may have attached since).
func (a *Attachment) Refresh() {
	switch a.Mode {
	case "tracepoint":
		return // no other program can come first
	case "tcx":
		at := ebpf.AttachTCXIngress
		if a.dir == Egress {
			at = ebpf.AttachTCXEgress
		}
		a.Ahead, a.Others = tcxOthers(a.ifindex, at, a.prog)
		a.Others = append(a.Others, clsactOthers(a.ifindex, a.dir)...)
		return
	}
	a.Ahead, a.Others = clsactPosition(a.ifindex, a.dir, a.name)
}

// WatchInterface makes the tracepoint programs (Config.Hook
// HookTracepoint) sample one direction of an interface, after
// SetInterface. Closing the Attachment stops the sampling of the whole
// interface (both directions share its settings).
func (o *Objects) WatchInterface(ifindex int, d Direction) (*Attachment, error) {
	if o.objs.TraceRx == nil {
		return nil, errors.New("tracepoint programs not loaded")
	}
	var cfg flowbusIfaceCfg
	if err := o.objs.Ifaces.Lookup(uint32(ifindex), &cfg); err != nil {
		return nil, fmt.Errorf("watch interface %d: not configured: %w", ifindex, err)
	}
	return &Attachment{Closer: forget{o, ifindex}, Mode: "tracepoint", Ahead: true, ifindex: ifindex, dir: d}, nil
}

type forget struct {
	o       *Objects
	ifindex int
}

func (f forget) Close() error { return f.o.ForgetInterface(f.ifindex) }

// AttachTracepoints attaches the tracepoint programs of the directions
// given (net:netif_receive_skb for Ingress, net:net_dev_start_xmit for
// Egress). Closing the links detaches them.
func (o *Objects) AttachTracepoints(dirs []Direction) ([]link.Link, error) {
	if o.objs.TraceRx == nil {
		return nil, errors.New("tracepoint programs not loaded")
	}
	var links []link.Link
	for _, d := range dirs {
		prog, tp := o.objs.TraceRx, "net:netif_receive_skb"
		if d == Egress {
			prog, tp = o.objs.TraceTx, "net:net_dev_start_xmit"
		}
		l, err := link.AttachTracing(link.TracingOptions{Program: prog, AttachType: ebpf.AttachTraceRawTp})
		if err != nil {
			for _, l := range links {
				l.Close()
			}
			return nil, fmt.Errorf("attach %s: %w", tp, err)
		}
		links = append(links, l)
	}
	return links, nil
}

// ProgramStats is what the kernel counted for one program while BPF
// statistics were on (EnableStats).
type ProgramStats struct {
	Runs    uint64
	Runtime time.Duration
}

// EnableStats makes the kernel count the runs and run time of every BPF
// program until the returned Closer is closed (sysctl
// kernel.bpf_stats_enabled). Counting costs a little per run.
func EnableStats() (io.Closer, error) {
	c, err := ebpf.EnableStats(uint32(unix.BPF_STATS_RUN_TIME))
	if err != nil {
		return nil, fmt.Errorf("enable BPF statistics: %w", err)
	}
	return c, nil
}

// Stats returns the kernel's statistics of the loaded trace programs, by
// name, for measuring their cost per packet.
func (o *Objects) Stats() (map[string]ProgramStats, error) {
	out := map[string]ProgramStats{}
	for name, p := range map[string]*ebpf.Program{
		flowbusProgTraceIngress: o.objs.TraceIngress, flowbusProgTraceEgress: o.objs.TraceEgress,
		flowbusProgTraceRx: o.objs.TraceRx, flowbusProgTraceTx: o.objs.TraceTx,
	} {
		if p == nil {
			continue
		}
		st, err := p.Stats()
		if err != nil {
			return nil, fmt.Errorf("program %s: %w", name, err)
		}
		out[name] = ProgramStats{Runs: st.RunCount, Runtime: st.Runtime}
	}
	return out, nil
}

// AttachTC attaches the trace program of direction d to the interface
// at the head of its tcx chain, or, on kernels without tcx, as a clsact
// filter ahead of the existing ones. A tcx link goes away when the process
// exits; a clsact filter stays until the next AttachTC on the interface
// replaces it.
func (o *Objects) AttachTC(ifindex int, d Direction) (*Attachment, error) {
	return o.AttachTCMode(ifindex, d, AttachAuto)
}

// AttachTCMode is AttachTC with a chosen mode.
func (o *Objects) AttachTCMode(ifindex int, d Direction, mode AttachMode) (*Attachment, error) {
	prog, at, name := o.objs.TraceIngress, ebpf.AttachTCXIngress, "flowbus_trace_ingress"
	if d == Egress {
		prog, at, name = o.objs.TraceEgress, ebpf.AttachTCXEgress, "flowbus_trace_egress"
	}
	if mode != AttachClsact {
		l, err := link.AttachTCX(link.TCXOptions{Interface: ifindex, Program: prog, Attach: at, Anchor: link.Head()})
		if err == nil {
			a := &Attachment{Closer: l, Mode: "tcx", ifindex: ifindex, dir: d, prog: prog, name: name}
			a.Ahead, a.Others = tcxOthers(ifindex, at, prog)
			// The clsact filters run after the tcx chain, when it
			// passes the packet on.
			a.Others = append(a.Others, clsactOthers(ifindex, d)...)
			return a, nil
		}
		if mode == AttachTCX || !errors.Is(err, ebpf.ErrNotSupported) {
			return nil, fmt.Errorf("attach tcx %s to interface %d: %w", d, ifindex, err)
		}
	}
	f, ahead, others, err := attachClsact(ifindex, d, prog, name)
	if err != nil {
		return nil, fmt.Errorf("attach clsact %s filter to interface %d: %w", d, ifindex, err)
	}
	return &Attachment{Closer: f, Mode: "clsact", Ahead: ahead, Others: others, ifindex: ifindex, dir: d, prog: prog, name: name}, nil
}

// tcxOthers describes the programs of the interface's tcx chain other
// than prog, in order, and says whether prog comes first.
func tcxOthers(ifindex int, at ebpf.AttachType, prog *ebpf.Program) (first bool, others []string) {
	var ourID ebpf.ProgramID
	if info, err := prog.Info(); err == nil {
		ourID, _ = info.ID()
	}
	res, err := link.QueryPrograms(link.QueryOptions{Target: ifindex, Attach: at})
	if err != nil {
		return false, []string{fmt.Sprintf("tcx chain unreadable: %v", err)}
	}
	for i, ap := range res.Programs {
		if ap.ID == ourID {
			first = i == 0
			continue
		}
		others = append(others, "tcx "+programName(ap.ID))
	}
	return first, others
}

// programName is a program's name and id, as bpftool shows them.
func programName(id ebpf.ProgramID) string {
	p, err := ebpf.NewProgramFromID(id)
	if err != nil {
		return fmt.Sprintf("id %d", id)
	}
	defer p.Close()
	info, err := p.Info()
	if err != nil || info.Name == "" {
		return fmt.Sprintf("id %d", id)
	}
	return fmt.Sprintf("%s (id %d)", info.Name, id)
}

// AttachDrops attaches the kfree_skb program (if loaded with Drops).
func (o *Objects) AttachDrops() (link.Link, error) {
	if o.objs.OnKfreeSkb == nil {
		return nil, errors.New("drop program not loaded")
	}
	l, err := link.AttachTracing(link.TracingOptions{Program: o.objs.OnKfreeSkb, AttachType: ebpf.AttachTraceRawTp})
	if err != nil {
		return nil, fmt.Errorf("attach skb:kfree_skb: %w", err)
	}
	return l, nil
}

// ProgramIDs returns the kernel IDs of the loaded programs, to check that
// none stays attached after a run.
func (o *Objects) ProgramIDs() []ebpf.ProgramID {
	var ids []ebpf.ProgramID
	for _, p := range []*ebpf.Program{o.objs.TraceIngress, o.objs.TraceEgress, o.objs.TraceRx, o.objs.TraceTx, o.objs.OnKfreeSkb} {
		if p == nil {
			continue
		}
		if info, err := p.Info(); err == nil {
			if id, ok := info.ID(); ok {
				ids = append(ids, id)
			}
		}
	}
	return ids
}

// KernelDropReasons returns the names of the running kernel's
// enum skb_drop_reason values, without the SKB_DROP_REASON_ prefix
// (SKB_CONSUMED and SKB_NOT_DROPPED_YET keep their names).
func KernelDropReasons() (map[uint32]string, error) {
	spec, err := btf.LoadKernelSpec()
	if err != nil {
		return nil, fmt.Errorf("load kernel BTF: %w", err)
	}
	var e *btf.Enum
	if err := spec.TypeByName("skb_drop_reason", &e); err != nil {
		return nil, fmt.Errorf("kernel BTF: enum skb_drop_reason: %w", err)
	}
	names := make(map[uint32]string, len(e.Values))
	for _, v := range e.Values {
		name := v.Name
		if len(name) > len("SKB_DROP_REASON_") && name[:len("SKB_DROP_REASON_")] == "SKB_DROP_REASON_" {
			name = name[len("SKB_DROP_REASON_"):]
		}
		names[uint32(v.Value)] = name
	}
	return names, nil
}

// NetnsInode returns the inode number of a network namespace file such as
// /proc/self/ns/net: the number the drop program filters on.
func NetnsInode(path string) (uint32, error) {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return 0, fmt.Errorf("stat %s: %w", path, err)
	}
	return uint32(st.Ino), nil
}

// RunTrace runs the trace program of direction d repeat times on pkt (a
// frame starting at its Ethernet header) as if it had passed the interface
// ifindex, with BPF_PROG_TEST_RUN: the program and its output run in the
// kernel as for a real packet, without the network stack around them. It
// lets benchmarks feed the reader at rates no sender on the machine
// reaches.
func (o *Objects) RunTrace(d Direction, ifindex int, pkt []byte, repeat uint32) error {
	prog := o.objs.TraceIngress
	if d == Egress {
		prog = o.objs.TraceEgress
	}
	// The leading fields of struct __sk_buff, up to ifindex (offset 40):
	// the kernel runs the program on the interface the context names.
	ctx := make([]byte, 44)
	binary.NativeEndian.PutUint32(ctx[40:], uint32(ifindex))
	if _, err := prog.Run(&ebpf.RunOptions{Data: pkt, Context: ctx, Repeat: repeat}); err != nil {
		return fmt.Errorf("run trace %s program: %w", d, err)
	}
	return nil
}
