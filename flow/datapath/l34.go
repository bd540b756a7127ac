package datapath

import (
	"encoding/binary"
	"fmt"
	"math/bits"
	"net/netip"

	"google.golang.org/protobuf/types/known/timestamppb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	flowpb "github.com/flowbus/flowbus/flow"
)

// Header lengths by message type and version.
const (
	traceV0Len        = 32
	traceV1Len        = 48
	traceV2Len        = 56
	dropV1Len         = 36
	dropV2Len         = 40
	dropV3Len         = 48
	policyV1_18Len    = 32
	policyV1_19Len    = 40
	debugCaptureLen   = 24
	sockV1_19Len      = 40
	sockV1_18Len      = 38
	traceReasonMask   = 0x7f
	traceReasonUnk    = 5
	traceReasonReply  = 2
	traceEncryptedBit = 0x80
)

// Classifier flags of trace and drop notifications (Cilium ≥ v1.18).
const (
	flagIPv6   = 1 << 0
	flagL3Dev  = 1 << 1
	flagVXLAN  = 1 << 2
	flagGeneve = 1 << 3
)

// PolicyVerdictLayout selects the PolicyVerdictNotify header layout.
type PolicyVerdictLayout int

const (
	// PolicyVerdictAuto tells the layouts apart by the sample length minus
	// the captured length (32–39: v1.18 and earlier; otherwise v1.19+),
	// which holds for samples padded as the perf ring pads them and for
	// unpadded ones.
	PolicyVerdictAuto PolicyVerdictLayout = iota
	// PolicyVerdictV1_18 is the 32-byte header of Cilium v1.18 and earlier.
	PolicyVerdictV1_18
	// PolicyVerdictV1_19 is the 40-byte header of Cilium v1.19 and later.
	PolicyVerdictV1_19
)

// header is what the L3/L4 message headers carry.
type header struct {
	typ, sub           uint8
	source             uint16
	srcLabel, dstLabel uint32
	hasLabels          bool
	dstID              uint16 // trace: endpoint or proxy port
	reason             uint8  // trace
	flags              uint8  // trace/drop classifier flags
	ifindex            uint32 // trace
	orig               [16]byte
	ipTraceID          uint64
	line               uint16 // drop
	file               uint8  // drop
	remote             uint32 // policy verdict
	verdict            int32
	pflags             uint8
	auth               uint8
	arg1               uint32 // capture
}

func (d *Decoder) policyLayout(data []byte) int {
	switch d.PolicyVerdictLayout {
	case PolicyVerdictV1_18:
		return policyV1_18Len
	case PolicyVerdictV1_19:
		return policyV1_19Len
	}
	if len(data) >= 14 {
		if h := len(data) - int(binary.NativeEndian.Uint16(data[12:14])); h >= policyV1_18Len && h < policyV1_19Len {
			return policyV1_18Len
		}
	}
	return policyV1_19Len
}

