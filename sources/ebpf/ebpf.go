//go:build linux

// Package ebpf is the `ebpf` source: it loads flowbus's own BPF programs
// (package bpf), attaches them to the chosen interfaces, reads their
// samples with batched wakeups from one BPF ring buffer shared by all CPUs
// (Linux 5.8 and later) or, as a fallback, from per-CPU perf rings, and
// decodes them, with the decoder used for Cilium's datapath, into Hubble
// flows.
//
// Flows carry node_name and interface.name; trace flows also carry
// traffic_direction (INGRESS for FROM_NETWORK, EGRESS for TO_NETWORK) and
// is_reply: the programs track each connection in a kernel LRU map (also
// used for aggregation) and mark the first packet of the side that spoke
// first NEW, its later packets ESTABLISHED and the other side's REPLY, as
// Cilium's trace reasons do (a TCP SYN opens, a SYN-ACK answers; ICMP echo
// requests open, replies answer; other ICMP has no direction), so Hubble's
// printers draw `->` and `<-`. The other side is looked up on the same
// interface, so with `direction: ingress` or `egress` only TCP handshakes
// and ICMP echoes tell replies apart. Drops seen by skb:kfree_skb become DROPPED
// flows (traffic_direction INGRESS when the packet had arrived on the
// device, EGRESS when it was made on this host or forwarded; is_reply unset,
// as Hubble leaves it on drops) whose drop_reason is the Cilium reason that means the same as the
// kernel's, or bpf.DropReasonUnknown (never 0, which Cilium's tools print
// as "Success") with drop_reason_desc DROP_REASON_UNKNOWN; the kernel's own
// reason name (SKB_DROP_REASON_ without the prefix, e.g. "NO_SOCKET") is
// carried in Flow.extensions, a google.protobuf.Struct with the key
// "kernel_drop_reason" — Hubble's slot for metadata beyond its schema.
//
// Next to another datapath (Cilium's, on every Cilium node) whose TC
// programs end the chain, the trace programs attach at the head of the tcx
// chain, or as a clsact filter ahead of the existing ones (see package
// bpf), and log the other programs they found. Every 5 seconds the source
// compares, per interface and direction, the packets the kernel counted
// with those its programs saw; a direction that passes traffic unseen (an
// agent attached ahead of flowbus later) is logged as a warning, reported
// by /readyz and by the flowbus_ebpf_interface_sees_traffic gauge.
//
// Where another agent owns TC (it re-attaches its programs ahead of
// others', or the kernel refuses head attachment), `hook: tracepoint`
// samples the same packets from the BTF tracepoints net:netif_receive_skb
// (a device received a packet; before TC ingress) and net:net_dev_start_xmit
// (a device is handed a packet; after TC egress and the qdisc), which no TC
// program can hide a packet from, so the source is never blind there. The
// flows are the same (FROM_NETWORK, TO_NETWORK); a packet that a TC egress
// program drops is reported only as a drop. The tracepoint programs read
// the packet from kernel memory and capture its linear part only (the
// headers the stack has written or pulled, where TC's reads also reach the
// pages): on a NIC whose driver leaves the headers of received packets in
// pages, those samples lack the headers (use hook: tc there). The
// tracepoints run for every
// packet of every device in every namespace: for the interfaces not
// watched they leave after one map lookup. The choice, measured with
// BenchmarkHookCost (the kernel's own run time of the programs, 64-byte
// UDP through a veth, on a loaded 2-vCPU machine): with aggregation off
// the tc program costs 2.6-2.8 µs per packet and the tracepoint 1.7-1.8
// µs (each writes a 176-byte sample per packet); with connection
// aggregation 0.38-0.40 µs (tc) and 0.46-0.49 µs (tracepoint: its packet
// reads go through bpf_probe_read_kernel); a packet of an interface not
// watched costs the tracepoint 0.11-0.12 µs, and costs tc nothing. So tc,
// at the head of the chain, stays the default, and tracepoint is the
// choice where TC is not flowbus's to order. cgroup_skb programs on the
// root cgroup were not chosen: they see only packets of local sockets (not
// the traffic a node forwards to its pods' veths, nor what the kernel
// answers itself, such as ICMP errors), without Ethernet headers, and
// need cgroup v2 mounted, which hosts still on cgroup v1 lack.
//
// Perf LOST records become LostEvents (PERF_EVENT_RING_BUFFER) with their
// CPU; with the ring buffer, which has no loss records, the samples the
// programs failed to write (their counters) become LostEvents without a
// CPU. The source needs CAP_BPF, CAP_NET_ADMIN and CAP_PERFMON (or root)
// and fails at Start, saying which it lacks, without them. Nothing is
// pinned: the programs detach when the source stops or the process exits
// (on kernels without tcx, where the clsact fallback is used, a crashed
// run's filters stay until the next start replaces them). With
// `interfaces: all`, the source attaches to every up, non-loopback
// interface at start and then, as the kernel's link events announce them,
// to those that come up (a new pod's veth); those deleted are forgotten. A
// named interface that does not exist yet is waited for: the source starts,
// is not ready while it waits, and attaches when the interface appears. A
// rescan every 30 seconds catches link events lost to a full socket.
//
// Its keys: `flowbus components ebpf`, or docs/components.md.
package ebpf

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cilium/ebpf/perf"
	"github.com/cilium/ebpf/ringbuf"
	"github.com/cilium/ebpf/rlimit"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/flowbus/flowbus/bpf"
	flowpb "github.com/flowbus/flowbus/flow"
	"github.com/flowbus/flowbus/flow/datapath"
	"github.com/flowbus/flowbus/flow/flowid"
	"github.com/flowbus/flowbus/internal/ifname"
	"github.com/flowbus/flowbus/pipeline"
)

