package datapath

import (
	"encoding/binary"
	"errors"
)

// Packet decoding. Hubble decodes the captured packet bytes with gopacket's
// DecodingLayerParser (IgnoreUnsupported) over a fixed set of layers; this
// file reproduces that behaviour by hand, without gopacket: the same layers
// are recognised, the same inputs are errors (an error drops the whole
// event in Hubble), and when a layer type repeats (IP-in-IP, nested
// overlays) the last one decoded wins, as in gopacket's reused layer
// structs. The bounds checks mirror where gopacket would fail or panic
// (its parser turns panics into errors).

type layerKind uint8

const (
	lkNone layerKind = iota
	lkEthernet
	lkIPv4
	lkIPv6
	lkTCP
	lkUDP
	lkSCTP
	lkICMPv4
	lkICMPv6
	lkVRRP
	lkIGMP
	lkVXLAN
	lkGeneve
)

var layerNames = [...]string{
	lkNone: "", lkEthernet: "Ethernet", lkIPv4: "IPv4", lkIPv6: "IPv6",
	lkTCP: "TCP", lkUDP: "UDP", lkSCTP: "SCTP", lkICMPv4: "ICMPv4",
	lkICMPv6: "ICMPv6", lkVRRP: "VRRP", lkIGMP: "IGMP", lkVXLAN: "VXLAN",
	lkGeneve: "Geneve",
}

// layers holds the last decoded value of every layer type, and what the
// flow needs from the chain: whether an Ethernet layer was seen, the last
// IP and L4 layer types, and the last layer type (for the summary).
type layers struct {
	eth struct{ src, dst [6]byte }
	ip4 struct{ src, dst [4]byte }
	ip6 struct{ src, dst [16]byte }
	tcp struct {
		sport, dport uint16
		flags        uint16 // tcpSummary index
	}
	udp struct {
		sport, dport uint16
		payload      []byte
	}
	sctp struct {
		sport, dport uint16
		chunk        int32 // SCTPChunkType
	}
	icmp4, icmp6 struct{ t, c uint8 }
	vrrp         struct{ typ, vrid, prio uint8 }
	igmp         struct {
		typ   uint8
		group [4]byte
	}
	vxlanVNI, genVNI uint32

	hasEth   bool
	ip, l4   layerKind
	last     layerKind
	count    int
	udpValid bool // the UDP payload belongs to this chain
}

func (l *layers) reset() {
	l.hasEth, l.ip, l.l4, l.last, l.count, l.udpValid = false, lkNone, lkNone, lkNone, 0, false
	l.udp.payload = nil
}

// Errors of packet decoding. They are static so that a malformed packet
// costs no allocation; Decode wraps them with the message type.
var (
	errEthShort     = errors.New("ethernet: fewer than 14 bytes")
	errIPv4Short    = errors.New("ipv4: fewer than 20 bytes")
	errIPv4Length   = errors.New("ipv4: invalid total length")
	errIPv4IHL      = errors.New("ipv4: invalid header length")
	errIPv4Trunc    = errors.New("ipv4: header truncated")
	errIPv4Option   = errors.New("ipv4: invalid option")
	errIPv6Short    = errors.New("ipv6: fewer than 40 bytes")
	errIPv6HopByHop = errors.New("ipv6: invalid hop-by-hop header")
	errIPv6Jumbo    = errors.New("ipv6: invalid jumbogram length")
	errIPv6Length   = errors.New("ipv6: payload length 0")
	errTCPShort     = errors.New("tcp: fewer than 20 bytes")
	errTCPOffset    = errors.New("tcp: invalid data offset")
	errTCPOption    = errors.New("tcp: invalid option")
	errUDPShort     = errors.New("udp: fewer than 8 bytes")
	errUDPLength    = errors.New("udp: length below 8")
	errSCTPShort    = errors.New("sctp: fewer than 12 bytes")
	errICMPv4Short  = errors.New("icmpv4: fewer than 8 bytes")
	errICMPv6Short  = errors.New("icmpv6: fewer than 4 bytes")
	errVRRP         = errors.New("vrrp: invalid packet")
	errIGMPShort    = errors.New("igmp: fewer than 8 bytes")
	errVXLANShort   = errors.New("vxlan: fewer than 8 bytes")
	errGeneve       = errors.New("geneve: invalid header")
)