// parseHeader decodes the fixed header and returns the packet offset.
func (d *Decoder) parseHeader(data []byte, h *header) (int, error) {
	ne := binary.NativeEndian
	h.typ = data[0]
	switch h.typ {
	case MessageTypeTrace:
		if len(data) < traceV0Len {
			return 0, malformed("trace notify: %d bytes, need %d", len(data), traceV0Len)
		}
		off := traceV0Len
		switch v := data[14]; v {
		case 0:
		case 1, 2:
			off = traceV1Len
			if v == 2 {
				off = traceV2Len
			}
			if len(data) < off {
				return 0, malformed("trace notify v%d: %d bytes, need %d", v, len(data), off)
			}
			copy(h.orig[:], data[32:48])
			if v == 2 {
				h.ipTraceID = ne.Uint64(data[48:56])
			}
		default:
			return 0, malformed("trace notify: unknown version %d", v)
		}
		h.sub = data[1]
		h.source = ne.Uint16(data[2:4])
		h.srcLabel, h.dstLabel, h.hasLabels = ne.Uint32(data[16:20]), ne.Uint32(data[20:24]), true
		h.dstID = ne.Uint16(data[24:26])
		h.reason = data[26]
		h.flags = data[27]
		h.ifindex = ne.Uint32(data[28:32])
		return off, nil
	case MessageTypeDrop:
		if len(data) < dropV1Len {
			return 0, malformed("drop notify: %d bytes, need %d", len(data), dropV1Len)
		}
		off := dropV1Len
		switch v := data[14]; v {
		case 0, 1:
		case 2, 3:
			off = dropV2Len
			if v == 3 {
				off = dropV3Len
			}
			if len(data) < off {
				return 0, malformed("drop notify v%d: %d bytes, need %d", v, len(data), off)
			}
			h.flags = data[36]
			if v == 3 {
				h.ipTraceID = ne.Uint64(data[40:48])
			}
		default:
			return 0, malformed("drop notify: unknown version %d", v)
		}
		h.sub = data[1]
		h.source = ne.Uint16(data[2:4])
		h.srcLabel, h.dstLabel, h.hasLabels = ne.Uint32(data[16:20]), ne.Uint32(data[20:24]), true
		h.line = ne.Uint16(data[28:30])
		h.file = data[30]
		return off, nil
	case MessageTypePolicyVerdict:
		off := d.policyLayout(data)
		if len(data) < off {
			return 0, malformed("policy verdict notify: %d bytes, need %d", len(data), off)
		}
		h.sub = data[1]
		h.source = ne.Uint16(data[2:4])
		h.remote = ne.Uint32(data[16:20])
		h.verdict = int32(ne.Uint32(data[20:24]))
		h.pflags = data[27]
		h.auth = data[28]
		return off, nil
	default: // MessageTypeCapture
		if len(data) < debugCaptureLen {
			return 0, malformed("debug capture: %d bytes, need %d", len(data), debugCaptureLen)
		}
		h.sub = data[1]
		h.source = ne.Uint16(data[2:4])
		h.arg1 = ne.Uint32(data[16:20])
		return debugCaptureLen, nil
	}
}

// origIP returns the trace's original source address, rendered, and
// whether it is specified (neither 0.0.0.0 nor ::, in any form).
func (d *Decoder) origIP(h *header) (string, bool) {
	if h.flags&flagIPv6 != 0 {
		var a [16]byte = h.orig
		if isUnspecified16(a) {
			return "", false
		}
		return d.addrs.ip6(a), true
	}
	a := [4]byte(h.orig[:4])
	if a == [4]byte{} {
		return "", false
	}
	return d.addrs.ip4(a), true
}

func isUnspecified16(a [16]byte) bool {
	if a == [16]byte{} {
		return true
	}
	// ::ffff:0.0.0.0 equals 0.0.0.0 for net.IP.
	return a == [16]byte{10: 0xff, 11: 0xff}
}

