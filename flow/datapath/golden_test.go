package datapath

import (
	"errors"
	"net/netip"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/prototext"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	flowpb "github.com/flowbus/flowbus/flow"
)

var testTime = time.Date(2026, 11, 25, 5, 0, 0, 123456789, time.UTC)

func testDecoder() *Decoder {
	return &Decoder{Now: func() time.Time { return testTime }, IPTraceOptionType: 136}
}

// Helpers for expected flows.

func ep(id uint32) *flowpb.Endpoint { return &flowpb.Endpoint{Identity: id} }

func et(t, s int32) *flowpb.CiliumEventType { return &flowpb.CiliumEventType{Type: t, SubType: s} }

func ipv4f(src, dst string) *flowpb.IP {
	return &flowpb.IP{Source: src, Destination: dst, IpVersion: flowpb.IPVersion_IPv4}
}

func ipv6f(src, dst string) *flowpb.IP {
	return &flowpb.IP{Source: src, Destination: dst, IpVersion: flowpb.IPVersion_IPv6}
}

func ethf(src, dst string) *flowpb.Ethernet { return &flowpb.Ethernet{Source: src, Destination: dst} }

func tcpf(s, d uint32, fl *flowpb.TCPFlags) *flowpb.Layer4 {
	return &flowpb.Layer4{Protocol: &flowpb.Layer4_TCP{TCP: &flowpb.TCP{SourcePort: s, DestinationPort: d, Flags: fl}}}
}

func udpf(s, d uint32) *flowpb.Layer4 {
	return &flowpb.Layer4{Protocol: &flowpb.Layer4_UDP{UDP: &flowpb.UDP{SourcePort: s, DestinationPort: d}}}
}

func boolp(v bool) *wrapperspb.BoolValue { return wrapperspb.Bool(v) }

const (
	macA = "0a:58:0a:f4:00:01"
	macB = "0a:58:0a:f4:00:9c"
)

// flow fills the fields every L3/L4 flow has.
func l34(f *flowpb.Flow) *flowpb.Flow {
	f.Time = timestamppb.New(testTime)
	f.Type = flowpb.FlowType_L3_L4
	f.DropReasonDesc = flowpb.DropReason(f.DropReason)
	if f.IsReply != nil {
		f.Reply = f.IsReply.Value
	}
	if f.Source == nil {
		f.Source = ep(0)
	}
	if f.Destination == nil {
		f.Destination = ep(0)
	}
	return f
}

type golden struct {
	name   string
	dec    func(*Decoder)
	sample []byte
	want   *flowpb.Flow
	err    error // ErrSkip or ErrMalformed
}

func tcpPkt(flags uint8) []byte {
	return eth(macA, macB, 0x0800, ipv4("10.244.0.156", "10.96.0.10", 6, tcp(43512, 8080, flags, false, nil, nil)))
}

