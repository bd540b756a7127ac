// Package datapath decodes Cilium datapath events — the perf samples that
// Cilium's BPF programs (and flowbus's own) emit: TraceNotify, DropNotify,
// PolicyVerdictNotify, DebugCapture and TraceSockNotify, each followed by the
// first bytes of the packet — into Hubble flows, setting every field that
// Hubble derives from the sample itself exactly as Hubble's parser does.
// Fields that Hubble takes from agent state (endpoint IDs, pods, namespaces,
// labels, names, services, policies) are left empty for an enrichment stage.
//
// A Decoder decodes into caller-owned storage and reuses the nested messages
// it finds there, so a steady stream of samples decodes without allocating
// (beyond the address strings it has not seen recently). A Decoder is not
// safe for concurrent use; use one per goroutine.
//
// What a flow holds, compared with Hubble's for the same sample:
//   - Every field Hubble derives from the sample is the same, packet
//     decoding included (the gopacketdiff module checks it against
//     gopacket, which Hubble uses). A sample Hubble rejects (a truncated
//     TCP header, an unknown header version, ...) is ErrMalformed here.
//   - source and destination carry the datapath's security identities and
//     nothing else; Hubble adds endpoint IDs, pods, labels, names and
//     services from agent state, which an enrichment stage can add.
//   - traffic_direction is what Hubble computes when it knows no local
//     endpoint (drops with a source endpoint are INGRESS; traces are EGRESS
//     only for replies and SNAT).
//   - uuid and emitter are not set, node_name is left to the caller, and
//     time is the decode time (as Hubble's is the agent's receive time).
//   - Socket traces become SOCK flows without a source address, where
//     Hubble skips them unless it can map the cgroup to a pod
//     (Decoder.SkipSockTrace does the same).
package datapath

import (
	"errors"
	"fmt"
	"time"

	flowpb "github.com/flowbus/flowbus/flow"
)

// Message types: the first byte of every sample (Cilium's
// pkg/monitor/api MessageType* values).
const (
	MessageTypeUnspec        = 0
	MessageTypeDrop          = 1
	MessageTypeDebug         = 2
	MessageTypeCapture       = 3
	MessageTypeTrace         = 4
	MessageTypePolicyVerdict = 5
	MessageTypeRecCapture    = 6
	MessageTypeTraceSock     = 7
	MessageTypeAccessLog     = 129
	MessageTypeAgent         = 130
)

var (
	// ErrSkip is returned for a sample that is valid but is not a flow:
	// agent events, debug messages, recorder captures, and message types
	// that Hubble ignores. Callers count it and move on.
	ErrSkip = errors.New("datapath: not a flow")
	// ErrMalformed is wrapped by every error about a sample that cannot be
	// decoded: too short, an unknown header version, a truncated packet
	// layer. Hubble drops such a sample; so should the caller, after
	// counting it.
	ErrMalformed = errors.New("datapath: malformed sample")
)

// SockTraceVersion selects the TraceSockNotify layout, which the bytes of a
// sample cannot tell apart (both layouts are 44 bytes after perf padding).
type SockTraceVersion int

const (
	// SockTraceV1_19 is the 40-byte layout of Cilium v1.19 and later
	// (the default).
	SockTraceV1_19 SockTraceVersion = iota
	// SockTraceV1_18 is the packed 38-byte layout of Cilium v1.18 and
	// earlier.
	SockTraceV1_18
)

// Decoder decodes datapath samples into flows. The zero value is ready to
// use and decodes like Hubble v1.20.
type Decoder struct {
	// SockTraceVersion is the TraceSockNotify layout of the Cilium that
	// emitted the samples.
	SockTraceVersion SockTraceVersion

	// IPTraceOptionType is copied to Flow.ip_trace_id.ip_option_type when
	// a sample carries an IP trace ID (Cilium's ip-tracing-option-type
	// agent setting; 0 when unset).
	IPTraceOptionType uint32

	// Now returns the time written to Flow.time, which for Hubble is the
	// time the event was received, not a kernel timestamp. Nil means
	// time.Now. Set NoTime to leave Flow.time unset for the caller.
	Now    func() time.Time
	NoTime bool

	// PolicyVerdictLayout selects the PolicyVerdictNotify header layout;
	// the default tells them apart by length.
	PolicyVerdictLayout PolicyVerdictLayout

	// SkipSockTrace makes TraceSockNotify samples return ErrSkip. Hubble
	// skips a socket trace whose cgroup it cannot map to a pod (its
	// default), which without agent state is every one of them; by
	// default flowbus decodes them with an empty source address.
	SkipSockTrace bool

	addrs        addrCache
	outer, inner layers
	l7           l7State
	gob          gobCache
}

// Decode decodes one raw datapath sample (data[0] is the message type) into
// f, which the caller owns. Every field of f is overwritten or reset, and the
// nested messages already in f are reused where the new flow needs them, so f
// may be the Flow of an earlier call. f.node_name is left empty: the caller
// knows the node. Access-log records (type 129, as the monitor socket
// carries them) are decoded as with DecodeAccessLog.
//
// It returns ErrSkip for samples that are not flows, and an error wrapping
// ErrMalformed for samples that cannot be decoded; f's contents are then
// unspecified. It never panics.
func (d *Decoder) Decode(data []byte, f *flowpb.Flow) error {
	if len(data) == 0 {
		return malformed("empty sample")
	}
	// Bounds checks that mirror gopacket's use the capacity; make it the
	// sample's end, whatever buffer the sample sits in.
	data = data[:len(data):len(data)]
	switch data[0] {
	case MessageTypeDrop, MessageTypeTrace, MessageTypePolicyVerdict, MessageTypeCapture:
		return d.decodeL34(data, f)
	case MessageTypeTraceSock:
		return d.decodeSock(data, f)
	case MessageTypeAccessLog:
		return d.DecodeAccessLog(data[1:], f)
	default:
		return ErrSkip
	}
}

func malformed(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrMalformed}, args...)...)
}

func (d *Decoder) now() time.Time {
	if d.Now != nil {
		return d.Now()
	}
	return time.Now()
}
