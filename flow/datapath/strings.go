package datapath

import (
	"net/netip"
	"strconv"
	"strings"
	"unsafe"
)

// Strings that Hubble writes into flows, built once.

var (
	// tcpSummary is "TCP Flags: <flags>" for every combination of the nine
	// flags, indexed by tcpFlagMask order (SYN, ACK, RST, FIN, PSH, URG, ECE,
	// CWR, NS as bits 0..8), the order Hubble lists them in.
	tcpSummary [512]string
)

func init() {
	names := [...]string{"SYN", "ACK", "RST", "FIN", "PSH", "URG", "ECE", "CWR", "NS"}
	var parts []string
	for m := range tcpSummary {
		parts = parts[:0]
		for i, n := range names {
			if m&(1<<i) != 0 {
				parts = append(parts, n)
			}
		}
		tcpSummary[m] = "TCP Flags: " + strings.Join(parts, ", ")
	}
}

// bpfFiles names the BPF source file ids of drop notifications (Cilium
// v1.19/v1.20 numbering).
var bpfFiles = map[uint8]string{
	1: "bpf_host.c", 2: "bpf_lxc.c", 3: "bpf_overlay.c", 4: "bpf_xdp.c",
	5: "bpf_sock.c", 6: "bpf_network.c", 7: "bpf_wireguard.c",
	101: "drop.h", 102: "srv6.h", 103: "icmp6.h", 104: "nodeport.h",
	105: "lb.h", 106: "mcast.h", 107: "ipv4.h", 108: "conntrack.h",
	109: "local_delivery.h", 110: "trace.h", 111: "encap.h",
	112: "host_firewall.h", 113: "nodeport_egress.h", 114: "ipv6.h",
	115: "classifiers.h",
}

var unknownFiles [256]string

func init() {
	for i := range unknownFiles {
		unknownFiles[i] = "unknown(" + strconv.Itoa(i) + ")"
	}
}

func bpfFileName(id uint8) string {
	if n, ok := bpfFiles[id]; ok {
		return n
	}
	return unknownFiles[id]
}

type typeCodeInfo struct {
	typ   string
	codes map[uint8]string // nil: the type has no code names
}

var icmpv4Info = map[uint8]typeCodeInfo{
	3: {"DestinationUnreachable", map[uint8]string{
		0: "Net", 1: "Host", 2: "Protocol", 3: "Port", 4: "FragmentationNeeded",
		5: "SourceRoutingFailed", 6: "NetUnknown", 7: "HostUnknown", 8: "SourceIsolated",
		9: "NetAdminProhibited", 10: "HostAdminProhibited", 11: "NetTOS", 12: "HostTOS",
		13: "CommAdminProhibited", 14: "HostPrecedence", 15: "PrecedenceCutoff",
	}},
	11: {"TimeExceeded", map[uint8]string{0: "TTLExceeded", 1: "FragmentReassemblyTimeExceeded"}},
	12: {"ParameterProblem", map[uint8]string{0: "PointerIndicatesError", 1: "MissingOption", 2: "BadLength"}},
	4:  {"SourceQuench", nil},
	5:  {"Redirect", map[uint8]string{0: "Net", 1: "Host", 2: "TOS+Net", 3: "TOS+Host"}},
	8:  {"EchoRequest", nil},
	0:  {"EchoReply", nil},
	13: {"TimestampRequest", nil},
	14: {"TimestampReply", nil},
	15: {"InfoRequest", nil},
	16: {"InfoReply", nil},
	10: {"RouterSolicitation", nil},
	9:  {"RouterAdvertisement", nil},
	17: {"AddressMaskRequest", nil},
	18: {"AddressMaskReply", nil},
}

var icmpv6Info = map[uint8]typeCodeInfo{
	1: {"DestinationUnreachable", map[uint8]string{
		0: "NoRouteToDst", 1: "AdminProhibited", 2: "BeyondScopeOfSrc", 3: "AddressUnreachable",
		4: "PortUnreachable", 5: "SrcAddressFailedPolicy", 6: "RejectRouteToDst",
	}},
	2:   {"PacketTooBig", nil},
	3:   {"TimeExceeded", map[uint8]string{0: "HopLimitExceeded", 1: "FragmentReassemblyTimeExceeded"}},
	4:   {"ParameterProblem", map[uint8]string{0: "ErroneousHeaderField", 1: "UnrecognizedNextHeader", 2: "UnrecognizedIPv6Option"}},
	128: {"EchoRequest", nil},
	129: {"EchoReply", nil},
	133: {"RouterSolicitation", nil},
	134: {"RouterAdvertisement", nil},
	135: {"NeighborSolicitation", nil},
	136: {"NeighborAdvertisement", nil},
	137: {"Redirect", nil},
}