func init() {
	pipeline.RegisterSource(pipeline.Spec{
		Type:        "ebpf",
		Summary:     "loads flowbus's own BPF programs on the chosen interfaces and turns the packets they sample into Hubble flows, without Cilium",
		Description: `Flows carry node_name and interface.name; trace flows carry traffic_direction and is_reply (from the connection state the programs keep: who sent the first packet). Drops seen by skb:kfree_skb become DROPPED flows with traffic_direction (INGRESS: dropped after arriving on the device) and the Cilium drop reason that means the same as the kernel's, else drop_reason 255 and DROP_REASON_UNKNOWN (the kernel's own reason is in Flow.extensions, key kernel_drop_reason). The TC programs attach ahead of other agents' programs (the head of the tcx chain, or a clsact filter ahead of the existing ones); an interface whose traffic they do not see is logged, reported by /readyz and by flowbus_ebpf_interface_sees_traffic. Where another agent owns TC, hook: tracepoint samples the same packets from the kernel's device tracepoints, which no TC program can hide a packet from. Samples go to one BPF ring buffer shared by all CPUs where the kernel has it (else per-CPU perf rings); samples the kernel could not write become LostEvents (PERF_EVENT_RING_BUFFER; with their CPU from the perf rings). The source needs CAP_BPF, CAP_NET_ADMIN and CAP_PERFMON (or root) and fails at start, naming what it lacks. Nothing is pinned: the programs detach when the source stops (also when a later component fails to start) or the process exits.`,
		Example: `type: ebpf
interfaces: [eth0]
direction: both
aggregation: connection
aggregation_interval: 5s
`,
	}, New)
}

// flushInterval bounds how long a sample waits in a quiet perf ring (whose
// wakeup threshold is not reached) or in a partial batch.
const flushInterval = 100 * time.Millisecond

// Source is the ebpf source. It implements pipeline.Source, Starter and
// Readier.
type Source struct {
	set      settings
	nodeName string
	log      *slog.Logger
	dir      string

	mu       sync.Mutex // guards the attachment state below
	objs     *bpf.Objects
	attached map[int]*attachment // by ifindex
	failed   map[int]bool        // interfaces a rescan could not attach to
	dropLink io.Closer
	tpLinks  []io.Closer // the tracepoint programs (hook: tracepoint)
	detached bool        // set at stop: no more attaching
	reader   sampleReader
	started  bool
	stopped  bool

	ready     atomic.Pointer[error]
	blindErr  atomic.Pointer[error] // interfaces whose traffic flowbus does not see
	waitErr   atomic.Pointer[error] // named interfaces that do not exist
	linksDone chan struct{}         // closed to end the link event subscription

	names ifname.Cache // used by Run and by attaching

	// healthInterval and rescanInterval when the source was built.
	healthEvery, rescanEvery time.Duration

	// Only the Run goroutine uses these.
	dec        datapath.Decoder
	ids        *flowid.Generator // flow uuids, as Hubble gives every decoded flow
	reasons    map[uint32]string
	reasonAnys map[uint16][]byte
	rec        recorder

	malformedLogged bool

	m metrics
}