func (d *Decoder) decodeL34(data []byte, f *flowpb.Flow) error {
	var h header
	off, err := d.parseHeader(data, &h)
	if err != nil {
		return err
	}

	// Packet layers.
	l3, v6, vxlan, geneve := false, false, false, false
	switch h.typ {
	case MessageTypeTrace, MessageTypeDrop:
		l3, v6 = h.flags&flagL3Dev != 0, h.flags&flagIPv6 != 0
		vxlan, geneve = h.flags&flagVXLAN != 0, h.flags&flagGeneve != 0
	case MessageTypePolicyVerdict:
		l3, v6 = h.pflags&0x80 != 0, h.pflags&0x04 != 0
	}
	out, in := &d.outer, &d.inner
	out.reset()
	in.reset()
	tunnel := false
	if pkt := data[off:]; len(pkt) > 0 {
		start := lkEthernet
		if l3 {
			start = lkIPv4
			if v6 {
				start = lkIPv6
			}
		}
		if err := out.decodeChain(pkt, start, false); err != nil {
			return malformed("%s: %w", typeName(h.typ), err)
		}
		if vxlan || geneve {
			var payload []byte
			if out.udpValid {
				payload = out.udp.payload
			}
			start := lkVXLAN
			if !vxlan {
				start = lkGeneve
			}
			if err := in.decodeChain(payload, start, true); err != nil {
				return malformed("%s: overlay: %w", typeName(h.typ), err)
			}
			tunnel = true
		}
	}

	spare := takeSpares(f)
	clearFlow(f)
	d.setTime(f, spare.time)

	if tunnel {
		t := spare.tunnel
		if t == nil {
			t = new(flowpb.Tunnel)
		}
		t.Protocol = flowpb.Tunnel_VXLAN
		t.Vni = in.vxlanVNI
		if !vxlan {
			t.Protocol, t.Vni = flowpb.Tunnel_GENEVE, in.genVNI
		}
		t.IP = d.fillIP(out, t.IP)
		t.L4 = fillL4(out, t.L4)
		f.Tunnel = t
		d.fillLayers(f, in, 1, &spare)
	} else {
		d.fillLayers(f, out, 0, &spare)
	}

	if h.typ == MessageTypeTrace {
		if h.sub != 0 {
			f.TraceObservationPoint = flowpb.TraceObservationPoint(h.sub)
		} else {
			f.TraceObservationPoint = flowpb.TraceObservationPoint_TO_ENDPOINT
		}
		if f.IP != nil {
			if s, ok := d.origIP(&h); ok && f.IP.Source != s {
				f.IP.SourceXlated = f.IP.Source
				f.IP.Source = s
			}
			f.IP.Encrypted = h.reason&traceEncryptedBit != 0
		}
	}

	// Identities: the datapath's, as Hubble reports them when it knows
	// nothing else about the addresses.
	var srcID, dstID uint32
	switch {
	case h.hasLabels:
		srcID, dstID = h.srcLabel, h.dstLabel
	case h.typ == MessageTypePolicyVerdict:
		if h.pflags&0x03 == 1 {
			srcID = h.remote
		} else {
			dstID = h.remote
		}
	}
	f.Source = endpoint(spare.src, srcID)
	f.Destination = endpoint(spare.dst, dstID)
	f.Type = flowpb.FlowType_L3_L4

	switch h.typ {
	case MessageTypeDrop:
		f.Verdict = flowpb.Verdict_DROPPED
		f.DropReason = uint32(h.sub)
		fi := spare.file
		if fi == nil {
			fi = new(flowpb.FileInfo)
		}
		fi.Name, fi.Line = bpfFileName(h.file), uint32(h.line)
		f.File = fi
		if h.source != 0 {
			// Hubble compares the source with the local endpoint
			// owning the source address; without endpoint knowledge
			// that ID is 0, and the drop counts as ingress.
			f.TrafficDirection = flowpb.TrafficDirection_INGRESS
		}
	case MessageTypeTrace:
		f.Verdict = flowpb.Verdict_FORWARDED
		r := h.reason & traceReasonMask
		switch {
		case r == traceReasonUnk:
			f.TraceReason = flowpb.TraceReason_TRACE_REASON_UNKNOWN
		case r < traceReasonUnk:
			f.TraceReason = flowpb.TraceReason(r + 1)
		default:
			f.TraceReason = flowpb.TraceReason(r)
		}
		if r != traceReasonUnk {
			if r != 6 && r != 7 { // SRv6 encap/decap: unknown
				f.IsReply = boolValue(spare.isReply, r == traceReasonReply)
			}
			if h.source != 0 {
				_, snat := d.origIP(&h)
				if r == traceReasonReply || snat {
					f.TrafficDirection = flowpb.TrafficDirection_EGRESS
				} else {
					f.TrafficDirection = flowpb.TrafficDirection_INGRESS
				}
			}
		}
		if h.ifindex != 0 {
			f.Interface = iface(spare.iface, h.ifindex)
		}
		if h.sub == 1 { // TO_PROXY
			f.ProxyPort = uint32(h.dstID)
		}
	case MessageTypePolicyVerdict:
		switch {
		case h.verdict < 0:
			f.Verdict = flowpb.Verdict_DROPPED
			f.DropReason = uint32(-h.verdict)
		case h.verdict > 0:
			f.Verdict = flowpb.Verdict_REDIRECTED
		case h.pflags&0x40 != 0:
			f.Verdict = flowpb.Verdict_AUDIT
		default:
			f.Verdict = flowpb.Verdict_FORWARDED
		}
		if h.verdict >= 0 {
			f.IsReply = boolValue(spare.isReply, false)
		}
		if h.pflags&0x03 == 1 {
			f.TrafficDirection = flowpb.TrafficDirection_INGRESS
		} else {
			f.TrafficDirection = flowpb.TrafficDirection_EGRESS
		}
		f.PolicyMatchType = uint32(h.pflags&0x38) >> 3
		f.AuthType = flowpb.AuthType(h.auth)
	case MessageTypeCapture:
		f.DebugCapturePoint = flowpb.DebugCapturePoint(h.sub)
		switch h.sub {
		case 4, 5, 6, 7, 10, 11: // DELIVERY, FROM_LB, AFTER_V46, AFTER_V64, SNAT_PRE, SNAT_POST
			if h.arg1 != 0 {
				f.Interface = iface(spare.iface, h.arg1)
			}
		case 8, 9: // PROXY_PRE, PROXY_POST: the port in network order
			f.ProxyPort = bits.ReverseBytes32(h.arg1)
		}
	}
	f.DropReasonDesc = flowpb.DropReason(f.DropReason)
	if f.IsReply != nil {
		f.Reply = f.IsReply.Value
	}
	f.EventType = eventType(spare.eventType, h.typ, h.sub)
	if h.ipTraceID != 0 {
		t := spare.ipTraceID
		if t == nil {
			t = new(flowpb.IPTraceID)
		}
		t.TraceId, t.IpOptionType = h.ipTraceID, d.IPTraceOptionType
		f.IpTraceId = t
	}
	return nil
}