// typeCodeString renders an ICMP type and code as gopacket does.
func typeCodeString(info map[uint8]typeCodeInfo, t, c uint8) string {
	ti, ok := info[t]
	if !ok {
		return strconv.Itoa(int(t)) + "(" + strconv.Itoa(int(c)) + ")"
	}
	if ti.codes == nil && c == 0 {
		return ti.typ
	}
	if cs, ok := ti.codes[c]; ok && ti.codes != nil {
		return ti.typ + "(" + cs + ")"
	}
	return ti.typ + "(Code: " + strconv.Itoa(int(c)) + ")"
}

// icmpSummaries holds "ICMPv4 <type(code)>" and "ICMPv6 <type(code)>"
// for every code of the types gopacket names, keyed by type<<8|code.
var icmpSummaries [2]map[uint16]string

func init() {
	for i, info := range []map[uint8]typeCodeInfo{icmpv4Info, icmpv6Info} {
		prefix := [2]string{"ICMPv4 ", "ICMPv6 "}[i]
		m := make(map[uint16]string, len(info)*256)
		for t := range info {
			for c := 0; c < 256; c++ {
				m[uint16(t)<<8|uint16(c)] = prefix + typeCodeString(info, t, uint8(c))
			}
		}
		icmpSummaries[i] = m
	}
}

func icmpSummary(v6 bool, t, c uint8) string {
	i, prefix, info := 0, "ICMPv4 ", icmpv4Info
	if v6 {
		i, prefix, info = 1, "ICMPv6 ", icmpv6Info
	}
	if s, ok := icmpSummaries[i][uint16(t)<<8|uint16(c)]; ok {
		return s
	}
	return prefix + typeCodeString(info, t, c)
}

func vrrpSummary(typ uint8) string {
	if typ == 1 {
		return "VRRP VRRPv2 Advertisement"
	}
	return "VRRP "
}

func igmpSummary(typ uint8) string {
	switch typ {
	case 0x11:
		return "IGMP IGMP Membership Query"
	case 0x12:
		return "IGMP IGMPv1 Membership Report"
	case 0x16:
		return "IGMP IGMPv2 Membership Report"
	case 0x22:
		return "IGMP IGMPv3 Membership Report"
	case 0x17:
		return "IGMP Leave Group"
	}
	return "IGMP "
}

// addrCache maps recently seen addresses to their strings so that a steady
// stream of flows between the same hosts does not allocate. It is a small
// direct-mapped cache: a miss overwrites the slot.
//
// A miss formats the address into slab, a block that is only ever appended
// to (never rewritten, so the strings in it are immutable), and a full
// slab is left to the garbage collector and replaced: many distinct
// addresses cost one allocation per block instead of one per address. A
// string kept beyond its flow keeps its block alive, hence a small block.
type addrCache struct {
	slab []byte
	v4   [256]struct {
		k [4]byte
		s string
	}
	v6 [256]struct {
		k [16]byte
		s string
	}
	macs [256]struct {
		k [6]byte
		s string
	}
}

func (c *addrCache) ip4(a [4]byte) string {
	h := a[0] ^ a[1]*7 ^ a[2]*31 ^ a[3]*131
	e := &c.v4[h]
	if e.s != "" && e.k == a {
		return e.s
	}
	var buf [len("255.255.255.255")]byte
	e.k, e.s = a, c.str(netip.AddrFrom4(a).AppendTo(buf[:0]))
	return e.s
}

// ip6 renders a 16-byte address as net.IP.String does: IPv4-mapped
// addresses in dotted form.
func (c *addrCache) ip6(a [16]byte) string {
	var h byte
	for i := 0; i < 16; i++ {
		h = h*31 + a[i]
	}
	e := &c.v6[h]
	if e.s != "" && e.k == a {
		return e.s
	}
	var buf [len("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff")]byte
	e.k, e.s = a, c.str(netip.AddrFrom16(a).Unmap().AppendTo(buf[:0]))
	return e.s
}

const hexDigits = "0123456789abcdef"

func (c *addrCache) macString(a [6]byte) string {
	h := a[0] ^ a[1]*3 ^ a[2]*7 ^ a[3]*13 ^ a[4]*31 ^ a[5]*131
	e := &c.macs[h]
	if e.s != "" && e.k == a {
		return e.s
	}
	var b [17]byte
	for i, x := range a {
		if i > 0 {
			b[i*3-1] = ':'
		}
		b[i*3] = hexDigits[x>>4]
		b[i*3+1] = hexDigits[x&0xf]
	}
	e.k, e.s = a, c.str(b[:])
	return e.s
}

// slabSize is the size of one block of address strings (≈100 addresses).
const slabSize = 2048

// str returns b as a string stored in the slab.
func (c *addrCache) str(b []byte) string {
	if len(b) == 0 {
		return ""
	}
	if cap(c.slab)-len(c.slab) < len(b) {
		c.slab = make([]byte, 0, max(slabSize, len(b)))
	}
	off := len(c.slab)
	c.slab = append(c.slab, b...)
	return unsafe.String(&c.slab[off], len(b))
}