// ethNext maps an EtherType to the next layer.
func ethNext(t uint16) layerKind {
	switch t {
	case 0x0800, 0xffff:
		return lkIPv4
	case 0x86dd:
		return lkIPv6
	case 0x6558:
		return lkEthernet
	}
	return lkNone
}

// ipNext maps an IP protocol number to the next layer.
func ipNext(p uint8) layerKind {
	switch p {
	case 1:
		return lkICMPv4
	case 2:
		return lkIGMP
	case 4, 94:
		return lkIPv4
	case 6:
		return lkTCP
	case 17:
		return lkUDP
	case 41:
		return lkIPv6
	case 58:
		return lkICMPv6
	case 112:
		return lkVRRP
	case 132:
		return lkSCTP
	}
	return lkNone
}

// decodeChain decodes data starting with layer typ, as gopacket's
// DecodingLayerParser does: decode, record, go on with the payload while
// there is one and the next layer is known. overlay enables the VXLAN and
// Geneve layers (UDP ports 4789 and 6081).
func (l *layers) decodeChain(data []byte, typ layerKind, overlay bool) error {
	for {
		payload, next, err := l.decodeLayer(typ, data, overlay)
		if err != nil {
			return err
		}
		l.record(typ)
		if len(payload) == 0 || next == lkNone {
			return nil
		}
		typ, data = next, payload
	}
}

func (l *layers) record(typ layerKind) {
	l.count++
	l.last = typ
	switch typ {
	case lkEthernet:
		l.hasEth = true
	case lkIPv4, lkIPv6:
		l.ip = typ
	case lkTCP, lkUDP, lkSCTP, lkICMPv4, lkICMPv6, lkVRRP, lkIGMP:
		l.l4 = typ
	}
}

func (l *layers) decodeLayer(typ layerKind, data []byte, overlay bool) (payload []byte, next layerKind, err error) {
	switch typ {
	case lkEthernet:
		if len(data) < 14 {
			return nil, 0, errEthShort
		}
		copy(l.eth.dst[:], data[0:6])
		copy(l.eth.src[:], data[6:12])
		et := binary.BigEndian.Uint16(data[12:14])
		payload = data[14:]
		if et < 0x0600 { // 802.3 length: LLC, not decoded further
			if len(payload) > int(et) {
				payload = payload[:et]
			}
			return payload, lkNone, nil
		}
		return payload, ethNext(et), nil
	case lkIPv4:
		return l.decodeIPv4(data)
	case lkIPv6:
		return l.decodeIPv6(data)
	case lkTCP:
		return l.decodeTCP(data)
	case lkUDP:
		if len(data) < 8 {
			return nil, 0, errUDPShort
		}
		l.udp.sport = binary.BigEndian.Uint16(data[0:2])
		l.udp.dport = binary.BigEndian.Uint16(data[2:4])
		ulen := int(binary.BigEndian.Uint16(data[4:6]))
		switch {
		case ulen >= 8:
			if ulen > len(data) {
				ulen = len(data)
			}
			payload = data[8:ulen]
		case ulen == 0:
			payload = data[8:]
		default:
			return nil, 0, errUDPLength
		}
		l.udp.payload = payload
		l.udpValid = true
		if overlay {
			// gopacket picks the layer of the destination port if it
			// knows one, else the one of the source port.
			p := l.udp.dport
			if !udpKnownPort(p) {
				p = l.udp.sport
			}
			next = udpOverlayNext(p)
		}
		return payload, next, nil
	case lkSCTP:
		if len(data) < 12 {
			return nil, 0, errSCTPShort
		}
		l.sctp.sport = binary.BigEndian.Uint16(data[0:2])
		l.sctp.dport = binary.BigEndian.Uint16(data[2:4])
		payload = data[12:]
		l.sctp.chunk = sctpChunkType(payload)
		return payload, lkNone, nil
	case lkICMPv4:
		if len(data) < 8 {
			return nil, 0, errICMPv4Short
		}
		l.icmp4.t, l.icmp4.c = data[0], data[1]
		return data[8:], lkNone, nil
	case lkICMPv6:
		if len(data) < 4 {
			return nil, 0, errICMPv6Short
		}
		l.icmp6.t, l.icmp6.c = data[0], data[1]
		return data[4:], lkNone, nil
	case lkVRRP:
		// gopacket checks the type first, then reads the fixed header
		// and one 4-byte address per count (slicing up to the capacity).
		if len(data) < 1 || data[0]&0x0f != 1 {
			return nil, 0, errVRRP
		}
		if len(data) < 4 || data[3] < 1 || len(data) < 6 || cap(data) < 8+4*int(data[3]) {
			return nil, 0, errVRRP
		}
		l.vrrp.typ, l.vrrp.vrid, l.vrrp.prio = data[0]&0x0f, data[1], data[2]
		return nil, lkNone, nil
	case lkIGMP:
		if len(data) < 8 {
			return nil, 0, errIGMPShort
		}
		l.igmp.typ = data[0]
		copy(l.igmp.group[:], data[4:8])
		return nil, lkNone, nil
	case lkVXLAN:
		if len(data) < 8 {
			return nil, 0, errVXLANShort
		}
		l.vxlanVNI = uint32(data[4])<<16 | uint32(data[5])<<8 | uint32(data[6])
		return data[8:], lkEthernet, nil
	case lkGeneve:
		return l.decodeGeneve(data)
	}
	return nil, lkNone, nil
}