func typeName(t uint8) string {
	switch t {
	case MessageTypeDrop:
		return "drop notify"
	case MessageTypeTrace:
		return "trace notify"
	case MessageTypePolicyVerdict:
		return "policy verdict notify"
	case MessageTypeCapture:
		return "debug capture"
	}
	return fmt.Sprintf("message type %d", t)
}

// spares are the nested messages of a flow, kept for reuse.
type spares struct {
	time      *timestamppb.Timestamp
	eth       *flowpb.Ethernet
	ip        *flowpb.IP
	l4        *flowpb.Layer4
	tunnel    *flowpb.Tunnel
	src, dst  *flowpb.Endpoint
	eventType *flowpb.CiliumEventType
	isReply   *wrapperspb.BoolValue
	iface     *flowpb.NetworkInterface
	file      *flowpb.FileInfo
	ipTraceID *flowpb.IPTraceID
}

func takeSpares(f *flowpb.Flow) spares {
	return spares{
		time: f.Time, eth: f.Ethernet, ip: f.IP, l4: f.L4, tunnel: f.Tunnel,
		src: f.Source, dst: f.Destination, eventType: f.EventType,
		isReply: f.IsReply, iface: f.Interface, file: f.File, ipTraceID: f.IpTraceId,
	}
}

// clearFlow resets every field of f. Repeated fields keep their backing
// arrays (empty and nil are the same in protobuf).
func clearFlow(f *flowpb.Flow) {
	f.Time = nil
	f.Uuid = ""
	f.Emitter = nil
	f.Verdict = 0
	f.DropReason = 0
	f.AuthType = 0
	f.Ethernet = nil
	f.IP = nil
	f.L4 = nil
	f.Tunnel = nil
	f.Source = nil
	f.Destination = nil
	f.Type = 0
	f.NodeName = ""
	f.NodeLabels = f.NodeLabels[:0]
	f.SourceNames = f.SourceNames[:0]
	f.DestinationNames = f.DestinationNames[:0]
	f.L7 = nil
	f.Reply = false
	f.EventType = nil
	f.SourceService = nil
	f.DestinationService = nil
	f.TrafficDirection = 0
	f.PolicyMatchType = 0
	f.TraceObservationPoint = 0
	f.TraceReason = 0
	f.File = nil
	f.IpTraceId = nil
	f.DropReasonDesc = 0
	f.IsReply = nil
	f.DebugCapturePoint = 0
	f.Interface = nil
	f.ProxyPort = 0
	f.TraceContext = nil
	f.SockXlatePoint = 0
	f.SocketCookie = 0
	f.CgroupId = 0
	f.Summary = ""
	f.Extensions = nil
	f.EgressAllowedBy = f.EgressAllowedBy[:0]
	f.IngressAllowedBy = f.IngressAllowedBy[:0]
	f.EgressDeniedBy = f.EgressDeniedBy[:0]
	f.IngressDeniedBy = f.IngressDeniedBy[:0]
	f.PolicyLog = f.PolicyLog[:0]
	f.Aggregate = nil
}

