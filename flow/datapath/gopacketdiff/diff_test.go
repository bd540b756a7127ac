package gopacketdiff

import (
	"encoding/binary"
	"fmt"
	"net"
	"testing"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"google.golang.org/protobuf/encoding/prototext"
	"google.golang.org/protobuf/proto"

	flowpb "github.com/flowbus/flowbus/flow"
	"github.com/flowbus/flowbus/flow/datapath"
)

// reference decodes packet bytes the way Hubble v1.20's L3/L4 parser does
// (threefour.DecodePacket): gopacket DecodingLayerParsers with
// IgnoreUnsupported over the same layers, the same loop over decoded
// layers, the same overlay handling.
type reference struct {
	l2, l3v4, l3v6, vxlan, geneve *gopacket.DecodingLayerParser
	layers                        []gopacket.LayerType
	eth                           layers.Ethernet
	ip4                           layers.IPv4
	ip6                           layers.IPv6
	icmp4                         layers.ICMPv4
	icmp6                         layers.ICMPv6
	tcp                           layers.TCP
	udp                           layers.UDP
	sctp                          layers.SCTP
	vrrp                          layers.VRRPv2
	igmp                          layers.IGMPv1or2
	ov                            struct {
		layers []gopacket.LayerType
		vxlan  layers.VXLAN
		geneve layers.Geneve
		eth    layers.Ethernet
		ip4    layers.IPv4
		ip6    layers.IPv6
		icmp4  layers.ICMPv4
		icmp6  layers.ICMPv6
		tcp    layers.TCP
		udp    layers.UDP
		sctp   layers.SCTP
		vrrp   layers.VRRPv2
		igmp   layers.IGMPv1or2
	}
}

func newReference() *reference {
	r := &reference{}
	dec := []gopacket.DecodingLayer{&r.eth, &r.ip4, &r.ip6, &r.icmp4, &r.icmp6, &r.tcp, &r.udp, &r.sctp, &r.vrrp, &r.igmp}
	r.l2 = gopacket.NewDecodingLayerParser(layers.LayerTypeEthernet, dec...)
	r.l3v4 = gopacket.NewDecodingLayerParser(layers.LayerTypeIPv4, dec...)
	r.l3v6 = gopacket.NewDecodingLayerParser(layers.LayerTypeIPv6, dec...)
	o := &r.ov
	odec := []gopacket.DecodingLayer{&o.vxlan, &o.geneve, &o.eth, &o.ip4, &o.ip6, &o.icmp4, &o.icmp6, &o.tcp, &o.udp, &o.sctp, &o.vrrp, &o.igmp}
	r.vxlan = gopacket.NewDecodingLayerParser(layers.LayerTypeVXLAN, odec...)
	r.geneve = gopacket.NewDecodingLayerParser(layers.LayerTypeGeneve, odec...)
	for _, p := range []*gopacket.DecodingLayerParser{r.l2, r.l3v4, r.l3v6, r.vxlan, r.geneve} {
		p.IgnoreUnsupported = true
	}
	return r
}

type result struct {
	eth     *flowpb.Ethernet
	ip      *flowpb.IP
	l4      *flowpb.Layer4
	tunnel  *flowpb.Tunnel
	summary string
}

func (r *reference) decode(payload []byte, l3, v6, vxlan, geneve bool) (res result, err error) {
	if len(payload) == 0 {
		return res, nil
	}
	switch {
	case !l3:
		err = r.l2.DecodeLayers(payload, &r.layers)
	case v6:
		err = r.l3v6.DecodeLayers(payload, &r.layers)
	default:
		err = r.l3v4.DecodeLayers(payload, &r.layers)
	}
	if err != nil {
		return res, err
	}
	for _, typ := range r.layers {
		res.summary = typ.String()
		r.layer(typ, &res, &r.eth, &r.ip4, &r.ip6, &r.tcp, &r.udp, &r.sctp, &r.icmp4, &r.icmp6, &r.vrrp, &r.igmp)
	}
	var udpPayload []byte
	for _, typ := range r.layers {
		if typ == layers.LayerTypeUDP {
			udpPayload = r.udp.Payload
		}
	}
	switch {
	case vxlan:
		err = r.vxlan.DecodeLayers(udpPayload, &r.ov.layers)
	case geneve:
		err = r.geneve.DecodeLayers(udpPayload, &r.ov.layers)
	default:
		return res, nil
	}
	if err != nil {
		return res, fmt.Errorf("overlay: %w", err)
	}
	if len(r.ov.layers) == 0 {
		return res, nil
	}
	o := &r.ov
	switch o.layers[0] {
	case layers.LayerTypeVXLAN:
		res.tunnel = &flowpb.Tunnel{Protocol: flowpb.Tunnel_VXLAN, IP: res.ip, L4: res.l4, Vni: o.vxlan.VNI}
	case layers.LayerTypeGeneve:
		res.tunnel = &flowpb.Tunnel{Protocol: flowpb.Tunnel_GENEVE, IP: res.ip, L4: res.l4, Vni: o.geneve.VNI}
	default:
		return res, nil
	}
	res.eth, res.ip, res.l4, res.summary = nil, nil, nil, ""
	for _, typ := range o.layers[1:] {
		res.summary = typ.String()
		r.layer(typ, &res, &o.eth, &o.ip4, &o.ip6, &o.tcp, &o.udp, &o.sctp, &o.icmp4, &o.icmp6, &o.vrrp, &o.igmp)
	}
	return res, nil
}