// New builds an ebpf source from its options.
func New(b *pipeline.Build, o *Options) (*Source, error) {
	set, err := check(b, o)
	if err != nil {
		return nil, err
	}
	return newSource(b, set), nil
}

func newSource(b *pipeline.Build, set settings) *Source {
	log := b.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Source{set: set, nodeName: b.NodeName, log: log, dir: b.Dir, ids: flowid.New(),
		healthEvery: healthInterval, rescanEvery: rescanInterval}
	s.m = newMetrics(b.Metrics, s)
	notStarted := errors.New("ebpf source: not started")
	s.ready.Store(&notStarted)
	return s
}

// Ready implements pipeline.Readier: the source is not ready before it
// started, after it stopped, while a named interface does not exist, and
// while an interface passes traffic that its programs do not see.
func (s *Source) Ready() error {
	if err := *s.ready.Load(); err != nil {
		return err
	}
	var errs []error
	for _, p := range []*error{s.waitErr.Load(), s.blindErr.Load()} {
		if p != nil {
			errs = append(errs, *p)
		}
	}
	return errors.Join(errs...)
}

// Start implements pipeline.Starter: it checks privileges, loads the
// programs, attaches them and opens the perf reader.
func (s *Source) Start(ctx context.Context) (err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.started {
		return nil
	}
	if err := checkPrivileges(); err != nil {
		return err
	}
	s.detached = false
	defer func() {
		if err != nil {
			s.closeLocked()
		}
	}()
	if err := rlimit.RemoveMemlock(); err != nil {
		return fmt.Errorf("ebpf source: remove memlock limit: %w", err)
	}
	ifaces, err := s.interfaces()
	if err != nil {
		return err
	}
	load := s.set.load
	switch s.set.buffer {
	case "ring":
		if !bpf.HaveRingBuffer() {
			return errors.New("ebpf source: event_buffer: ring: the kernel has no BPF ring buffer (Linux 5.8 and later); use perf or auto")
		}
		fallthrough
	case "auto":
		if bpf.HaveRingBuffer() {
			load.RingSize = ringSize(s.set.perfPages)
			load.RingWakeupBytes = ringWakeup(load.RingSize)
		}
	}
	objs, err := bpf.Load(load)
	if err != nil {
		if errors.Is(err, os.ErrPermission) {
			return fmt.Errorf("ebpf source: the kernel refused to load the BPF programs (%v); it needs CAP_BPF, CAP_NET_ADMIN and CAP_PERFMON (or root)", err)
		}
		return fmt.Errorf("ebpf source: %w", err)
	}
	s.objs = objs
	if s.set.load.Drops {
		if err := s.setupDrops(); err != nil {
			return err
		}
	}
	if s.set.load.Hook == bpf.HookTracepoint {
		// The tracepoints fire in every namespace: sample this one's.
		if err := s.watchOwnNetns(); err != nil {
			return err
		}
	}
	// The reader comes first so that no sample of an attached program is
	// refused for want of a ring.
	if ring := objs.Ring(); ring != nil {
		rd, err := ringbuf.NewReader(ring)
		if err != nil {
			return fmt.Errorf("ebpf source: open ring buffer reader: %w", err)
		}
		s.reader = &ringReader{Reader: rd, counters: objs.Counters, checked: time.Now()}
	} else {
		pageSize := os.Getpagesize()
		rd, err := perf.NewReaderWithOptions(objs.Events(), s.set.perfPages*pageSize,
			perf.ReaderOptions{WakeupEvents: wakeupEvents(s.set.perfPages*pageSize, s.set.load.CaptureLength)})
		if err != nil {
			return fmt.Errorf("ebpf source: open perf reader: %w", err)
		}
		s.reader = &perfReader{Reader: rd, counters: objs.Counters}
	}
	// Subscribe before attaching, so that no interface that appears in
	// between is missed.
	s.subscribeLinksLocked()
	for _, ifi := range ifaces {
		if err := s.attachLocked(ifi); err != nil {
			return err
		}
	}
	s.updateWaitingLocked()
	if s.set.load.Hook == bpf.HookTracepoint {
		links, err := objs.AttachTracepoints(s.directions())
		if err != nil {
			return fmt.Errorf("ebpf source: %w", err)
		}
		for _, l := range links {
			s.tpLinks = append(s.tpLinks, l)
		}
	}
	s.checkHealthLocked() // the baseline of the counters
	if s.set.load.Drops {
		l, err := objs.AttachDrops()
		if err != nil {
			return fmt.Errorf("ebpf source: %w", err)
		}
		s.dropLink = l
	}
	if s.set.record != "" {
		path := s.set.record
		if s.dir != "" && !filepath.IsAbs(path) {
			path = filepath.Join(s.dir, path)
		}
		rec, err := newRecorder(path)
		if err != nil {
			return fmt.Errorf("ebpf source: record: %w", err)
		}
		s.rec = rec
	}
	names := make([]string, len(ifaces))
	for i, ifi := range ifaces {
		names[i] = ifi.Name
	}
	s.log.Info("ebpf source attached", "interfaces", names, "settings", s.set.String(), "event_buffer", s.reader.kind())
	s.started = true
	var ok error
	s.ready.Store(&ok)
	return nil
}

