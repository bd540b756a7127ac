package flowfilter

// Predicates on layer 4: protocols, ports and TCP flags.

import (
	"errors"
	"slices"
	"strconv"
	"strings"

	flowpb "github.com/flowbus/flowbus/flow"
)

// Protocol bits for the protocol filter.
const (
	protoICMPv4 = 1 << iota
	protoICMPv6
	protoTCP
	protoUDP
	protoSCTP
	protoVRRP
	protoIGMP
	protoDNS
	protoHTTP
)

// protocol: case-insensitive names icmp (v4 or v6), icmpv4, icmpv6, tcp,
// udp, sctp, vrrp, igmp (the l4 oneof member is set) and dns, http (the l7
// record is set). Other names are errors; kafka was dropped in Hubble
// v1.20.
func protocolFilter(names []string) (predicate, error) {
	if len(names) == 0 {
		return nil, nil
	}
	var want uint32
	for i, n := range names {
		switch strings.ToLower(n) {
		case "icmp":
			want |= protoICMPv4 | protoICMPv6
		case "icmpv4":
			want |= protoICMPv4
		case "icmpv6":
			want |= protoICMPv6
		case "tcp":
			want |= protoTCP
		case "udp":
			want |= protoUDP
		case "sctp":
			want |= protoSCTP
		case "vrrp":
			want |= protoVRRP
		case "igmp":
			want |= protoIGMP
		case "dns":
			want |= protoDNS
		case "http":
			want |= protoHTTP
		default:
			return nil, fieldErrf("protocol", i, n, "unknown protocol (want icmp, icmpv4, icmpv6, tcp, udp, sctp, vrrp, igmp, dns or http)")
		}
	}
	return func(f *flowpb.Flow) bool {
		var have uint32
		l4 := f.GetL4()
		switch {
		case l4.GetTCP() != nil:
			have = protoTCP
		case l4.GetUDP() != nil:
			have = protoUDP
		case l4.GetICMPv4() != nil:
			have = protoICMPv4
		case l4.GetICMPv6() != nil:
			have = protoICMPv6
		case l4.GetSCTP() != nil:
			have = protoSCTP
		case l4.GetVRRP() != nil:
			have = protoVRRP
		case l4.GetIGMP() != nil:
			have = protoIGMP
		}
		l7 := f.GetL7()
		if l7.GetDns() != nil {
			have |= protoDNS
		}
		if l7.GetHttp() != nil {
			have |= protoHTTP
		}
		return have&want != 0
	}, nil
}

// source_port / destination_port: entries are ParseUint(p, 10, 16); only
// TCP, UDP and SCTP ports count (other protocols never match); exact
// equality of the port truncated to 16 bits.
func portFilter(field string, entries []string, source bool) (predicate, error) {
	if len(entries) == 0 {
		return nil, nil
	}
	ports := make([]uint16, 0, len(entries))
	for i, p := range entries {
		n, err := strconv.ParseUint(p, 10, 16)
		if err != nil {
			return nil, fieldErrf(field, i, p, "invalid port: %v", errors.Unwrap(err))
		}
		ports = append(ports, uint16(n))
	}
	return func(f *flowpb.Flow) bool {
		l4 := f.GetL4()
		var port uint32
		switch {
		case l4.GetTCP() != nil:
			if source {
				port = l4.GetTCP().GetSourcePort()
			} else {
				port = l4.GetTCP().GetDestinationPort()
			}
		case l4.GetUDP() != nil:
			if source {
				port = l4.GetUDP().GetSourcePort()
			} else {
				port = l4.GetUDP().GetDestinationPort()
			}
		case l4.GetSCTP() != nil:
			if source {
				port = l4.GetSCTP().GetSourcePort()
			} else {
				port = l4.GetSCTP().GetDestinationPort()
			}
		default:
			return false
		}
		return slices.Contains(ports, uint16(port))
	}, nil
}

// TCP flag bits for tcp_flags.
func tcpFlagBits(fl *flowpb.TCPFlags) uint16 {
	var b uint16
	set := func(on bool, bit uint16) {
		if on {
			b |= bit
		}
	}
	set(fl.GetFIN(), 1<<0)
	set(fl.GetSYN(), 1<<1)
	set(fl.GetRST(), 1<<2)
	set(fl.GetPSH(), 1<<3)
	set(fl.GetACK(), 1<<4)
	set(fl.GetURG(), 1<<5)
	set(fl.GetECE(), 1<<6)
	set(fl.GetCWR(), 1<<7)
	set(fl.GetNS(), 1<<8)
	return b
}

// tcp_flags: the flow must have l4.TCP.flags, and for some entry every
// flag set in the entry is set in the flow (extra flags are allowed).
func tcpFlagsFilter(entries []*flowpb.TCPFlags) (predicate, error) {
	if len(entries) == 0 {
		return nil, nil
	}
	masks := make([]uint16, len(entries))
	for i, e := range entries {
		masks[i] = tcpFlagBits(e)
	}
	return func(f *flowpb.Flow) bool {
		fl := f.GetL4().GetTCP().GetFlags()
		if fl == nil {
			return false
		}
		have := tcpFlagBits(fl)
		for _, m := range masks {
			if have&m == m {
				return true
			}
		}
		return false
	}, nil
}
