package datapath

import (
	"bytes"
	"encoding/binary"
	"encoding/gob"
	"errors"
	"net/netip"
)

// Builders for samples in the layouts of Cilium's datapath headers and for
// the packets that follow them. Integers in headers are native-endian.

var ne = binary.NativeEndian

type traceHdr struct {
	version            uint8
	obs                uint8
	source             uint16
	hash, origLen      uint32
	srcLabel, dstLabel uint32
	dstID              uint16
	reason, flags      uint8
	ifindex            uint32
	orig               netip.Addr
	ipTraceID          uint64
}

func (h traceHdr) bytes(pkt []byte) []byte {
	n := [...]int{32, 48, 56}[h.version]
	b := make([]byte, n, n+len(pkt))
	b[0], b[1] = MessageTypeTrace, h.obs
	ne.PutUint16(b[2:], h.source)
	ne.PutUint32(b[4:], h.hash)
	ne.PutUint32(b[8:], h.origLen)
	ne.PutUint16(b[12:], uint16(len(pkt)))
	b[14] = h.version
	ne.PutUint32(b[16:], h.srcLabel)
	ne.PutUint32(b[20:], h.dstLabel)
	ne.PutUint16(b[24:], h.dstID)
	b[26], b[27] = h.reason, h.flags
	ne.PutUint32(b[28:], h.ifindex)
	if h.version >= 1 && h.orig.IsValid() {
		a := h.orig.As16()
		if h.orig.Is4() {
			a4 := h.orig.As4()
			copy(b[32:], a4[:])
		} else {
			copy(b[32:], a[:])
		}
	}
	if h.version >= 2 {
		ne.PutUint64(b[48:], h.ipTraceID)
	}
	return append(b, pkt...)
}

type dropHdr struct {
	version            uint8
	reason             uint8
	source             uint16
	srcLabel, dstLabel uint32
	dstID              uint32
	line               uint16
	file               uint8
	extErr             int8
	ifindex            uint32
	flags              uint8
	ipTraceID          uint64
}

func (h dropHdr) bytes(pkt []byte) []byte {
	n := [...]int{36, 36, 40, 48}[h.version]
	b := make([]byte, n, n+len(pkt))
	b[0], b[1] = MessageTypeDrop, h.reason
	ne.PutUint16(b[2:], h.source)
	ne.PutUint32(b[8:], uint32(len(pkt)))
	ne.PutUint16(b[12:], uint16(len(pkt)))
	b[14] = h.version
	ne.PutUint32(b[16:], h.srcLabel)
	ne.PutUint32(b[20:], h.dstLabel)
	ne.PutUint32(b[24:], h.dstID)
	ne.PutUint16(b[28:], h.line)
	b[30], b[31] = h.file, byte(h.extErr)
	ne.PutUint32(b[32:], h.ifindex)
	if h.version >= 2 {
		b[36] = h.flags
	}
	if h.version >= 3 {
		ne.PutUint64(b[40:], h.ipTraceID)
	}
	return append(b, pkt...)
}

type policyHdr struct {
	new     bool // v1.19+ 40-byte layout
	source  uint16
	remote  uint32
	verdict int32
	dport   uint16
	proto   uint8
	flags   uint8
	auth    uint8
	cookie  uint32
	padPerf bool // pad as the perf ring does (size+4 multiple of 8)
}

func (h policyHdr) bytes(pkt []byte) []byte {
	n := 32
	if h.new {
		n = 40
	}
	b := make([]byte, n, n+len(pkt)+8)
	b[0] = MessageTypePolicyVerdict
	ne.PutUint16(b[2:], h.source)
	ne.PutUint32(b[8:], uint32(len(pkt)))
	ne.PutUint16(b[12:], uint16(len(pkt)))
	b[14] = 1
	ne.PutUint32(b[16:], h.remote)
	ne.PutUint32(b[20:], uint32(h.verdict))
	ne.PutUint16(b[24:], h.dport)
	b[26], b[27], b[28] = h.proto, h.flags, h.auth
	if h.new {
		ne.PutUint32(b[32:], h.cookie)
	}
	b = append(b, pkt...)
	if h.padPerf {
		b = perfPad(b)
	}
	return b
}