// setTime sets f.Time to the decode time, reusing ts; with NoTime it puts
// ts back for the caller to overwrite.
func (d *Decoder) setTime(f *flowpb.Flow, ts *timestamppb.Timestamp) {
	if d.NoTime {
		f.Time = ts
		return
	}
	t := d.now()
	if ts == nil {
		ts = new(timestamppb.Timestamp)
	}
	ts.Seconds, ts.Nanos = t.Unix(), int32(t.Nanosecond())
	f.Time = ts
}

func endpoint(e *flowpb.Endpoint, identity uint32) *flowpb.Endpoint {
	if e == nil {
		return &flowpb.Endpoint{Identity: identity}
	}
	e.ID = 0
	e.Identity = identity
	e.ClusterName = ""
	e.Namespace = ""
	e.Labels = e.Labels[:0]
	e.PodName = ""
	e.Workloads = e.Workloads[:0]
	return e
}

func boolValue(b *wrapperspb.BoolValue, v bool) *wrapperspb.BoolValue {
	if b == nil {
		return &wrapperspb.BoolValue{Value: v}
	}
	b.Value = v
	return b
}

func iface(n *flowpb.NetworkInterface, index uint32) *flowpb.NetworkInterface {
	if n == nil {
		return &flowpb.NetworkInterface{Index: index}
	}
	n.Index, n.Name = index, ""
	return n
}

func eventType(e *flowpb.CiliumEventType, typ, sub uint8) *flowpb.CiliumEventType {
	if e == nil {
		e = new(flowpb.CiliumEventType)
	}
	e.Type, e.SubType = int32(typ), int32(sub)
	return e
}

// fillLayers sets Ethernet, IP, L4 and Summary from the decoded chain;
// skip is the number of leading layers that do not count (the overlay
// header).
func (d *Decoder) fillLayers(f *flowpb.Flow, l *layers, skip int, sp *spares) {
	if l.count <= skip {
		return
	}
	if l.hasEth {
		e := sp.eth
		if e == nil {
			e = new(flowpb.Ethernet)
		}
		e.Source, e.Destination = d.addrs.macString(l.eth.src), d.addrs.macString(l.eth.dst)
		f.Ethernet = e
	}
	f.IP = d.fillIP(l, sp.ip)
	f.L4 = fillL4(l, sp.l4)
	switch l.last {
	case lkTCP:
		f.Summary = tcpSummary[l.tcp.flags]
	case lkICMPv4:
		f.Summary = icmpSummary(false, l.icmp4.t, l.icmp4.c)
	case lkICMPv6:
		f.Summary = icmpSummary(true, l.icmp6.t, l.icmp6.c)
	case lkVRRP:
		f.Summary = vrrpSummary(l.vrrp.typ)
	case lkIGMP:
		f.Summary = igmpSummary(l.igmp.typ)
	default:
		f.Summary = layerNames[l.last]
	}
}

// fillIP returns the IP message for the chain's last IP layer, reusing ip,
// or nil if the chain has none.
func (d *Decoder) fillIP(l *layers, ip *flowpb.IP) *flowpb.IP {
	if l.ip == lkNone {
		return nil
	}
	if ip == nil {
		ip = new(flowpb.IP)
	}
	if l.ip == lkIPv4 {
		ip.Source, ip.Destination = d.addrs.ip4(l.ip4.src), d.addrs.ip4(l.ip4.dst)
		ip.IpVersion = flowpb.IPVersion_IPv4
	} else {
		ip.Source, ip.Destination = d.addrs.ip6(l.ip6.src), d.addrs.ip6(l.ip6.dst)
		ip.IpVersion = flowpb.IPVersion_IPv6
	}
	ip.SourceXlated = ""
	ip.Encrypted = false
	return ip
}