func (s *Source) directions() []bpf.Direction {
	var ds []bpf.Direction
	if s.set.ingress {
		ds = append(ds, bpf.Ingress)
	}
	if s.set.egress {
		ds = append(ds, bpf.Egress)
	}
	return ds
}

// interfaces resolves the configured interfaces.
func (s *Source) interfaces() ([]net.Interface, error) {
	if !s.set.interfaces.All {
		// A named interface that does not exist (yet) is waited for.
		var out []net.Interface
		for _, name := range s.set.interfaces.Names {
			if ifi, err := net.InterfaceByName(name); err == nil {
				out = append(out, *ifi)
			}
		}
		return out, nil
	}
	all, err := net.Interfaces()
	if err != nil {
		return nil, fmt.Errorf("ebpf source: list interfaces: %w", err)
	}
	var out []net.Interface
	for _, ifi := range all {
		if ifi.Flags&net.FlagUp != 0 && ifi.Flags&net.FlagLoopback == 0 {
			out = append(out, ifi)
		}
	}
	if len(out) == 0 {
		return nil, errors.New("ebpf source: interfaces: all: no interface is up (other than loopback)")
	}
	return out, nil
}

func (s *Source) setupDrops() error {
	reasons, err := bpf.KernelDropReasons()
	if err != nil {
		return fmt.Errorf("ebpf source: drops: %w", err)
	}
	s.reasons = reasons
	if err := s.objs.SetDropReasons(bpf.DropReasonConfig(reasons)); err != nil {
		return fmt.Errorf("ebpf source: %w", err)
	}
	return s.watchOwnNetns()
}

// watchOwnNetns makes the drop and tracepoint programs report the packets
// of flowbus's own network namespace.
func (s *Source) watchOwnNetns() error {
	inum, err := bpf.NetnsInode("/proc/self/ns/net")
	if err != nil {
		return fmt.Errorf("ebpf source: %w", err)
	}
	if err := s.objs.WatchNetns(inum); err != nil {
		return fmt.Errorf("ebpf source: %w", err)
	}
	return nil
}

// wakeupEvents picks the number of samples per CPU ring that wakes the
// reader: a quarter of what the ring holds, at most 64 (a wakeup per sample
// costs microseconds). Quiet rings are read at each flush.
func wakeupEvents(ringBytes int, capLen uint32) int {
	sample := 8 + 4 + bpf.TraceHeaderLen + int(capLen) + 8
	return min(max(ringBytes/sample/4, 1), 64)
}

// attachment is what the source attached to one interface.
type attachment struct {
	name  string
	index int
	links []*bpf.Attachment
	dirs  []bpf.Direction // of links

	// Health, per direction (bpf.Ingress, bpf.Egress): the counters at the
	// last check, and whether the programs saw traffic since.
	lastOurs, lastKernel [2]uint64
	checked              bool
	blind                [2]bool
	seen                 [2]uint64 // packets the programs saw, in total
}