// perfPad pads a raw sample as the kernel does: size+4 is a multiple of 8.
func perfPad(b []byte) []byte {
	for (len(b)+4)%8 != 0 {
		b = append(b, 0)
	}
	return b
}

func captureHdr(sub uint8, source uint16, arg1, arg2 uint32, pkt []byte) []byte {
	b := make([]byte, 24, 24+len(pkt))
	b[0], b[1] = MessageTypeCapture, sub
	ne.PutUint16(b[2:], source)
	ne.PutUint32(b[8:], uint32(len(pkt)))
	ne.PutUint16(b[12:], uint16(len(pkt)))
	b[14] = 1
	ne.PutUint32(b[16:], arg1)
	ne.PutUint32(b[20:], arg2)
	return append(b, pkt...)
}

type sockHdr struct {
	xlate, proto uint8
	v6           bool
	dport        uint16
	cookie       uint64
	cgroup       uint64
	dst          netip.Addr
}

func (h sockHdr) v119() []byte {
	b := make([]byte, 40)
	b[0], b[1], b[2] = MessageTypeTraceSock, h.xlate, h.proto
	if h.v6 {
		b[3] = 1
	}
	ne.PutUint16(b[4:], h.dport)
	ne.PutUint64(b[8:], h.cookie)
	ne.PutUint64(b[16:], h.cgroup)
	h.putIP(b[24:40])
	return perfPad(b)
}

func (h sockHdr) v118() []byte {
	b := make([]byte, 38)
	b[0], b[1] = MessageTypeTraceSock, h.xlate
	h.putIP(b[2:18])
	ne.PutUint16(b[18:], h.dport)
	ne.PutUint64(b[20:], h.cookie)
	ne.PutUint64(b[28:], h.cgroup)
	b[36] = h.proto
	if h.v6 {
		b[37] = 1
	}
	return perfPad(b)
}

func (h sockHdr) putIP(b []byte) {
	if h.dst.Is4() {
		a := h.dst.As4()
		copy(b, a[:])
	} else if h.dst.IsValid() {
		a := h.dst.As16()
		copy(b, a[:])
	}
}

// Packet builders (network byte order).

func eth(src, dst string, etype uint16, payload []byte) []byte {
	b := make([]byte, 14, 14+len(payload))
	copy(b[0:6], mac(dst))
	copy(b[6:12], mac(src))
	binary.BigEndian.PutUint16(b[12:], etype)
	return append(b, payload...)
}

func mac(s string) []byte {
	var m []byte
	for i := 0; i < len(s); i += 3 {
		var v byte
		for _, c := range s[i : i+2] {
			v <<= 4
			switch {
			case c >= '0' && c <= '9':
				v |= byte(c - '0')
			default:
				v |= byte(c-'a') + 10
			}
		}
		m = append(m, v)
	}
	return m
}

type ip4Opts struct {
	flagsFrag uint16 // flags<<13 | fragment offset
	options   []byte
	totalLen  int // 0: computed
	ihl       int // 0: computed
}

func ipv4(src, dst string, proto uint8, payload []byte, o ...ip4Opts) []byte {
	var opt ip4Opts
	if len(o) > 0 {
		opt = o[0]
	}
	hl := 20 + len(opt.options)
	b := make([]byte, hl, hl+len(payload))
	ihl := hl / 4
	if opt.ihl != 0 {
		ihl = opt.ihl
	}
	b[0] = 0x40 | byte(ihl)
	tl := hl + len(payload)
	if opt.totalLen != 0 {
		tl = opt.totalLen
	}
	binary.BigEndian.PutUint16(b[2:], uint16(tl))
	binary.BigEndian.PutUint16(b[6:], opt.flagsFrag)
	b[8], b[9] = 64, proto
	s, d := netip.MustParseAddr(src).As4(), netip.MustParseAddr(dst).As4()
	copy(b[12:], s[:])
	copy(b[16:], d[:])
	copy(b[20:], opt.options)
	return append(b, payload...)
}