// udpKnownPort reports whether gopacket maps a UDP port to a layer.
func udpKnownPort(p uint16) bool {
	switch p {
	case 53, 67, 68, 123, 546, 547, 623, 666, 1000, 1812, 2123, 2152, 2222,
		3784, 3868, 4789, 5060, 5082, 5083, 6081, 6343, 44818:
		return true
	}
	return false
}

func udpOverlayNext(port uint16) layerKind {
	switch port {
	case 4789:
		return lkVXLAN
	case 6081:
		return lkGeneve
	}
	return lkNone
}

func sctpChunkType(payload []byte) int32 {
	if len(payload) == 0 {
		return 0
	}
	switch payload[0] {
	case 1: // INIT
		return 1
	case 2: // INIT ACK
		return 2
	case 7: // SHUTDOWN
		return 3
	case 8: // SHUTDOWN ACK
		return 4
	case 14: // SHUTDOWN COMPLETE
		return 5
	case 6: // ABORT
		return 6
	}
	return 0 // UNSUPPORTED
}

func (l *layers) decodeIPv4(data []byte) ([]byte, layerKind, error) {
	if len(data) < 20 {
		return nil, 0, errIPv4Short
	}
	length := int(binary.BigEndian.Uint16(data[2:4]))
	ihl := int(data[0] & 0x0f)
	if length == 0 { // TSO: the length is the captured length
		length = int(uint16(len(data)))
	}
	switch {
	case length < 20:
		return nil, 0, errIPv4Length
	case ihl < 5:
		return nil, 0, errIPv4IHL
	case ihl*4 > length:
		return nil, 0, errIPv4IHL
	}
	if len(data) > length {
		data = data[:length]
	} else if len(data) < length && ihl*4 > len(data) {
		return nil, 0, errIPv4Trunc
	}
	opts := data[20 : ihl*4]
options:
	for len(opts) > 0 {
		switch opts[0] {
		case 0: // end of options
			break options
		case 1: // no-op
			opts = opts[1:]
		default:
			if len(opts) < 2 {
				return nil, 0, errIPv4Option
			}
			ol := int(opts[1])
			if len(opts) < ol || ol <= 2 {
				return nil, 0, errIPv4Option
			}
			opts = opts[ol:]
		}
	}
	copy(l.ip4.src[:], data[12:16])
	copy(l.ip4.dst[:], data[16:20])
	ff := binary.BigEndian.Uint16(data[6:8])
	payload := data[ihl*4:]
	if (ff>>13)&1 != 0 || ff&0x1fff != 0 {
		// A fragment: gopacket hands it to its Fragment layer, which
		// Hubble does not decode, so there is no L4 for any fragment.
		return payload, lkNone, nil
	}
	return payload, ipNext(data[9]), nil
}