// attachLocked attaches the trace programs to one interface.
func (s *Source) attachLocked(ifi net.Interface) error {
	if err := s.objs.SetInterface(ifi.Index, len(ifi.HardwareAddr) == 0); err != nil {
		return fmt.Errorf("ebpf source: %w", err)
	}
	s.names.Put(uint32(ifi.Index), ifi.Name)
	a := &attachment{name: ifi.Name, index: ifi.Index}
	for _, d := range s.directions() {
		var (
			l   *bpf.Attachment
			err error
		)
		if s.set.load.Hook == bpf.HookTracepoint {
			l, err = s.objs.WatchInterface(ifi.Index, d)
		} else {
			l, err = s.objs.AttachTCMode(ifi.Index, d, s.set.attach)
		}
		if err != nil {
			for _, l := range a.links {
				l.Close()
			}
			return fmt.Errorf("ebpf source: interface %s: %w", ifi.Name, err)
		}
		a.links = append(a.links, l)
		a.dirs = append(a.dirs, d)
		switch {
		case !l.Ahead:
			s.log.Warn("ebpf source: other programs run ahead of flowbus's and can end the chain before it sees a packet; flowbus may see only part of the traffic",
				"interface", ifi.Name, "direction", d.String(), "mode", l.Mode, "others", l.Others)
		case len(l.Others) > 0:
			s.log.Info("ebpf source: attached ahead of the other programs on the hook",
				"interface", ifi.Name, "direction", d.String(), "mode", l.Mode, "others", l.Others)
		}
	}
	if s.attached == nil {
		s.attached = map[int]*attachment{}
	}
	s.attached[ifi.Index] = a
	return nil
}

// rescanInterval is how often the source looks for interfaces that came
// up or went away besides the kernel's link events (which it acts on at
// once): a safety net for events lost to a full netlink socket.
var rescanInterval = 30 * time.Second

// rescanLocked attaches to the interfaces that came up since the last scan
// and forgets those that are gone (the kernel detached their programs).
func (s *Source) rescanLocked() {
	if s.detached || s.objs == nil {
		return
	}
	ifaces, err := s.interfaces()
	if err != nil {
		return
	}
	present := make(map[int]bool, len(ifaces))
	for _, ifi := range ifaces {
		present[ifi.Index] = true
		if s.attached[ifi.Index] != nil || s.failed[ifi.Index] {
			continue
		}
		if err := s.attachLocked(ifi); err != nil {
			if s.failed == nil {
				s.failed = map[int]bool{}
			}
			s.failed[ifi.Index] = true
			s.log.Warn("ebpf source: cannot attach to a new interface", "interface", ifi.Name, "error", err)
			continue
		}
		s.log.Info("ebpf source attached to a new interface", "interface", ifi.Name)
	}
	for index, a := range s.attached {
		if present[index] {
			continue
		}
		if _, err := net.InterfaceByIndex(index); err == nil {
			continue // still there, only down
		}
		for _, l := range a.links {
			l.Close()
		}
		delete(s.attached, index)
		s.log.Info("ebpf source: interface gone", "interface", a.name)
	}
	for index := range s.failed {
		if !present[index] {
			delete(s.failed, index)
		}
	}
	s.updateWaitingLocked()
}

// detachLocked closes the links, so the kernel detaches the programs, and
// stops further attaching.
func (s *Source) detachLocked() {
	s.detached = true
	s.unsubscribeLinksLocked()
	for index, a := range s.attached {
		for _, l := range a.links {
			if err := l.Close(); err != nil {
				s.log.Warn("ebpf source: detach", "interface", a.name, "error", err)
			}
		}
		delete(s.attached, index)
	}
	if s.dropLink != nil {
		if err := s.dropLink.Close(); err != nil {
			s.log.Warn("ebpf source: detach kfree_skb", "error", err)
		}
		s.dropLink = nil
	}
	for _, l := range s.tpLinks {
		if err := l.Close(); err != nil {
			s.log.Warn("ebpf source: detach tracepoint", "error", err)
		}
	}
	s.tpLinks = nil
}