func ipv6(src, dst string, next uint8, payload []byte) []byte {
	b := make([]byte, 40, 40+len(payload))
	b[0] = 0x60
	binary.BigEndian.PutUint16(b[4:], uint16(len(payload)))
	b[6], b[7] = next, 64
	s, d := netip.MustParseAddr(src).As16(), netip.MustParseAddr(dst).As16()
	copy(b[8:], s[:])
	copy(b[24:], d[:])
	return append(b, payload...)
}

const (
	tcpFIN = 0x01
	tcpSYN = 0x02
	tcpRST = 0x04
	tcpPSH = 0x08
	tcpACK = 0x10
	tcpURG = 0x20
	tcpECE = 0x40
	tcpCWR = 0x80
)

func tcp(sport, dport uint16, flags uint8, ns bool, options []byte, payload []byte) []byte {
	hl := 20 + len(options)
	b := make([]byte, hl, hl+len(payload))
	binary.BigEndian.PutUint16(b[0:], sport)
	binary.BigEndian.PutUint16(b[2:], dport)
	b[12] = byte(hl/4) << 4
	if ns {
		b[12] |= 1
	}
	b[13] = flags
	binary.BigEndian.PutUint16(b[14:], 65535)
	copy(b[20:], options)
	return append(b, payload...)
}

func udp(sport, dport uint16, payload []byte) []byte {
	b := make([]byte, 8, 8+len(payload))
	binary.BigEndian.PutUint16(b[0:], sport)
	binary.BigEndian.PutUint16(b[2:], dport)
	binary.BigEndian.PutUint16(b[4:], uint16(8+len(payload)))
	return append(b, payload...)
}

func sctp(sport, dport uint16, chunk []byte) []byte {
	b := make([]byte, 12, 12+len(chunk))
	binary.BigEndian.PutUint16(b[0:], sport)
	binary.BigEndian.PutUint16(b[2:], dport)
	return append(b, chunk...)
}

func icmp(t, c uint8, rest int) []byte {
	b := make([]byte, 8+rest)
	b[0], b[1] = t, c
	return b
}

func vxlanHdr(vni uint32, inner []byte) []byte {
	b := []byte{0x08, 0, 0, 0, byte(vni >> 16), byte(vni >> 8), byte(vni), 0}
	return append(b, inner...)
}

func geneveHdr(vni uint32, proto uint16, opts []byte, inner []byte) []byte {
	b := []byte{byte(len(opts) / 4), 0, byte(proto >> 8), byte(proto), byte(vni >> 16), byte(vni >> 8), byte(vni), 0}
	b = append(b, opts...)
	return append(b, inner...)
}

// tcpSample is the benchmark sample: a v2 trace of an Ethernet/IPv4/TCP
// packet, to-endpoint, established.
func tcpSample() []byte {
	pkt := eth("0a:58:0a:f4:00:01", "0a:58:0a:f4:00:9c", 0x0800,
		ipv4("10.244.0.156", "10.96.0.10", 6, tcp(43512, 8080, tcpACK|tcpPSH, false, nil, make([]byte, 32))))
	return traceHdr{version: 2, obs: 0, source: 1234, srcLabel: 12345, dstLabel: 6789, dstID: 1234, reason: 1, ifindex: 7}.bytes(pkt)
}

func encodeGob(v any) ([]byte, error) {
	var b bytes.Buffer
	err := gob.NewEncoder(&b).Encode(v)
	return b.Bytes(), err
}

func errorsIs(err, target error) bool { return errors.Is(err, target) }