func (l *layers) decodeIPv6(data []byte) ([]byte, layerKind, error) {
	if len(data) < 40 {
		return nil, 0, errIPv6Short
	}
	length := int(binary.BigEndian.Uint16(data[4:6]))
	nh := data[6]
	copy(l.ip6.src[:], data[8:24])
	copy(l.ip6.dst[:], data[24:40])
	payload := data[40:]
	if nh == 0 { // hop-by-hop options are part of the IPv6 layer
		if len(payload) < 2 {
			return nil, 0, errIPv6HopByHop
		}
		hnh := payload[0]
		actual := int(payload[1])*8 + 8
		if len(payload) < actual {
			return nil, 0, errIPv6HopByHop
		}
		var jumboData []byte
		jumboFound := false
		for off := 2; off < actual; {
			d := payload[off:]
			if len(d) < 2 {
				return nil, 0, errIPv6HopByHop
			}
			if d[0] == 0 { // Pad1
				off++
				continue
			}
			al := int(d[1]) + 2
			if len(d) < al {
				return nil, 0, errIPv6HopByHop
			}
			if d[0] == 0xc2 && !jumboFound {
				jumboFound, jumboData = true, d[2:al]
			}
			off += al
		}
		jumbo, jumboLen := false, 0
		if jumboFound {
			if len(jumboData) != 4 {
				return nil, 0, errIPv6Jumbo
			}
			jl := binary.BigEndian.Uint32(jumboData)
			if jl <= 65535 {
				return nil, 0, errIPv6Jumbo
			}
			jumbo, jumboLen = true, int(jl)
		}
		switch {
		case jumbo && length == 0:
			// gopacket keeps the hop-by-hop header in the payload here.
			if jumboLen > len(payload) {
				jumboLen = len(payload)
			}
			return payload[:jumboLen], ipNext(hnh), nil
		case jumbo:
			return nil, 0, errIPv6Jumbo
		case length == 0:
			return nil, 0, errIPv6Length
		}
		payload = payload[actual:]
		nh = hnh
	}
	if length == 0 {
		return nil, 0, errIPv6Length
	}
	if length < len(payload) {
		payload = payload[:length]
	}
	return payload, ipNext(nh), nil
}

func (l *layers) decodeTCP(data []byte) ([]byte, layerKind, error) {
	if len(data) < 20 {
		return nil, 0, errTCPShort
	}
	l.tcp.sport = binary.BigEndian.Uint16(data[0:2])
	l.tcp.dport = binary.BigEndian.Uint16(data[2:4])
	f := data[13]
	// tcpSummary order: SYN ACK RST FIN PSH URG ECE CWR NS.
	var m uint16
	if f&0x02 != 0 {
		m |= 1 << 0
	}
	if f&0x10 != 0 {
		m |= 1 << 1
	}
	if f&0x04 != 0 {
		m |= 1 << 2
	}
	if f&0x01 != 0 {
		m |= 1 << 3
	}
	if f&0x08 != 0 {
		m |= 1 << 4
	}
	if f&0x20 != 0 {
		m |= 1 << 5
	}
	if f&0x40 != 0 {
		m |= 1 << 6
	}
	if f&0x80 != 0 {
		m |= 1 << 7
	}
	if data[12]&0x01 != 0 {
		m |= 1 << 8
	}
	l.tcp.flags = m
	off := int(data[12]>>4) * 4
	if off < 20 {
		return nil, 0, errTCPOffset
	}
	if off > len(data) {
		return nil, 0, errTCPOffset
	}
	opts := data[20:off]
	for len(opts) > 0 {
		var ol int
		switch opts[0] {
		case 0: // end of options
			return data[off:], lkNone, nil
		case 1: // no-op
			ol = 1
		case 30: // multipath TCP: gopacket validates it closely
			n, ok := mptcpOption(opts)
			if !ok {
				return nil, 0, errTCPOption
			}
			ol = n
		default:
			if len(opts) < 2 {
				return nil, 0, errTCPOption
			}
			ol = int(opts[1])
			if ol < 2 || ol > len(opts) {
				return nil, 0, errTCPOption
			}
		}
		opts = opts[ol:]
	}
	// TCP ports never lead to a layer Hubble decodes.
	return data[off:], lkNone, nil
}

