//go:build linux

package bpf

import "strings"

// DropReasonUnknown is the drop reason (DropNotify subtype, hence
// event_type.sub_type and drop_reason) of a kernel drop that no Cilium reason
// describes. It is not 0, which Cilium's tools print as "Success", and no
// Cilium reason uses it: Hubble prints it as the number; flowbus sets
// drop_reason_desc to DROP_REASON_UNKNOWN for it.
const DropReasonUnknown = 255

// ciliumReasons maps the kernel's drop reasons (names without the
// SKB_DROP_REASON_ prefix) to the Cilium drop reason that means the same
// thing. Reasons not listed become DropReasonUnknown; the kernel's name
// still travels with the sample.
var ciliumReasons = map[string]uint8{
	// A firewall rule dropped the packet: Cilium's "Policy denied".
	"NETFILTER_DROP": 133, // POLICY_DENIED
	// The IP header is malformed or the packet too short to hold one.
	"PKT_TOO_SMALL": 134, // INVALID_PACKET_DROPPED
	"IP_INHDR":      134,
	"HDR_TRUNC":     134,
	// Reverse-path filter, martian or local source: the source IP is not
	// acceptable on this interface.
	"IP_RPFILTER":       132, // INVALID_SOURCE_IP
	"IP_INVALID_SOURCE": 132,
	"IP_LOCAL_SOURCE":   132,
	// No handler for the IP protocol / the ethertype.
	"IP_NOPROTO":      142, // UNKNOWN_L4_PROTOCOL
	"UNHANDLED_PROTO": 139, // UNSUPPORTED_L3_PROTOCOL
	// No route.
	"IP_OUTNOROUTES": 169, // FIB_LOOKUP_FAILED
	"IP_INNOROUTES":  169,
	// A bad IPv6 extension header.
	"IPV6_BAD_EXTHDR": 156, // INVALID_IPV6_EXTENSION_HEADER
}

// silentReasons are not drops worth reporting: a normal free, the kernel
// saying nothing about why (it fires for many ordinary frees), or a socket
// discarding its own queues as it closes (the packets had already arrived;
// no packet was dropped on its way).
var silentReasons = map[string]bool{
	"SKB_NOT_DROPPED_YET": true,
	"SKB_CONSUMED":        true,
	"NOT_SPECIFIED":       true,
	"QUEUE_PURGE":         true,
	"SOCKET_CLOSE":        true,
	"MAX":                 true,
	"SUBSYS_MASK":         true,
}

// CiliumDropReason returns the Cilium drop reason for a kernel reason name
// (without the SKB_DROP_REASON_ prefix), or DropReasonUnknown if none means
// the same.
func CiliumDropReason(kernel string) uint8 {
	if r, ok := ciliumReasons[strings.TrimPrefix(kernel, "SKB_DROP_REASON_")]; ok {
		return r
	}
	return DropReasonUnknown
}

// DropReasonConfig builds the drop program's configuration from the
// kernel's reasons (see KernelDropReasons): every reason is reported except
// the silent ones, and subsystem reasons (beyond the table) are reported
// as unknown.
func DropReasonConfig(kernel map[uint32]string) map[uint32]DropReason {
	m := make(map[uint32]DropReason, len(kernel)+1)
	for v, name := range kernel {
		if v >= dropReasonEntries || silentReasons[name] {
			continue
		}
		m[v] = DropReason{Cilium: CiliumDropReason(name), Report: true}
	}
	m[dropReasonEntries-1] = DropReason{Cilium: DropReasonUnknown, Report: true}
	return m
}