// Stop implements pipeline.Stopper: it detaches the programs and releases
// what Start took, when Run did not (a component started after this source
// failed to start), or has not yet (it was abandoned at the shutdown
// deadline). It can be called any number of times.
func (s *Source) Stop(context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.started && !s.stopped {
		s.closeLocked()
		s.stopped = true
		stopped := errors.New("ebpf source: stopped")
		s.ready.Store(&stopped)
	}
	return nil
}

// closeLocked releases everything.
func (s *Source) closeLocked() {
	s.detachLocked()
	if s.reader != nil {
		s.reader.Close()
		s.reader = nil
	}
	if s.objs != nil {
		s.objs.Close()
		s.objs = nil
	}
	if s.rec != nil {
		if err := s.rec.Close(); err != nil {
			s.log.Warn("ebpf source: close record file", "error", err)
		}
		s.rec = nil
	}
}

// Run implements pipeline.Source. It reads samples until ctx ends, then
// detaches the programs, drains what the rings still hold and returns.
func (s *Source) Run(ctx context.Context, out pipeline.Output) error {
	if err := s.Start(ctx); err != nil {
		return err
	}
	s.mu.Lock()
	rd := s.reader
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		s.closeLocked()
		s.stopped = true
		s.mu.Unlock()
		stopped := errors.New("ebpf source: stopped")
		s.ready.Store(&stopped)
	}()

	stop := make(chan struct{})
	defer close(stop)
	go func() {
		t := time.NewTicker(s.healthEvery)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
				s.mu.Lock()
				s.checkHealthLocked()
				s.mu.Unlock()
			}
		}
	}()
	go func() {
		select {
		case <-ctx.Done():
		case <-stop:
			return
		}
		// Detach first so that the flush sees every sample there will be.
		s.mu.Lock()
		s.detachLocked()
		s.mu.Unlock()
		rd.Flush()
	}()

	// Once ctx ends, the samples still to come (until the rings are
	// drained after the detach) are emitted with a moment's grace beyond
	// it, so that none is dropped uncounted.
	emitCtx := ctx
	graceCancel := func() {}
	defer func() { graceCancel() }()
	b := pipeline.NewBatch()
	defer func() {
		if b != nil {
			b.Release()
		}
	}()
	emit := func() error {
		if b.Len() == 0 {
			return nil
		}
		grace := func() {
			emitCtx, graceCancel = context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
		}
		if emitCtx == ctx && ctx.Err() != nil {
			grace()
		}
		err := out.Emit(emitCtx, b)
		b = pipeline.NewBatch()
		if err != nil && emitCtx == ctx {
			grace() // ctx ended during the Emit: go on draining
			return nil
		}
		return err // the grace passed
	}
	lastScan := time.Now()
	rd.SetDeadline(time.Now().Add(flushInterval))
	for {
		raw, cpu, lost, err := rd.next()
		switch {
		case err == nil:
		case errors.Is(err, os.ErrDeadlineExceeded):
			if err := emit(); err != nil {
				return nil // the pipeline took nothing within the grace after ctx ended
			}
			if time.Since(lastScan) >= s.rescanEvery {
				s.mu.Lock()
				s.rescanLocked()
				s.mu.Unlock()
				lastScan = time.Now()
			}
			rd.SetDeadline(time.Now().Add(flushInterval))
			continue
		case errors.Is(err, errFlushed):
			if n := rd.unreported(); n > 0 {
				s.m.lost.Add(float64(n))
				out.Lost(flowpb.LostEventSource_PERF_EVENT_RING_BUFFER, -1, n)
			}
			// Stopping: emit the last samples (with the grace above).
			emit()
			return nil
		case errors.Is(err, errClosed):
			return nil
		default:
			return fmt.Errorf("ebpf source: read %s buffer: %w", rd.kind(), err)
		}
		if lost > 0 {
			s.m.lost.Add(float64(lost))
			out.Lost(flowpb.LostEventSource_PERF_EVENT_RING_BUFFER, int32(cpu), lost)
			s.record(func(r recorder) error { return r.Lost(max(cpu, 0), lost) })
			continue
		}
		s.record(func(r recorder) error { return r.Sample(max(cpu, 0), raw) })
		if s.decode(b, raw) && b.Len() >= pipeline.DefaultBatchSize {
			if err := emit(); err != nil {
				return nil
			}
		}
	}
}