// mptcpOption checks a multipath TCP option the way gopacket v1.6 parses
// it and returns its length; ok is false where gopacket returns an error
// or would panic (index beyond the length, slice beyond the capacity).
func mptcpOption(d []byte) (n int, ok bool) {
	if len(d) < 3 {
		return 0, false
	}
	l := d[1]
	if l == 0 {
		return 0, false
	}
	capOK := func(hi int) bool { return hi <= cap(d) }
	switch d[2] >> 4 {
	case 0: // MP_CAPABLE
		switch l {
		case 4, 12, 20, 22, 24:
		default:
			return 0, false
		}
		if len(d) < 4 || !capOK(int(l)) {
			return 0, false
		}
	case 1: // MP_JOIN
		switch l {
		case 12, 16:
			if len(d) < 4 || !capOK(int(l)) {
				return 0, false
			}
		case 24:
			if !capOK(24) {
				return 0, false
			}
		default:
			return 0, false
		}
	case 2: // DSS
		if len(d) < 4 {
			return 0, false
		}
		fl := d[3]
		bigM, smallM, bigA, smallA := fl&0x04 != 0, fl&0x08 != 0, fl&0x01 != 0, fl&0x02 != 0
		dsslen := func(csum bool) uint8 {
			n := uint8(4)
			if bigA {
				n += 4
				if smallA {
					n += 4
				}
			}
			if bigM {
				n += 10
				if smallM {
					n += 4
				}
				if csum {
					n += 2
				}
			}
			return n
		}
		if l != dsslen(false) && l != dsslen(true) {
			return 0, false
		}
		lo := uint8(4)
		if bigA {
			if smallA {
				lo += 8
			} else {
				lo += 4
			}
			if !capOK(int(lo)) {
				return 0, false
			}
		}
		if bigM {
			if smallM {
				lo += 8
			} else {
				lo += 4
			}
			lo += 4 + 2
			if !capOK(int(lo)) {
				return 0, false
			}
			if l-lo == 2 && !capOK(int(lo)+2) {
				return 0, false
			}
		}
	case 3: // ADD_ADDR
		ver1 := d[2]&0x0f <= 1
		e := d[2]&0x01 != 0
		ll := l
		if ver1 && !e {
			ll -= 8
		}
		switch ll {
		case 8, 10, 20, 22:
		default:
			return 0, false
		}
		if len(d) < 4 {
			return 0, false
		}
		if ver1 && !e && int(l)-8 > len(d) {
			return 0, false
		}
		if !capOK(int(ll)) {
			return 0, false
		}
	case 4: // REMOVE_ADDR
		if l < 4 || len(d) < int(l) {
			return 0, false
		}
	case 5: // MP_PRIO
		if l != 3 && l != 4 {
			return 0, false
		}
		if l == 4 && len(d) < 4 {
			return 0, false
		}
	case 6, 7: // MP_FAIL, MP_FASTCLOSE
		if l != 12 || !capOK(12) {
			return 0, false
		}
	case 8: // MP_TCPRST
		if l != 4 || len(d) < 4 {
			return 0, false
		}
	}
	if int(l) > len(d) {
		return 0, false
	}
	return int(l), true
}

func (l *layers) decodeGeneve(data []byte) ([]byte, layerKind, error) {
	if len(data) < 7 {
		return nil, 0, errGeneve
	}
	optLen := (data[0] & 0x3f) * 4
	proto := binary.BigEndian.Uint16(data[2:4])
	l.genVNI = uint32(data[4])<<16 | uint32(data[5])<<8 | uint32(data[6])
	if len(data) < int(optLen)+7 {
		return nil, 0, errGeneve
	}
	offset, remaining := uint8(8), int32(optLen)
	for remaining > 0 {
		if int(offset) > len(data) {
			return nil, 0, errGeneve
		}
		d := data[offset:]
		if len(d) < 4 {
			return nil, 0, errGeneve
		}
		ol := (d[3]&0x1f)*4 + 4
		if len(d) < int(ol) {
			return nil, 0, errGeneve
		}
		remaining -= int32(ol)
		offset += ol
	}
	if int(offset) > len(data) {
		return nil, 0, errGeneve
	}
	return data[offset:], ethNext(proto), nil
}