func goldens() []golden {
	synAck := &flowpb.TCPFlags{SYN: true, ACK: true}
	return []golden{
		{
			name:   "trace v0 to-endpoint established TCP/IPv4",
			sample: traceHdr{version: 0, source: 1234, srcLabel: 2, dstLabel: 12345, dstID: 1234, reason: 1, ifindex: 7}.bytes(tcpPkt(tcpSYN | tcpACK)),
			want: l34(&flowpb.Flow{
				Verdict: flowpb.Verdict_FORWARDED, Ethernet: ethf(macA, macB), IP: ipv4f("10.244.0.156", "10.96.0.10"),
				L4: tcpf(43512, 8080, synAck), Source: ep(2), Destination: ep(12345), IsReply: boolp(false),
				EventType: et(4, 0), TrafficDirection: flowpb.TrafficDirection_INGRESS,
				TraceObservationPoint: flowpb.TraceObservationPoint_TO_ENDPOINT, TraceReason: flowpb.TraceReason_ESTABLISHED,
				Interface: &flowpb.NetworkInterface{Index: 7}, Summary: "TCP Flags: SYN, ACK",
			}),
		},
		{
			name: "trace v1 SNAT reply encrypted",
			sample: traceHdr{version: 1, obs: 11, source: 5, srcLabel: 1, dstLabel: 2, reason: 2 | 0x80,
				orig: netip.MustParseAddr("192.168.1.1")}.bytes(tcpPkt(tcpACK | tcpFIN)),
			want: l34(&flowpb.Flow{
				Verdict: flowpb.Verdict_FORWARDED, Ethernet: ethf(macA, macB),
				IP: &flowpb.IP{Source: "192.168.1.1", SourceXlated: "10.244.0.156", Destination: "10.96.0.10", IpVersion: flowpb.IPVersion_IPv4, Encrypted: true},
				L4: tcpf(43512, 8080, &flowpb.TCPFlags{ACK: true, FIN: true}), Source: ep(1), Destination: ep(2), IsReply: boolp(true),
				EventType: et(4, 11), TrafficDirection: flowpb.TrafficDirection_EGRESS,
				TraceObservationPoint: flowpb.TraceObservationPoint_TO_NETWORK, TraceReason: flowpb.TraceReason_REPLY,
				Summary: "TCP Flags: ACK, FIN",
			}),
		},
		{
			name: "trace v1 orig IP equal to source is not a translation",
			sample: traceHdr{version: 1, obs: 5, source: 9, reason: 0,
				orig: netip.MustParseAddr("10.244.0.156")}.bytes(tcpPkt(tcpSYN)),
			want: l34(&flowpb.Flow{
				Verdict: flowpb.Verdict_FORWARDED, Ethernet: ethf(macA, macB), IP: ipv4f("10.244.0.156", "10.96.0.10"),
				L4: tcpf(43512, 8080, &flowpb.TCPFlags{SYN: true}), IsReply: boolp(false),
				EventType: et(4, 5), TrafficDirection: flowpb.TrafficDirection_EGRESS, // SNAT flag set by orig IP
				TraceObservationPoint: flowpb.TraceObservationPoint_FROM_ENDPOINT, TraceReason: flowpb.TraceReason_NEW,
				Summary: "TCP Flags: SYN",
			}),
		},
		{
			name: "trace v2 L3 device IPv6 ICMPv6 echo with IP trace ID",
			sample: traceHdr{version: 2, obs: 3, reason: 0, flags: flagIPv6 | flagL3Dev, ifindex: 3, ipTraceID: 0xdeadbeef}.bytes(
				ipv6("fd00::1", "fd00::2", 58, icmp(128, 0, 8))),
			want: l34(&flowpb.Flow{
				Verdict: flowpb.Verdict_FORWARDED, IP: ipv6f("fd00::1", "fd00::2"),
				L4:      &flowpb.Layer4{Protocol: &flowpb.Layer4_ICMPv6{ICMPv6: &flowpb.ICMPv6{Type: 128}}},
				IsReply: boolp(false), EventType: et(4, 3),
				TraceObservationPoint: flowpb.TraceObservationPoint_TO_STACK, TraceReason: flowpb.TraceReason_NEW,
				IpTraceId: &flowpb.IPTraceID{TraceId: 0xdeadbeef, IpOptionType: 136},
				Interface: &flowpb.NetworkInterface{Index: 3}, Summary: "ICMPv6 EchoRequest",
			}),
		},
		{
			name:   "trace to-proxy sets the proxy port; unknown reason leaves reply and direction unset",
			sample: traceHdr{version: 1, obs: 1, source: 77, dstID: 15001, reason: 5}.bytes(tcpPkt(tcpPSH | tcpACK)),
			want: l34(&flowpb.Flow{
				Verdict: flowpb.Verdict_FORWARDED, Ethernet: ethf(macA, macB), IP: ipv4f("10.244.0.156", "10.96.0.10"),
				L4: tcpf(43512, 8080, &flowpb.TCPFlags{PSH: true, ACK: true}), EventType: et(4, 1),
				TraceObservationPoint: flowpb.TraceObservationPoint_TO_PROXY, ProxyPort: 15001,
				Summary: "TCP Flags: ACK, PSH",
			}),
		},
		{
			name:   "trace SRv6 encap: no is_reply",
			sample: traceHdr{version: 1, obs: 2, source: 1, reason: 6}.bytes(tcpPkt(tcpACK)),
			want: l34(&flowpb.Flow{
				Verdict: flowpb.Verdict_FORWARDED, Ethernet: ethf(macA, macB), IP: ipv4f("10.244.0.156", "10.96.0.10"),
				L4: tcpf(43512, 8080, &flowpb.TCPFlags{ACK: true}), EventType: et(4, 2),
				TrafficDirection:      flowpb.TrafficDirection_INGRESS,
				TraceObservationPoint: flowpb.TraceObservationPoint_TO_HOST, TraceReason: flowpb.TraceReason_SRV6_ENCAP,
				Summary: "TCP Flags: ACK",
			}),
		},
		{
			name: "trace all TCP flags in Hubble's order",
			sample: traceHdr{version: 1, obs: 4, reason: 3}.bytes(eth(macA, macB, 0x0800, ipv4("1.1.1.1", "2.2.2.2", 6,
				tcp(1, 2, 0xff, true, nil, nil)))),
			want: l34(&flowpb.Flow{
				Verdict: flowpb.Verdict_FORWARDED, Ethernet: ethf(macA, macB), IP: ipv4f("1.1.1.1", "2.2.2.2"),
				L4:      tcpf(1, 2, &flowpb.TCPFlags{FIN: true, SYN: true, RST: true, PSH: true, ACK: true, URG: true, ECE: true, CWR: true, NS: true}),
				IsReply: boolp(false), EventType: et(4, 4),
				TraceObservationPoint: flowpb.TraceObservationPoint_TO_OVERLAY, TraceReason: flowpb.TraceReason_RELATED,
				Summary: "TCP Flags: SYN, ACK, RST, FIN, PSH, URG, ECE, CWR, NS",
			}),
		},
		{
			name:   "trace with no packet bytes",
			sample: traceHdr{version: 2, obs: 10, reason: 5}.bytes(nil),
			want: l34(&flowpb.Flow{
				Verdict: flowpb.Verdict_FORWARDED, EventType: et(4, 10),
				TraceObservationPoint: flowpb.TraceObservationPoint_FROM_NETWORK,
			}),
		},
		{
			name: "trace VXLAN overlay: tunnel from the outer packet, the rest from the inner one",
			sample: traceHdr{version: 2, obs: 9, reason: 1, flags: flagVXLAN, ifindex: 2}.bytes(
				eth("02:00:00:00:00:01", "02:00:00:00:00:02", 0x0800, ipv4("192.168.0.1", "192.168.0.2", 17,
					udp(51000, 4789, vxlanHdr(0x1234, tcpPkt(tcpSYN)))))),
			want: l34(&flowpb.Flow{
				Verdict: flowpb.Verdict_FORWARDED, Ethernet: ethf(macA, macB), IP: ipv4f("10.244.0.156", "10.96.0.10"),
				L4:      tcpf(43512, 8080, &flowpb.TCPFlags{SYN: true}),
				Tunnel:  &flowpb.Tunnel{Protocol: flowpb.Tunnel_VXLAN, IP: ipv4f("192.168.0.1", "192.168.0.2"), L4: udpf(51000, 4789), Vni: 0x1234},
				IsReply: boolp(false), EventType: et(4, 9),
				TraceObservationPoint: flowpb.TraceObservationPoint_FROM_OVERLAY, TraceReason: flowpb.TraceReason_ESTABLISHED,
				Interface: &flowpb.NetworkInterface{Index: 2}, Summary: "TCP Flags: SYN",
			}),
		},
		{
			name: "trace Geneve overlay with an option, inner IPv6 UDP",
			sample: traceHdr{version: 2, obs: 9, reason: 5, flags: flagGeneve}.bytes(
				eth("02:00:00:00:00:01", "02:00:00:00:00:02", 0x0800, ipv4("192.168.0.1", "192.168.0.2", 17,
					udp(40000, 6081, geneveHdr(42, 0x6558, []byte{1, 2, 3, 1, 9, 9, 9, 9},
						eth(macA, macB, 0x86dd, ipv6("fd00::a", "fd00::b", 17, udp(53, 5353, []byte("x"))))))))),
			want: l34(&flowpb.Flow{
				Verdict: flowpb.Verdict_FORWARDED, Ethernet: ethf(macA, macB), IP: ipv6f("fd00::a", "fd00::b"),
				L4:        udpf(53, 5353),
				Tunnel:    &flowpb.Tunnel{Protocol: flowpb.Tunnel_GENEVE, IP: ipv4f("192.168.0.1", "192.168.0.2"), L4: udpf(40000, 6081), Vni: 42},
				EventType: et(4, 9), TraceObservationPoint: flowpb.TraceObservationPoint_FROM_OVERLAY, Summary: "UDP",
			}),
		},
		{
			name:   "trace VXLAN flag on a packet too short for the overlay header fails",
			sample: traceHdr{version: 2, flags: flagVXLAN}.bytes(eth(macA, macB, 0x0800, ipv4("1.1.1.1", "2.2.2.2", 17, udp(1, 4789, []byte{1, 2, 3})))),
			err:    ErrMalformed,
		},
		{
			name:   "trace unknown version",
			sample: func() []byte { b := traceHdr{version: 2}.bytes(tcpPkt(tcpSYN)); b[14] = 3; return b }(),
			err:    ErrMalformed,
		},
		{
			name:   "trace v2 header cut short",
			sample: traceHdr{version: 2}.bytes(nil)[:50],
			err:    ErrMalformed,
		},
		{
			name:   "trace with truncated TCP header drops the event",
			sample: traceHdr{version: 1, reason: 1}.bytes(tcpPkt(tcpSYN)[:14+20+12]),
			err:    ErrMalformed,
		},
		{
			name: "trace TCP data offset beyond the capture drops the event",
			sample: traceHdr{version: 1, reason: 1}.bytes(eth(macA, macB, 0x0800, ipv4("1.1.1.1", "2.2.2.2", 6,
				tcp(1, 2, tcpSYN, false, []byte{2, 4, 5, 0xb4, 1, 1, 4, 2, 1, 3, 3, 7}, nil)[:24]))),
			err: ErrMalformed,
		},
		// Drop notifications, every version.
		{
			name: "drop v0 UDP/IPv4 policy denied",
			sample: dropHdr{version: 0, reason: 133, source: 42, srcLabel: 100, dstLabel: 200, line: 1234, file: 2, ifindex: 9}.bytes(
				eth(macA, macB, 0x0800, ipv4("10.0.0.1", "10.0.0.2", 17, udp(5000, 53, []byte("query"))))),
			want: l34(&flowpb.Flow{
				Verdict: flowpb.Verdict_DROPPED, DropReason: 133, Ethernet: ethf(macA, macB), IP: ipv4f("10.0.0.1", "10.0.0.2"),
				L4: udpf(5000, 53), Source: ep(100), Destination: ep(200), EventType: et(1, 133),
				TrafficDirection: flowpb.TrafficDirection_INGRESS, File: &flowpb.FileInfo{Name: "bpf_lxc.c", Line: 1234},
				Summary: "UDP",
			}),
		},
		{
			name:   "drop v1 without source: direction unknown; unknown file id",
			sample: dropHdr{version: 1, reason: 181, file: 200, line: 7}.bytes(eth(macA, macB, 0x0806, make([]byte, 28))),
			want: l34(&flowpb.Flow{
				Verdict: flowpb.Verdict_DROPPED, DropReason: 181, Ethernet: ethf(macA, macB), EventType: et(1, 181),
				File: &flowpb.FileInfo{Name: "unknown(200)", Line: 7}, Summary: "Ethernet",
			}),
		},
		{
			name: "drop v2 on an L3 device (IPv6 SCTP INIT)",
			sample: dropHdr{version: 2, reason: 154, source: 3, file: 101, flags: flagL3Dev | flagIPv6}.bytes(
				ipv6("2001:db8::1", "2001:db8::2", 132, sctp(3868, 3868, []byte{1, 0, 0, 20}))),
			want: l34(&flowpb.Flow{
				Verdict: flowpb.Verdict_DROPPED, DropReason: 154, IP: ipv6f("2001:db8::1", "2001:db8::2"),
				L4:        &flowpb.Layer4{Protocol: &flowpb.Layer4_SCTP{SCTP: &flowpb.SCTP{SourcePort: 3868, DestinationPort: 3868, ChunkType: flowpb.SCTPChunkType_INIT}}},
				EventType: et(1, 154), TrafficDirection: flowpb.TrafficDirection_INGRESS,
				File: &flowpb.FileInfo{Name: "drop.h"}, Summary: "SCTP",
			}),
		},
		{
			name: "drop v2 SCTP DATA chunk: unsupported chunk type",
			sample: dropHdr{version: 2, reason: 132, file: 2}.bytes(eth(macA, macB, 0x0800,
				ipv4("10.0.0.1", "10.0.0.2", 132, sctp(5000, 38412, []byte{0, 3, 0, 16})))),
			want: l34(&flowpb.Flow{
				Verdict: flowpb.Verdict_DROPPED, DropReason: 132, Ethernet: ethf(macA, macB), IP: ipv4f("10.0.0.1", "10.0.0.2"),
				L4:        &flowpb.Layer4{Protocol: &flowpb.Layer4_SCTP{SCTP: &flowpb.SCTP{SourcePort: 5000, DestinationPort: 38412}}},
				EventType: et(1, 132), File: &flowpb.FileInfo{Name: "bpf_lxc.c"}, Summary: "SCTP",
			}),
		},
		{
			name: "drop v3 with IP trace ID, ICMPv4 port unreachable",
			sample: dropHdr{version: 3, reason: 130, file: 1, ipTraceID: 99}.bytes(
				eth(macA, macB, 0x0800, ipv4("10.0.0.1", "10.0.0.2", 1, icmp(3, 3, 28)))),
			want: l34(&flowpb.Flow{
				Verdict: flowpb.Verdict_DROPPED, DropReason: 130, Ethernet: ethf(macA, macB), IP: ipv4f("10.0.0.1", "10.0.0.2"),
				L4:        &flowpb.Layer4{Protocol: &flowpb.Layer4_ICMPv4{ICMPv4: &flowpb.ICMPv4{Type: 3, Code: 3}}},
				EventType: et(1, 130), File: &flowpb.FileInfo{Name: "bpf_host.c"},
				IpTraceId: &flowpb.IPTraceID{TraceId: 99, IpOptionType: 136}, Summary: "ICMPv4 DestinationUnreachable(Port)",
			}),
		},
		{
			name:   "drop v4 is unknown",
			sample: func() []byte { b := dropHdr{version: 3}.bytes(nil); b[14] = 4; return b }(),
			err:    ErrMalformed,
		},
		{
			name:   "drop shorter than its header",
			sample: dropHdr{version: 1}.bytes(nil)[:30],
			err:    ErrMalformed,
		},
		// Policy verdicts, both layouts.
		{
			name: "policy verdict v1.18 layout, ingress allowed L3-L4, perf-padded",
			sample: policyHdr{source: 9, remote: 16777217, verdict: 0, dport: 80, proto: 6, flags: 1 | 2<<3, auth: 0, padPerf: true}.bytes(
				eth(macA, macB, 0x0800, ipv4("10.0.0.1", "10.0.0.2", 6, tcp(40000, 80, tcpSYN, false, nil, nil)))),
			want: l34(&flowpb.Flow{
				Verdict: flowpb.Verdict_FORWARDED, Ethernet: ethf(macA, macB), IP: ipv4f("10.0.0.1", "10.0.0.2"),
				L4: tcpf(40000, 80, &flowpb.TCPFlags{SYN: true}), Source: ep(16777217), IsReply: boolp(false),
				EventType: et(5, 0), TrafficDirection: flowpb.TrafficDirection_INGRESS, PolicyMatchType: 2,
				Summary: "TCP Flags: SYN",
			}),
		},
		{
			name: "policy verdict v1.19 layout, egress denied",
			sample: policyHdr{new: true, source: 9, remote: 2, verdict: -133, proto: 17, flags: 2 | 4<<3, cookie: 77, padPerf: true}.bytes(
				eth(macA, macB, 0x0800, ipv4("10.0.0.1", "8.8.8.8", 17, udp(1234, 53, nil)))),
			want: l34(&flowpb.Flow{
				Verdict: flowpb.Verdict_DROPPED, DropReason: 133, Ethernet: ethf(macA, macB), IP: ipv4f("10.0.0.1", "8.8.8.8"),
				L4: udpf(1234, 53), Destination: ep(2), EventType: et(5, 0),
				TrafficDirection: flowpb.TrafficDirection_EGRESS, PolicyMatchType: 4, Summary: "UDP",
			}),
		},
		{
			name: "policy verdict v1.19 layout unpadded, redirected to proxy, L3 device IPv6, auth",
			sample: policyHdr{new: true, remote: 3, verdict: 15001, flags: 1 | 0x04 | 0x80 | 3<<3, auth: 1}.bytes(
				ipv6("fd00::1", "fd00::2", 6, tcp(1, 80, tcpSYN, false, nil, nil))),
			want: l34(&flowpb.Flow{
				Verdict: flowpb.Verdict_REDIRECTED, AuthType: flowpb.AuthType_SPIRE, IP: ipv6f("fd00::1", "fd00::2"),
				L4: tcpf(1, 80, &flowpb.TCPFlags{SYN: true}), Source: ep(3), IsReply: boolp(false), EventType: et(5, 0),
				TrafficDirection: flowpb.TrafficDirection_INGRESS, PolicyMatchType: 3, Summary: "TCP Flags: SYN",
			}),
		},
		{
			name:   "policy verdict audited",
			sample: policyHdr{remote: 4, flags: 2 | 0x40 | 1<<3, padPerf: true}.bytes(eth(macA, macB, 0x0800, ipv4("10.0.0.1", "10.0.0.2", 1, icmp(8, 0, 0)))),
			want: l34(&flowpb.Flow{
				Verdict: flowpb.Verdict_AUDIT, Ethernet: ethf(macA, macB), IP: ipv4f("10.0.0.1", "10.0.0.2"),
				L4:          &flowpb.Layer4{Protocol: &flowpb.Layer4_ICMPv4{ICMPv4: &flowpb.ICMPv4{Type: 8}}},
				Destination: ep(4), IsReply: boolp(false), EventType: et(5, 0),
				TrafficDirection: flowpb.TrafficDirection_EGRESS, PolicyMatchType: 1, Summary: "ICMPv4 EchoRequest",
			}),
		},
		{
			name:   "policy verdict layout forced to v1.18",
			dec:    func(d *Decoder) { d.PolicyVerdictLayout = PolicyVerdictV1_18 },
			sample: policyHdr{remote: 4, flags: 1}.bytes(eth(macA, macB, 0x0800, ipv4("10.0.0.1", "10.0.0.2", 17, udp(1, 2, nil)))),
			want: l34(&flowpb.Flow{
				Verdict: flowpb.Verdict_FORWARDED, Ethernet: ethf(macA, macB), IP: ipv4f("10.0.0.1", "10.0.0.2"),
				L4: udpf(1, 2), Source: ep(4), IsReply: boolp(false), EventType: et(5, 0),
				TrafficDirection: flowpb.TrafficDirection_INGRESS, Summary: "UDP",
			}),
		},
		// Debug captures.
		{
			name:   "debug capture delivery: interface from arg1",
			sample: captureHdr(4, 11, 17, 0, tcpPkt(tcpACK)),
			want: l34(&flowpb.Flow{
				Ethernet: ethf(macA, macB), IP: ipv4f("10.244.0.156", "10.96.0.10"), L4: tcpf(43512, 8080, &flowpb.TCPFlags{ACK: true}),
				EventType: et(3, 4), DebugCapturePoint: flowpb.DebugCapturePoint_DBG_CAPTURE_DELIVERY,
				Interface: &flowpb.NetworkInterface{Index: 17}, Summary: "TCP Flags: ACK",
			}),
		},
		{
			name:   "debug capture proxy pre: proxy port from arg1 in network order",
			sample: captureHdr(8, 0, 0x993a0000, 0, tcpPkt(tcpACK)),
			want: l34(&flowpb.Flow{
				Ethernet: ethf(macA, macB), IP: ipv4f("10.244.0.156", "10.96.0.10"), L4: tcpf(43512, 8080, &flowpb.TCPFlags{ACK: true}),
				EventType: et(3, 8), DebugCapturePoint: flowpb.DebugCapturePoint_DBG_CAPTURE_PROXY_PRE,
				ProxyPort: 0x3a99, Summary: "TCP Flags: ACK",
			}),
		},
		{
			name:   "debug capture always starts at Ethernet",
			sample: captureHdr(6, 0, 0, 0, nil),
			want: l34(&flowpb.Flow{
				EventType: et(3, 6), DebugCapturePoint: flowpb.DebugCapturePoint_DBG_CAPTURE_AFTER_V46,
			}),
		},
		{
			name:   "debug capture shorter than its header",
			sample: captureHdr(4, 0, 0, 0, nil)[:20],
			err:    ErrMalformed,
		},
		// Packet shapes.
		{
			name: "IPv4 first fragment has no L4",
			sample: traceHdr{version: 1, reason: 5}.bytes(eth(macA, macB, 0x0800,
				ipv4("10.0.0.1", "10.0.0.2", 6, tcp(1, 2, tcpSYN, false, nil, nil), ip4Opts{flagsFrag: 1 << 13}))),
			want: l34(&flowpb.Flow{
				Verdict: flowpb.Verdict_FORWARDED, Ethernet: ethf(macA, macB), IP: ipv4f("10.0.0.1", "10.0.0.2"),
				EventType: et(4, 0), TraceObservationPoint: flowpb.TraceObservationPoint_TO_ENDPOINT, Summary: "IPv4",
			}),
		},
		{
			name: "IPv4 later fragment has no L4",
			sample: traceHdr{version: 1, reason: 5}.bytes(eth(macA, macB, 0x0800,
				ipv4("10.0.0.1", "10.0.0.2", 17, []byte{1, 2, 3, 4, 5, 6, 7, 8}, ip4Opts{flagsFrag: 185}))),
			want: l34(&flowpb.Flow{
				Verdict: flowpb.Verdict_FORWARDED, Ethernet: ethf(macA, macB), IP: ipv4f("10.0.0.1", "10.0.0.2"),
				EventType: et(4, 0), TraceObservationPoint: flowpb.TraceObservationPoint_TO_ENDPOINT, Summary: "IPv4",
			}),
		},
		{
			name: "IPv4 with options",
			sample: traceHdr{version: 1, reason: 5}.bytes(eth(macA, macB, 0x0800,
				ipv4("10.0.0.1", "10.0.0.2", 17, udp(7, 8, nil), ip4Opts{options: []byte{1, 1, 0x94, 4, 0, 0, 0, 0}}))),
			want: l34(&flowpb.Flow{
				Verdict: flowpb.Verdict_FORWARDED, Ethernet: ethf(macA, macB), IP: ipv4f("10.0.0.1", "10.0.0.2"), L4: udpf(7, 8),
				EventType: et(4, 0), TraceObservationPoint: flowpb.TraceObservationPoint_TO_ENDPOINT, Summary: "UDP",
			}),
		},
		{
			name: "IPv4 with an option of length 2 fails",
			sample: traceHdr{version: 1, reason: 5}.bytes(eth(macA, macB, 0x0800,
				ipv4("10.0.0.1", "10.0.0.2", 17, udp(7, 8, nil), ip4Opts{options: []byte{0x83, 2, 0, 0}}))),
			err: ErrMalformed,
		},
		{
			name: "IPv6 hop-by-hop then TCP",
			sample: traceHdr{version: 1, reason: 5, flags: flagIPv6}.bytes(eth(macA, macB, 0x86dd,
				ipv6("fe80::1", "ff02::16", 0, append([]byte{6, 0, 5, 2, 0, 0, 1, 0}, tcp(9, 10, tcpRST, false, nil, nil)...)))),
			want: l34(&flowpb.Flow{
				Verdict: flowpb.Verdict_FORWARDED, Ethernet: ethf(macA, macB), IP: ipv6f("fe80::1", "ff02::16"),
				L4: tcpf(9, 10, &flowpb.TCPFlags{RST: true}), EventType: et(4, 0),
				TraceObservationPoint: flowpb.TraceObservationPoint_TO_ENDPOINT, Summary: "TCP Flags: RST",
			}),
		},
		{
			name: "IPv6 routing header stops decoding",
			sample: traceHdr{version: 1, reason: 5}.bytes(eth(macA, macB, 0x86dd,
				ipv6("2001:db8::1", "2001:db8::2", 43, append([]byte{17, 0, 0, 0, 0, 0, 0, 0}, udp(1, 2, nil)...)))),
			want: l34(&flowpb.Flow{
				Verdict: flowpb.Verdict_FORWARDED, Ethernet: ethf(macA, macB), IP: ipv6f("2001:db8::1", "2001:db8::2"),
				EventType: et(4, 0), TraceObservationPoint: flowpb.TraceObservationPoint_TO_ENDPOINT, Summary: "IPv6",
			}),
		},
		{
			name: "IPv4-mapped IPv6 addresses print in dotted form",
			sample: traceHdr{version: 1, reason: 5}.bytes(eth(macA, macB, 0x86dd,
				ipv6("::ffff:10.0.0.1", "::1", 17, udp(1, 2, nil)))),
			want: l34(&flowpb.Flow{
				Verdict: flowpb.Verdict_FORWARDED, Ethernet: ethf(macA, macB), IP: ipv6f("10.0.0.1", "::1"), L4: udpf(1, 2),
				EventType: et(4, 0), TraceObservationPoint: flowpb.TraceObservationPoint_TO_ENDPOINT, Summary: "UDP",
			}),
		},
		{
			name: "IP in IP: the inner header wins",
			sample: traceHdr{version: 1, reason: 5}.bytes(eth(macA, macB, 0x0800,
				ipv4("1.0.0.1", "1.0.0.2", 4, ipv4("2.0.0.1", "2.0.0.2", 17, udp(3, 4, nil))))),
			want: l34(&flowpb.Flow{
				Verdict: flowpb.Verdict_FORWARDED, Ethernet: ethf(macA, macB), IP: ipv4f("2.0.0.1", "2.0.0.2"), L4: udpf(3, 4),
				EventType: et(4, 0), TraceObservationPoint: flowpb.TraceObservationPoint_TO_ENDPOINT, Summary: "UDP",
			}),
		},
		{
			name: "VLAN-tagged frame: Ethernet only",
			sample: traceHdr{version: 1, reason: 5}.bytes(eth(macA, macB, 0x8100,
				append([]byte{0, 10, 8, 0}, ipv4("1.0.0.1", "1.0.0.2", 17, udp(3, 4, nil))...))),
			want: l34(&flowpb.Flow{
				Verdict: flowpb.Verdict_FORWARDED, Ethernet: ethf(macA, macB),
				EventType: et(4, 0), TraceObservationPoint: flowpb.TraceObservationPoint_TO_ENDPOINT, Summary: "Ethernet",
			}),
		},
		{
			name: "IGMPv2 report",
			sample: traceHdr{version: 1, reason: 5}.bytes(eth(macA, macB, 0x0800,
				ipv4("10.0.0.1", "224.0.0.22", 2, []byte{0x16, 0, 0, 0, 239, 1, 2, 3}))),
			want: l34(&flowpb.Flow{
				Verdict: flowpb.Verdict_FORWARDED, Ethernet: ethf(macA, macB), IP: ipv4f("10.0.0.1", "224.0.0.22"),
				L4:        &flowpb.Layer4{Protocol: &flowpb.Layer4_IGMP{IGMP: &flowpb.IGMP{Type: 0x16, GroupAddress: "239.1.2.3"}}},
				EventType: et(4, 0), TraceObservationPoint: flowpb.TraceObservationPoint_TO_ENDPOINT,
				Summary: "IGMP IGMPv2 Membership Report",
			}),
		},
		{
			name: "VRRPv2 advertisement",
			sample: traceHdr{version: 1, reason: 5}.bytes(eth(macA, macB, 0x0800,
				ipv4("10.0.0.1", "224.0.0.18", 112, []byte{0x21, 7, 100, 1, 0, 1, 0, 0, 10, 0, 0, 254}))),
			want: l34(&flowpb.Flow{
				Verdict: flowpb.Verdict_FORWARDED, Ethernet: ethf(macA, macB), IP: ipv4f("10.0.0.1", "224.0.0.18"),
				L4:        &flowpb.Layer4{Protocol: &flowpb.Layer4_VRRP{VRRP: &flowpb.VRRP{Type: 1, Vrid: 7, Priority: 100}}},
				EventType: et(4, 0), TraceObservationPoint: flowpb.TraceObservationPoint_TO_ENDPOINT,
				Summary: "VRRP VRRPv2 Advertisement",
			}),
		},
		{
			name: "VRRP of an unknown type drops the event",
			sample: traceHdr{version: 1, reason: 5}.bytes(eth(macA, macB, 0x0800,
				ipv4("10.0.0.1", "224.0.0.18", 112, []byte{0x22, 7, 100, 1, 0, 1, 0, 0, 10, 0, 0, 254}))),
			err: ErrMalformed,
		},
		{
			name: "ICMPv4 unknown type",
			sample: traceHdr{version: 1, reason: 5}.bytes(eth(macA, macB, 0x0800,
				ipv4("10.0.0.1", "10.0.0.2", 1, icmp(42, 7, 0)))),
			want: l34(&flowpb.Flow{
				Verdict: flowpb.Verdict_FORWARDED, Ethernet: ethf(macA, macB), IP: ipv4f("10.0.0.1", "10.0.0.2"),
				L4:        &flowpb.Layer4{Protocol: &flowpb.Layer4_ICMPv4{ICMPv4: &flowpb.ICMPv4{Type: 42, Code: 7}}},
				EventType: et(4, 0), TraceObservationPoint: flowpb.TraceObservationPoint_TO_ENDPOINT, Summary: "ICMPv4 42(7)",
			}),
		},
		{
			name: "ICMPv6 echo reply with a stray code",
			sample: traceHdr{version: 1, reason: 5}.bytes(eth(macA, macB, 0x86dd,
				ipv6("fd00::1", "fd00::2", 58, icmp(129, 3, 0)))),
			want: l34(&flowpb.Flow{
				Verdict: flowpb.Verdict_FORWARDED, Ethernet: ethf(macA, macB), IP: ipv6f("fd00::1", "fd00::2"),
				L4:        &flowpb.Layer4{Protocol: &flowpb.Layer4_ICMPv6{ICMPv6: &flowpb.ICMPv6{Type: 129, Code: 3}}},
				EventType: et(4, 0), TraceObservationPoint: flowpb.TraceObservationPoint_TO_ENDPOINT, Summary: "ICMPv6 EchoReply(Code: 3)",
			}),
		},
		// Socket traces.
		{
			name:   "trace sock v1.19 layout, pre-translation forward TCP",
			sample: sockHdr{xlate: 1, proto: 1, dport: 80, cookie: 0x1122, cgroup: 0x3344, dst: netip.MustParseAddr("10.96.0.1")}.v119(),
			want: &flowpb.Flow{
				Time: timestamppb.New(testTime), Verdict: flowpb.Verdict_TRACED, IP: ipv4f("", "10.96.0.1"),
				L4:     &flowpb.Layer4{Protocol: &flowpb.Layer4_TCP{TCP: &flowpb.TCP{DestinationPort: 80}}},
				Source: ep(0), Destination: ep(0), Type: flowpb.FlowType_SOCK, EventType: et(7, 1),
				SockXlatePoint: flowpb.SocketTranslationPoint_SOCK_XLATE_POINT_PRE_DIRECTION_FWD,
				SocketCookie:   0x1122, CgroupId: 0x3344, Summary: "TCP",
			},
		},
		{
			name:   "trace sock v1.19 layout, post-translation reverse UDP IPv6: swapped",
			sample: sockHdr{xlate: 4, proto: 2, v6: true, dport: 53, cookie: 1, cgroup: 2, dst: netip.MustParseAddr("fd00::53")}.v119(),
			want: &flowpb.Flow{
				Time: timestamppb.New(testTime), Verdict: flowpb.Verdict_TRANSLATED, IP: ipv6f("fd00::53", ""),
				L4: udpf(53, 0), Source: ep(0), Destination: ep(0), Type: flowpb.FlowType_SOCK, EventType: et(7, 4),
				SockXlatePoint: flowpb.SocketTranslationPoint_SOCK_XLATE_POINT_POST_DIRECTION_REV,
				SocketCookie:   1, CgroupId: 2, Summary: "UDP",
			},
		},
		{
			name:   "trace sock v1.18 layout, unknown protocol",
			dec:    func(d *Decoder) { d.SockTraceVersion = SockTraceV1_18 },
			sample: sockHdr{xlate: 2, proto: 9, dport: 443, cookie: 5, cgroup: 6, dst: netip.MustParseAddr("1.2.3.4")}.v118(),
			want: &flowpb.Flow{
				Time: timestamppb.New(testTime), Verdict: flowpb.Verdict_TRANSLATED, IP: ipv4f("", "1.2.3.4"),
				Source: ep(0), Destination: ep(0), Type: flowpb.FlowType_SOCK, EventType: et(7, 2),
				SockXlatePoint: flowpb.SocketTranslationPoint_SOCK_XLATE_POINT_POST_DIRECTION_FWD,
				SocketCookie:   5, CgroupId: 6, Summary: "Unknown",
			},
		},
		{
			name:   "trace sock skipped on request",
			dec:    func(d *Decoder) { d.SkipSockTrace = true },
			sample: sockHdr{xlate: 1, proto: 1, dst: netip.MustParseAddr("1.2.3.4")}.v119(),
			err:    ErrSkip,
		},
		{
			name:   "trace sock too short",
			sample: sockHdr{xlate: 1, proto: 1, dst: netip.MustParseAddr("1.2.3.4")}.v119()[:39],
			err:    ErrMalformed,
		},
		// Not flows.
		{name: "debug message", sample: append([]byte{MessageTypeDebug}, make([]byte, 19)...), err: ErrSkip},
		{name: "agent event", sample: []byte{130, 1, 2, 3}, err: ErrSkip},
		{name: "recorder capture", sample: []byte{6, 0, 0, 0}, err: ErrSkip},
		{name: "unspecified type", sample: []byte{0}, err: ErrSkip},
		{name: "empty sample", sample: nil, err: ErrMalformed},
	}
}