// fillL4 returns the Layer4 message for the chain's last L4 layer, reusing
// l4 and its protocol message when the protocol is the same.
func fillL4(l *layers, l4 *flowpb.Layer4) *flowpb.Layer4 {
	if l.l4 == lkNone {
		return nil
	}
	if l4 == nil {
		l4 = new(flowpb.Layer4)
	}
	switch l.l4 {
	case lkTCP:
		setTCP(l4, uint32(l.tcp.sport), uint32(l.tcp.dport), true, l.tcp.flags)
	case lkUDP:
		setUDP(l4, uint32(l.udp.sport), uint32(l.udp.dport))
	case lkSCTP:
		w, ok := l4.Protocol.(*flowpb.Layer4_SCTP)
		if !ok || w.SCTP == nil {
			w = &flowpb.Layer4_SCTP{SCTP: new(flowpb.SCTP)}
			l4.Protocol = w
		}
		w.SCTP.SourcePort, w.SCTP.DestinationPort = uint32(l.sctp.sport), uint32(l.sctp.dport)
		w.SCTP.ChunkType = flowpb.SCTPChunkType(l.sctp.chunk)
	case lkICMPv4:
		w, ok := l4.Protocol.(*flowpb.Layer4_ICMPv4)
		if !ok || w.ICMPv4 == nil {
			w = &flowpb.Layer4_ICMPv4{ICMPv4: new(flowpb.ICMPv4)}
			l4.Protocol = w
		}
		w.ICMPv4.Type, w.ICMPv4.Code = uint32(l.icmp4.t), uint32(l.icmp4.c)
	case lkICMPv6:
		w, ok := l4.Protocol.(*flowpb.Layer4_ICMPv6)
		if !ok || w.ICMPv6 == nil {
			w = &flowpb.Layer4_ICMPv6{ICMPv6: new(flowpb.ICMPv6)}
			l4.Protocol = w
		}
		w.ICMPv6.Type, w.ICMPv6.Code = uint32(l.icmp6.t), uint32(l.icmp6.c)
	case lkVRRP:
		w, ok := l4.Protocol.(*flowpb.Layer4_VRRP)
		if !ok || w.VRRP == nil {
			w = &flowpb.Layer4_VRRP{VRRP: new(flowpb.VRRP)}
			l4.Protocol = w
		}
		w.VRRP.Type, w.VRRP.Vrid, w.VRRP.Priority = uint32(l.vrrp.typ), uint32(l.vrrp.vrid), uint32(l.vrrp.prio)
	case lkIGMP:
		w, ok := l4.Protocol.(*flowpb.Layer4_IGMP)
		if !ok || w.IGMP == nil {
			w = &flowpb.Layer4_IGMP{IGMP: new(flowpb.IGMP)}
			l4.Protocol = w
		}
		w.IGMP.Type = uint32(l.igmp.typ)
		w.IGMP.GroupAddress = igmpGroup(l.igmp.group)
	}
	return l4
}

func igmpGroup(a [4]byte) string {
	return netip.AddrFrom4(a).String() // not cached: IGMP is rare
}

func setTCP(l4 *flowpb.Layer4, sport, dport uint32, withFlags bool, flags uint16) {
	w, ok := l4.Protocol.(*flowpb.Layer4_TCP)
	if !ok || w.TCP == nil {
		w = &flowpb.Layer4_TCP{TCP: new(flowpb.TCP)}
		l4.Protocol = w
	}
	t := w.TCP
	t.SourcePort, t.DestinationPort = sport, dport
	if !withFlags {
		t.Flags = nil
		return
	}
	fl := t.Flags
	if fl == nil {
		fl = new(flowpb.TCPFlags)
		t.Flags = fl
	}
	fl.SYN = flags&(1<<0) != 0
	fl.ACK = flags&(1<<1) != 0
	fl.RST = flags&(1<<2) != 0
	fl.FIN = flags&(1<<3) != 0
	fl.PSH = flags&(1<<4) != 0
	fl.URG = flags&(1<<5) != 0
	fl.ECE = flags&(1<<6) != 0
	fl.CWR = flags&(1<<7) != 0
	fl.NS = flags&(1<<8) != 0
}

func setUDP(l4 *flowpb.Layer4, sport, dport uint32) {
	w, ok := l4.Protocol.(*flowpb.Layer4_UDP)
	if !ok || w.UDP == nil {
		w = &flowpb.Layer4_UDP{UDP: new(flowpb.UDP)}
		l4.Protocol = w
	}
	w.UDP.SourcePort, w.UDP.DestinationPort = sport, dport
}