func (r *reference) layer(typ gopacket.LayerType, res *result, eth *layers.Ethernet, ip4 *layers.IPv4, ip6 *layers.IPv6,
	tcp *layers.TCP, udp *layers.UDP, sctp *layers.SCTP, icmp4 *layers.ICMPv4, icmp6 *layers.ICMPv6, vrrp *layers.VRRPv2, igmp *layers.IGMPv1or2) {
	switch typ {
	case layers.LayerTypeEthernet:
		res.eth = &flowpb.Ethernet{Source: eth.SrcMAC.String(), Destination: eth.DstMAC.String()}
	case layers.LayerTypeIPv4:
		res.ip = &flowpb.IP{Source: ip4.SrcIP.String(), Destination: ip4.DstIP.String(), IpVersion: flowpb.IPVersion_IPv4}
	case layers.LayerTypeIPv6:
		res.ip = &flowpb.IP{Source: ip6.SrcIP.String(), Destination: ip6.DstIP.String(), IpVersion: flowpb.IPVersion_IPv6}
	case layers.LayerTypeTCP:
		res.l4 = &flowpb.Layer4{Protocol: &flowpb.Layer4_TCP{TCP: &flowpb.TCP{
			SourcePort: uint32(tcp.SrcPort), DestinationPort: uint32(tcp.DstPort),
			Flags: &flowpb.TCPFlags{FIN: tcp.FIN, SYN: tcp.SYN, RST: tcp.RST, PSH: tcp.PSH, ACK: tcp.ACK,
				URG: tcp.URG, ECE: tcp.ECE, CWR: tcp.CWR, NS: tcp.NS}}}}
		res.summary = "TCP Flags: " + tcpFlags(tcp)
	case layers.LayerTypeUDP:
		res.l4 = &flowpb.Layer4{Protocol: &flowpb.Layer4_UDP{UDP: &flowpb.UDP{SourcePort: uint32(udp.SrcPort), DestinationPort: uint32(udp.DstPort)}}}
	case layers.LayerTypeSCTP:
		res.l4 = &flowpb.Layer4{Protocol: &flowpb.Layer4_SCTP{SCTP: &flowpb.SCTP{SourcePort: uint32(sctp.SrcPort),
			DestinationPort: uint32(sctp.DstPort), ChunkType: chunkType(sctp.Payload)}}}
	case layers.LayerTypeICMPv4:
		res.l4 = &flowpb.Layer4{Protocol: &flowpb.Layer4_ICMPv4{ICMPv4: &flowpb.ICMPv4{Type: uint32(icmp4.TypeCode.Type()), Code: uint32(icmp4.TypeCode.Code())}}}
		res.summary = "ICMPv4 " + icmp4.TypeCode.String()
	case layers.LayerTypeICMPv6:
		res.l4 = &flowpb.Layer4{Protocol: &flowpb.Layer4_ICMPv6{ICMPv6: &flowpb.ICMPv6{Type: uint32(icmp6.TypeCode.Type()), Code: uint32(icmp6.TypeCode.Code())}}}
		res.summary = "ICMPv6 " + icmp6.TypeCode.String()
	case layers.LayerTypeVRRP:
		res.l4 = &flowpb.Layer4{Protocol: &flowpb.Layer4_VRRP{VRRP: &flowpb.VRRP{Type: uint32(vrrp.Type), Vrid: uint32(vrrp.VirtualRtrID), Priority: uint32(vrrp.Priority)}}}
		res.summary = "VRRP " + vrrp.Type.String()
	case layers.LayerTypeIGMP:
		res.l4 = &flowpb.Layer4{Protocol: &flowpb.Layer4_IGMP{IGMP: &flowpb.IGMP{Type: uint32(igmp.Type), GroupAddress: igmp.GroupAddress.String()}}}
		res.summary = "IGMP " + igmp.Type.String()
	}
}

