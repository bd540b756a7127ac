package sinkutil

import (
	"strconv"

	"github.com/flowbus/flowbus/codec"
	flowpb "github.com/flowbus/flowbus/flow"
	"github.com/flowbus/flowbus/pipeline"
)

// Header names flowbus puts on every Kafka record and NATS message.
const (
	HeaderContentType = "content-type"
	HeaderSchema      = "flowbus-schema"
	HeaderNode        = "flowbus-node"
	HeaderSampleRate  = "flowbus-sample-rate"
	HeaderSeq         = "flowbus-seq"
)

// SchemaName is the value of the flowbus-schema header.
const SchemaName = codec.Schema

// NodeOf returns the node an event is from: its envelope node name, or
// flowbus's own (def) when it has none.
func NodeOf(e *pipeline.Event, def string) string {
	if e.NodeName != "" {
		return e.NodeName
	}
	return def
}

// AppendSampleRate appends the flowbus-sample-rate value of e and reports
// whether the header applies (a rate above 1).
func AppendSampleRate(dst []byte, e *pipeline.Event) ([]byte, bool) {
	if e.SampleRate <= 1 {
		return dst, false
	}
	return strconv.AppendUint(dst, uint64(e.SampleRate), 10), true
}

// AppendConnectionKey appends a key that is the same for both directions of
// a connection: the protocol and the two (address, port) endpoints in a
// fixed order, e.g. "TCP 10.0.0.1:80 10.0.0.2:43122". It reports false for
// events without IP addresses (LostEvents, L2-only flows).
func AppendConnectionKey(dst []byte, f *flowpb.Flow) ([]byte, bool) {
	if f == nil || f.IP == nil || (f.IP.Source == "" && f.IP.Destination == "") {
		return dst, false
	}
	proto := "IP"
	var sp, dp uint32
	if l4 := f.L4; l4 != nil {
		switch p := l4.Protocol.(type) {
		case *flowpb.Layer4_TCP:
			proto, sp, dp = "TCP", p.TCP.GetSourcePort(), p.TCP.GetDestinationPort()
		case *flowpb.Layer4_UDP:
			proto, sp, dp = "UDP", p.UDP.GetSourcePort(), p.UDP.GetDestinationPort()
		case *flowpb.Layer4_SCTP:
			proto, sp, dp = "SCTP", p.SCTP.GetSourcePort(), p.SCTP.GetDestinationPort()
		case *flowpb.Layer4_ICMPv4:
			proto = "ICMPv4"
		case *flowpb.Layer4_ICMPv6:
			proto = "ICMPv6"
		case *flowpb.Layer4_VRRP:
			proto = "VRRP"
		case *flowpb.Layer4_IGMP:
			proto = "IGMP"
		}
	}
	a, b := f.IP.Source, f.IP.Destination
	ap, bp := sp, dp
	if a > b || (a == b && ap > bp) {
		a, b, ap, bp = b, a, bp, ap
	}
	dst = append(dst, proto...)
	dst = appendEndpoint(append(dst, ' '), a, ap)
	dst = appendEndpoint(append(dst, ' '), b, bp)
	return dst, true
}

func appendEndpoint(dst []byte, ip string, port uint32) []byte {
	v6 := false
	for i := 0; i < len(ip); i++ {
		if ip[i] == ':' {
			v6 = true
			break
		}
	}
	if v6 {
		dst = append(dst, '[')
		dst = append(dst, ip...)
		dst = append(dst, ']')
	} else {
		dst = append(dst, ip...)
	}
	dst = append(dst, ':')
	return strconv.AppendUint(dst, uint64(port), 10)
}

// AppendSourcePod appends "namespace/pod" of the flow's source, or the
// source IP when the source is not a pod; false when neither is known.
func AppendSourcePod(dst []byte, f *flowpb.Flow) ([]byte, bool) {
	if f == nil {
		return dst, false
	}
	if s := f.Source; s != nil && s.PodName != "" {
		if s.Namespace != "" {
			dst = append(dst, s.Namespace...)
			dst = append(dst, '/')
		}
		return append(dst, s.PodName...), true
	}
	if f.IP != nil && f.IP.Source != "" {
		return append(dst, f.IP.Source...), true
	}
	return dst, false
}

// SeqPrefix is the start of a sink's flowbus-seq values: "NODE/SINK/",
// flowbus's node name and the sink's name.
func SeqPrefix(node, sink string) string { return node + "/" + sink + "/" }

// AppendSeq appends the flowbus-seq value of event i of b: the sink's
// prefix (SeqPrefix), then "EPOCH/N", the epoch and number of
// pipeline.Batch.Seq, e.g. "node-1/bus/1764777600123456/42". It reports
// false for a batch that carries no numbers.
func AppendSeq(dst []byte, prefix string, b *pipeline.Batch, i int) ([]byte, bool) {
	epoch, n, ok := b.Seq(i)
	if !ok {
		return dst, false
	}
	dst = append(dst, prefix...)
	dst = strconv.AppendInt(dst, epoch, 10)
	dst = append(dst, '/')
	return strconv.AppendUint(dst, n, 10), true
}
