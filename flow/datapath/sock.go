package datapath

import (
	"encoding/binary"

	flowpb "github.com/flowbus/flowbus/flow"
)

// decodeSock decodes a TraceSockNotify (socket-level load-balancing
// translation) into a SOCK flow, as Hubble's sock parser does. The source
// address comes from agent state (the pod of the cgroup) and stays empty.
func (d *Decoder) decodeSock(data []byte, f *flowpb.Flow) error {
	if d.SkipSockTrace {
		return ErrSkip
	}
	ne := binary.NativeEndian
	var (
		xlate, proto, flags uint8
		dport               uint16
		cookie, cgroup      uint64
		dst                 [16]byte
	)
	if d.SockTraceVersion == SockTraceV1_18 {
		if len(data) < sockV1_18Len {
			return malformed("trace sock notify (v1.18 layout): %d bytes, need %d", len(data), sockV1_18Len)
		}
		xlate = data[1]
		copy(dst[:], data[2:18])
		dport = ne.Uint16(data[18:20])
		cookie = ne.Uint64(data[20:28])
		cgroup = ne.Uint64(data[28:36])
		proto, flags = data[36], data[37]
	} else {
		if len(data) < sockV1_19Len {
			return malformed("trace sock notify: %d bytes, need %d", len(data), sockV1_19Len)
		}
		xlate, proto, flags = data[1], data[2], data[3]
		dport = ne.Uint16(data[4:6])
		cookie = ne.Uint64(data[8:16])
		cgroup = ne.Uint64(data[16:24])
		copy(dst[:], data[24:40])
	}

	spare := takeSpares(f)
	clearFlow(f)
	d.setTime(f, spare.time)

	ip := spare.ip
	if ip == nil {
		ip = new(flowpb.IP)
	}
	ip.SourceXlated, ip.Encrypted = "", false
	var dstStr string
	if flags&1 != 0 {
		ip.IpVersion = flowpb.IPVersion_IPv6
		dstStr = d.addrs.ip6(dst)
	} else {
		ip.IpVersion = flowpb.IPVersion_IPv4
		dstStr = d.addrs.ip4([4]byte(dst[:4]))
	}
	srcStr, sport := "", uint16(0)
	rev := xlate == 3 || xlate == 4 // reverse direction: swap
	if rev {
		srcStr, dstStr = dstStr, srcStr
		sport, dport = dport, sport
	}
	ip.Source, ip.Destination = srcStr, dstStr
	f.IP = ip

	switch xlate {
	case 1, 3:
		f.Verdict = flowpb.Verdict_TRACED
	case 2, 4:
		f.Verdict = flowpb.Verdict_TRANSLATED
	}
	switch proto {
	case 1:
		l4 := spare.l4
		if l4 == nil {
			l4 = new(flowpb.Layer4)
		}
		setTCP(l4, uint32(sport), uint32(dport), false, 0)
		f.L4 = l4
		f.Summary = "TCP"
	case 2:
		l4 := spare.l4
		if l4 == nil {
			l4 = new(flowpb.Layer4)
		}
		setUDP(l4, uint32(sport), uint32(dport))
		f.L4 = l4
		f.Summary = "UDP"
	default:
		f.Summary = "Unknown"
	}
	f.Source = endpoint(spare.src, 0)
	f.Destination = endpoint(spare.dst, 0)
	f.Type = flowpb.FlowType_SOCK
	f.EventType = eventType(spare.eventType, MessageTypeTraceSock, xlate)
	f.SockXlatePoint = flowpb.SocketTranslationPoint(xlate)
	f.SocketCookie = cookie
	f.CgroupId = cgroup
	return nil
}