func TestGolden(t *testing.T) {
	for _, g := range goldens() {
		t.Run(g.name, func(t *testing.T) {
			d := testDecoder()
			if g.dec != nil {
				g.dec(d)
			}
			f := new(flowpb.Flow)
			err := d.Decode(g.sample, f)
			if g.err != nil {
				if !errors.Is(err, g.err) {
					t.Fatalf("Decode error = %v, want %v", err, g.err)
				}
				return
			}
			if err != nil {
				t.Fatalf("Decode: %v", err)
			}
			if !proto.Equal(g.want, f) {
				t.Errorf("flow mismatch\nwant: %s\ngot:  %s", text(g.want), text(f))
			}
		})
	}
}

// TestReuse decodes every golden sample into one reused flow, in two
// orders, and checks each result equals a decode into a fresh flow: reused
// storage must never leak a field from an earlier sample.
func TestReuse(t *testing.T) {
	gs := goldens()
	var samples [][]byte
	var decs []func(*Decoder)
	for _, g := range gs {
		if g.err == nil {
			samples = append(samples, g.sample)
			decs = append(decs, g.dec)
		}
	}
	for _, order := range []string{"forward", "backward"} {
		reused := new(flowpb.Flow)
		d := testDecoder()
		for i := range samples {
			j := i
			if order == "backward" {
				j = len(samples) - 1 - i
			}
			*d = Decoder{Now: d.Now, IPTraceOptionType: d.IPTraceOptionType, addrs: d.addrs}
			if decs[j] != nil {
				decs[j](d)
			}
			if err := d.Decode(samples[j], reused); err != nil {
				t.Fatalf("%s %d: %v", order, j, err)
			}
			fresh := new(flowpb.Flow)
			fd := testDecoder()
			if decs[j] != nil {
				decs[j](fd)
			}
			if err := fd.Decode(samples[j], fresh); err != nil {
				t.Fatal(err)
			}
			if !proto.Equal(fresh, reused) {
				t.Fatalf("%s sample %d: reused flow differs:\n%s", order, j, "fresh: "+text(fresh)+"\nreused: "+text(reused))
			}
		}
	}
}

func text(m proto.Message) string { return prototext.MarshalOptions{}.Format(m) }