func (s *Source) record(write func(recorder) error) {
	if s.rec == nil {
		return
	}
	if err := write(s.rec); err != nil {
		s.log.Error("ebpf source: record failed; recording stops", "path", s.set.record, "error", err)
		s.rec.Close()
		s.rec = nil
	}
}

// decode appends the flow of one sample to b; it reports whether it did.
func (s *Source) decode(b *pipeline.Batch, raw []byte) bool {
	e := b.Next()
	f := e.FlowStorage()
	if err := s.dec.Decode(raw, f); err != nil {
		b.Truncate(b.Len() - 1)
		if errors.Is(err, datapath.ErrSkip) {
			s.m.skipped.Inc()
			return false
		}
		s.m.malformed.Inc()
		if !s.malformedLogged {
			s.malformedLogged = true
			s.log.Warn("ebpf source: undecodable sample (logged once, counted in metrics)", "error", err, "len", len(raw))
		}
		return false
	}
	s.m.flows.Inc()
	f.Uuid = s.ids.Next()
	f.NodeName = s.nodeName
	e.NodeName = s.nodeName
	e.Time = f.Time
	switch raw[0] {
	case datapath.MessageTypeTrace:
		switch f.TraceObservationPoint {
		case flowpb.TraceObservationPoint_FROM_NETWORK:
			f.TrafficDirection = flowpb.TrafficDirection_INGRESS
		case flowpb.TraceObservationPoint_TO_NETWORK:
			f.TrafficDirection = flowpb.TrafficDirection_EGRESS
		}
	case datapath.MessageTypeDrop:
		s.annotateDrop(f, raw)
	}
	if f.Interface != nil && f.Interface.Name == "" {
		f.Interface.Name = s.names.Get(f.Interface.Index)
	}
	return true
}

// newMetrics registers the source's counters.
type metrics struct {
	flows, skipped, malformed, lost prometheus.Counter
}

func newMetrics(reg prometheus.Registerer, s *Source) metrics {
	m := metrics{
		flows:     prometheus.NewCounter(prometheus.CounterOpts{Name: "flowbus_ebpf_flows_total", Help: "Flows decoded from BPF samples."}),
		skipped:   prometheus.NewCounter(prometheus.CounterOpts{Name: "flowbus_ebpf_samples_skipped_total", Help: "Samples that are not flows."}),
		malformed: prometheus.NewCounter(prometheus.CounterOpts{Name: "flowbus_ebpf_samples_malformed_total", Help: "Samples that could not be decoded."}),
		lost:      prometheus.NewCounter(prometheus.CounterOpts{Name: "flowbus_ebpf_perf_lost_total", Help: "Samples the kernel could not write to the perf ring (PERF_RECORD_LOST)."}),
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.flows, m.skipped, m.malformed, m.lost, bpfCounters{s}, interfaceMetrics{s}} {
			if err := reg.Register(c); err != nil {
				s.log.Warn("ebpf source: register metric", "error", err)
			}
		}
	}
	return m
}

// bpfCounters exports the programs' own counters at scrape time.
type bpfCounters struct{ s *Source }

var bpfCounterDesc = prometheus.NewDesc("flowbus_ebpf_bpf_events_total",
	"Counters of the BPF programs: trace/drop samples sent, lost (perf output failed), and packets aggregated away.",
	[]string{"event"}, nil)

func (c bpfCounters) Describe(ch chan<- *prometheus.Desc) { ch <- bpfCounterDesc }

func (c bpfCounters) Collect(ch chan<- prometheus.Metric) {
	cs, err := c.s.Counters()
	if err != nil {
		return
	}
	for i, name := range []string{"trace_sent", "trace_lost", "trace_aggregated", "drop_sent", "drop_lost"} {
		ch <- prometheus.MustNewConstMetric(bpfCounterDesc, prometheus.CounterValue, float64(cs[i]), name)
	}
}

// Counters returns the BPF programs' counters (bpf.Counter* indexes).
func (s *Source) Counters() ([bpf.NumCounters]uint64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.objs == nil {
		return [bpf.NumCounters]uint64{}, errors.New("ebpf source: not running")
	}
	return s.objs.Counters()
}