func tcpFlags(t *layers.TCP) string {
	var s []string
	for _, f := range []struct {
		on   bool
		name string
	}{{t.SYN, "SYN"}, {t.ACK, "ACK"}, {t.RST, "RST"}, {t.FIN, "FIN"}, {t.PSH, "PSH"}, {t.URG, "URG"}, {t.ECE, "ECE"}, {t.CWR, "CWR"}, {t.NS, "NS"}} {
		if f.on {
			s = append(s, f.name)
		}
	}
	out := ""
	for i, x := range s {
		if i > 0 {
			out += ", "
		}
		out += x
	}
	return out
}

func chunkType(p []byte) flowpb.SCTPChunkType {
	if len(p) == 0 {
		return 0
	}
	switch layers.SCTPChunkType(p[0]) {
	case layers.SCTPChunkTypeInit:
		return flowpb.SCTPChunkType_INIT
	case layers.SCTPChunkTypeInitAck:
		return flowpb.SCTPChunkType_INIT_ACK
	case layers.SCTPChunkTypeShutdown:
		return flowpb.SCTPChunkType_SHUTDOWN
	case layers.SCTPChunkTypeShutdownAck:
		return flowpb.SCTPChunkType_SHUTDOWN_ACK
	case layers.SCTPChunkTypeShutdownComplete:
		return flowpb.SCTPChunkType_SHUTDOWN_COMPLETE
	case layers.SCTPChunkTypeAbort:
		return flowpb.SCTPChunkType_ABORT
	}
	return flowpb.SCTPChunkType_UNSUPPORTED
}

// sample wraps a packet in a v2 TraceNotify with the given classifier
// flags (bit0 IPv6, bit1 L3 device, bit2 VXLAN, bit3 Geneve) and reason 5
// (no orig IP, no reply handling).
func sample(flags byte, pkt []byte) []byte {
	b := make([]byte, 56, 56+len(pkt))
	b[0] = datapath.MessageTypeTrace
	binary.NativeEndian.PutUint16(b[12:], uint16(len(pkt)))
	b[14] = 2
	b[26] = 5
	b[27] = flags
	return append(b, pkt...)
}

func check(t *testing.T, flags byte, pkt []byte) {
	flags &= 0x0f
	s := sample(flags, pkt)
	var d datapath.Decoder
	d.NoTime = true
	got := new(flowpb.Flow)
	gotErr := d.Decode(s, got)

	ref := newReference()
	// The reference parses a copy whose capacity ends with the sample, as
	// the decoder's bounds do.
	p := append([]byte(nil), pkt...)
	want, wantErr := ref.decode(p[:len(p):len(p)], flags&2 != 0, flags&1 != 0, flags&4 != 0, flags&8 != 0)
	if (gotErr != nil) != (wantErr != nil) {
		t.Fatalf("flags %#x pkt %x: decoder error %v, gopacket error %v", flags, pkt, gotErr, wantErr)
	}
	if gotErr != nil {
		return
	}
	w := &flowpb.Flow{Ethernet: want.eth, IP: want.ip, L4: want.l4, Tunnel: want.tunnel, Summary: want.summary}
	g := &flowpb.Flow{Ethernet: got.Ethernet, IP: got.IP, L4: got.L4, Tunnel: got.Tunnel, Summary: got.Summary}
	if !proto.Equal(w, g) {
		t.Fatalf("flags %#x pkt %x:\ngopacket %s\ndecoder  %s", flags, pkt, prototext.Format(w), prototext.Format(g))
	}
}

func FuzzPacket(f *testing.F) {
	mac := net.HardwareAddr{2, 0, 0, 0, 0, 1}
	for _, seed := range seeds(mac) {
		f.Add(seed.flags, seed.pkt)
	}
	f.Fuzz(func(t *testing.T, flags byte, pkt []byte) {
		check(t, flags, pkt)
	})
}

type seed struct {
	flags byte
	pkt   []byte
}

func serialize(ls ...gopacket.SerializableLayer) []byte {
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true}, ls...); err != nil {
		panic(err)
	}
	return buf.Bytes()
}

