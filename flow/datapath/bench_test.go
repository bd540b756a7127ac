package datapath

import (
	"net/http"
	"net/netip"
	"net/url"
	"testing"

	flowpb "github.com/flowbus/flowbus/flow"
)

// BenchmarkDecodeTraceTCPv4 is the sample of Hubble's BenchmarkL34Decode
// (a TraceNotify of an Ethernet/IPv4/TCP packet), decoded into a reused
// flow as a source does.
func BenchmarkDecodeTraceTCPv4(b *testing.B) {
	benchDecode(b, tcpSample())
}

func BenchmarkDecodeTraceTCPv6(b *testing.B) {
	benchDecode(b, traceHdr{version: 2, reason: 1, source: 3, ifindex: 2, flags: flagIPv6}.bytes(eth(macA, macB, 0x86dd,
		ipv6("fd00:10:244::9c", "fd00:10:96::a", 6, tcp(43512, 8080, tcpACK, false, nil, make([]byte, 32))))))
}

func BenchmarkDecodeTraceVXLAN(b *testing.B) {
	benchDecode(b, traceHdr{version: 2, obs: 9, reason: 1, flags: flagVXLAN}.bytes(
		eth("02:00:00:00:00:01", "02:00:00:00:00:02", 0x0800, ipv4("192.168.0.1", "192.168.0.2", 17,
			udp(51000, 4789, vxlanHdr(0x1234, tcpPkt(tcpSYN)))))))
}

func BenchmarkDecodeDropUDPv4(b *testing.B) {
	benchDecode(b, dropHdr{version: 3, reason: 133, source: 42, srcLabel: 100, dstLabel: 200, line: 1234, file: 2}.bytes(
		eth(macA, macB, 0x0800, ipv4("10.0.0.1", "10.0.0.2", 17, udp(5000, 53, []byte("query"))))))
}

func BenchmarkDecodePolicyVerdict(b *testing.B) {
	benchDecode(b, policyHdr{new: true, remote: 16777217, dport: 80, proto: 6, flags: 1 | 2<<3, padPerf: true}.bytes(
		eth(macA, macB, 0x0800, ipv4("10.0.0.1", "10.0.0.2", 6, tcp(40000, 80, tcpSYN, false, nil, nil)))))
}

func BenchmarkDecodeDebugCapture(b *testing.B) {
	benchDecode(b, captureHdr(4, 11, 17, 0, tcpPkt(tcpACK)))
}

func BenchmarkDecodeICMPv4(b *testing.B) {
	benchDecode(b, traceHdr{version: 2, reason: 0}.bytes(eth(macA, macB, 0x0800, ipv4("10.0.0.1", "10.0.0.2", 1, icmp(8, 0, 56)))))
}

func BenchmarkDecodeTraceSock(b *testing.B) {
	benchDecode(b, sockHdr{xlate: 1, proto: 1, dport: 80, cookie: 0x1122, cgroup: 0x3344, dst: netip.MustParseAddr("10.96.0.1")}.v119())
}

func BenchmarkDecodeAccessLogHTTP(b *testing.B) {
	u, _ := url.Parse("http://svc:8080/api/v1/items?page=2")
	s, err := EncodeAccessLog(&AccessLogRecord{Type: "Request", Timestamp: "2026-11-25T05:00:00Z", ObservationPoint: "Egress",
		SourceEndpoint:      AccessLogEndpoint{ID: 12, IPv4: "10.0.0.1", Port: 41000, Identity: 1001, Labels: []AccessLogLabel{{Key: "app", Value: "web", Source: "k8s"}}},
		DestinationEndpoint: AccessLogEndpoint{IPv4: "10.0.0.2", Port: 8080, Identity: 2002},
		Verdict:             "Forwarded", TransportProtocol: 6,
		HTTP: &AccessLogHTTP{Method: "GET", URL: u, Protocol: "HTTP/1.1", Headers: http.Header{"X-Request-Id": {"r1"}, "Accept": {"*/*"}}}})
	if err != nil {
		b.Fatal(err)
	}
	benchDecode(b, s)
}

// BenchmarkDecodeTraceTCPv4Fresh decodes into a new flow every time (no
// storage reuse), for comparison.
func BenchmarkDecodeTraceTCPv4Fresh(b *testing.B) {
	var d Decoder
	s := tcpSample()
	b.ReportAllocs()
	for b.Loop() {
		if err := d.Decode(s, new(flowpb.Flow)); err != nil {
			b.Fatal(err)
		}
	}
}

func benchDecode(b *testing.B, sample []byte) {
	var d Decoder
	f := new(flowpb.Flow)
	if err := d.Decode(sample, f); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.SetBytes(int64(len(sample)))
	for b.Loop() {
		if err := d.Decode(sample, f); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkDecodeVariedAddresses decodes trace samples whose addresses
// rarely repeat (4,096 samples, IPv4 and IPv6 alike, none twice in a row),
// a busy node's mix, where the decoder's address cache mostly misses.
func BenchmarkDecodeVariedAddresses(b *testing.B) {
	samples := make([][]byte, 4096)
	for i := range samples {
		x := uint32(i) * 2654435761
		if i%4 == 3 {
			src := netip.AddrFrom16([16]byte{0xfd, 0, 4: 1, 5: byte(x), 6: byte(x >> 8), 14: byte(x >> 16), 15: byte(x >> 24)})
			dst := netip.AddrFrom16([16]byte{0xfd, 0, 4: 2, 5: byte(x >> 4), 6: byte(x >> 12), 15: byte(i)})
			samples[i] = traceHdr{version: 2, reason: 1, flags: flagIPv6}.bytes(eth(macA, macB, 0x86dd,
				ipv6(src.String(), dst.String(), 6, tcp(uint16(x>>16)|1024, 443, tcpACK, false, nil, nil))))
			continue
		}
		src := netip.AddrFrom4([4]byte{10, byte(x), byte(x >> 8), byte(x >> 16)})
		dst := netip.AddrFrom4([4]byte{10, byte(x >> 24), byte(i), byte(i >> 8)})
		samples[i] = traceHdr{version: 2, reason: 1}.bytes(eth(macA, macB, 0x0800,
			ipv4(src.String(), dst.String(), 6, tcp(uint16(x>>16)|1024, 80, tcpACK, false, nil, nil))))
	}
	var d Decoder
	f := new(flowpb.Flow)
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		if err := d.Decode(samples[i%len(samples)], f); err != nil {
			b.Fatal(err)
		}
		i++
	}
}