func seeds(mac net.HardwareAddr) []seed {
	eth4 := &layers.Ethernet{SrcMAC: mac, DstMAC: mac, EthernetType: layers.EthernetTypeIPv4}
	eth6 := &layers.Ethernet{SrcMAC: mac, DstMAC: mac, EthernetType: layers.EthernetTypeIPv6}
	ip4 := func(p layers.IPProtocol) *layers.IPv4 {
		return &layers.IPv4{Version: 4, IHL: 5, TTL: 64, Protocol: p, SrcIP: net.IP{10, 0, 0, 1}, DstIP: net.IP{10, 0, 0, 2}}
	}
	ip6 := func(p layers.IPProtocol) *layers.IPv6 {
		return &layers.IPv6{Version: 6, NextHeader: p, HopLimit: 64, SrcIP: net.ParseIP("fd00::1"), DstIP: net.ParseIP("::ffff:1.2.3.4")}
	}
	tcp := &layers.TCP{SrcPort: 1234, DstPort: 80, SYN: true, ACK: true, Window: 100,
		Options: []layers.TCPOption{{OptionType: layers.TCPOptionKindMSS, OptionLength: 4, OptionData: []byte{5, 0xb4}}}}
	udp := func(dst uint16) *layers.UDP { return &layers.UDP{SrcPort: 5353, DstPort: layers.UDPPort(dst)} }
	inner := serialize(eth4, ip4(layers.IPProtocolTCP), tcp)
	vx := serialize(eth4, ip4(layers.IPProtocolUDP), udp(4789), &layers.VXLAN{ValidIDFlag: true, VNI: 77}, gopacket.Payload(inner))
	gn := serialize(eth4, ip4(layers.IPProtocolUDP), udp(6081), &layers.Geneve{Protocol: layers.EthernetTypeTransparentEthernetBridging, VNI: 9}, gopacket.Payload(inner))
	return []seed{
		{0, serialize(eth4, ip4(layers.IPProtocolTCP), tcp)},
		{0, serialize(eth6, ip6(layers.IPProtocolUDP), udp(53), gopacket.Payload("hello"))},
		{1, serialize(eth6, ip6(layers.IPProtocolICMPv6), &layers.ICMPv6{TypeCode: layers.CreateICMPv6TypeCode(128, 0)}, gopacket.Payload("ping"))},
		{0, serialize(eth4, ip4(layers.IPProtocolICMPv4), &layers.ICMPv4{TypeCode: layers.CreateICMPv4TypeCode(3, 3)}, gopacket.Payload("xxxxxxxx"))},
		{2, serialize(ip4(layers.IPProtocolTCP), tcp)},
		{3, serialize(ip6(layers.IPProtocolTCP), tcp)},
		{0, serialize(eth4, ip4(layers.IPProtocolSCTP), &layers.SCTP{SrcPort: 1, DstPort: 2}, gopacket.Payload([]byte{1, 0, 0, 4}))},
		{0, serialize(eth4, ip4(layers.IPProtocolIGMP), gopacket.Payload([]byte{0x16, 0, 0, 0, 239, 1, 1, 1}))},
		{0, serialize(eth4, ip4(layers.IPProtocolVRRP), gopacket.Payload([]byte{0x21, 1, 100, 1, 0, 1, 0, 0, 10, 0, 0, 1}))},
		{4, vx},
		{8, gn},
		{0, serialize(eth4, &layers.IPv4{Version: 4, IHL: 5, Flags: layers.IPv4MoreFragments, Protocol: layers.IPProtocolTCP, SrcIP: net.IP{1, 1, 1, 1}, DstIP: net.IP{2, 2, 2, 2}}, tcp)},
		{0, hopByHop(serialize(eth6, ip6(layers.IPProtocolUDP), udp(1)))},
		{0, []byte{1, 2, 3}},
	}
}

// hopByHop inserts a hop-by-hop header (a PadN option) after the IPv6
// header of an Ethernet/IPv6 packet.
func hopByHop(pkt []byte) []byte {
	ip := pkt[14:]
	next := ip[6]
	ip[6] = 0
	binary.BigEndian.PutUint16(ip[4:], binary.BigEndian.Uint16(ip[4:])+8)
	hbh := []byte{next, 0, 1, 4, 0, 0, 0, 0}
	out := append([]byte(nil), pkt[:14+40]...)
	out = append(out, hbh...)
	return append(out, pkt[14+40:]...)
}
