package generate

import (
	"google.golang.org/protobuf/types/known/timestamppb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	flowpb "github.com/flowbus/flowbus/flow"
	"github.com/flowbus/flowbus/internal/freelist"
)

// Flows are filled from reused storage: when a batch slot hands back the
// Flow of an earlier event (pipeline.Event.FlowStorage), every nested
// message of that Flow is owned by the slot again, so the generator takes
// them apart into free lists and builds the new flow from those. In a
// steady state no message is allocated, whatever mix of flow shapes each
// slot sees.

// maxFree bounds each free list.
const maxFree = 1 << 14

// pools holds the free lists of every message type the generator uses.
type pools struct {
	ts        freelist.List[timestamppb.Timestamp]
	boolv     freelist.List[wrapperspb.BoolValue]
	emitter   freelist.List[flowpb.Emitter]
	eth       freelist.List[flowpb.Ethernet]
	ip        freelist.List[flowpb.IP]
	l4        freelist.List[flowpb.Layer4]
	l4tcp     freelist.List[flowpb.Layer4_TCP]
	l4udp     freelist.List[flowpb.Layer4_UDP]
	l4icmp4   freelist.List[flowpb.Layer4_ICMPv4]
	l4icmp6   freelist.List[flowpb.Layer4_ICMPv6]
	l4sctp    freelist.List[flowpb.Layer4_SCTP]
	tcp       freelist.List[flowpb.TCP]
	flags     freelist.List[flowpb.TCPFlags]
	udp       freelist.List[flowpb.UDP]
	icmp4     freelist.List[flowpb.ICMPv4]
	icmp6     freelist.List[flowpb.ICMPv6]
	sctp      freelist.List[flowpb.SCTP]
	ep        freelist.List[flowpb.Endpoint]
	workload  freelist.List[flowpb.Workload]
	l7        freelist.List[flowpb.Layer7]
	l7dns     freelist.List[flowpb.Layer7_Dns]
	l7http    freelist.List[flowpb.Layer7_Http]
	l7kafka   freelist.List[flowpb.Layer7_Kafka]
	dns       freelist.List[flowpb.DNS]
	http      freelist.List[flowpb.HTTP]
	header    freelist.List[flowpb.HTTPHeader]
	kafka     freelist.List[flowpb.Kafka]
	eventType freelist.List[flowpb.CiliumEventType]
	service   freelist.List[flowpb.Service]
	iface     freelist.List[flowpb.NetworkInterface]
	traceCtx  freelist.List[flowpb.TraceContext]
	traceP    freelist.List[flowpb.TraceParent]
	policy    freelist.List[flowpb.Policy]

	// Spare backing arrays of Flow-level slices a flow did not use.
	strs [][]string
	pols [][]*flowpb.Policy
}

// strSlice returns s, or a spare empty slice with capacity when s has none.
func (p *pools) strSlice(s []string) []string {
	if cap(s) == 0 && len(p.strs) > 0 {
		s = p.strs[len(p.strs)-1]
		p.strs = p.strs[:len(p.strs)-1]
	}
	return s
}

// polSlice is strSlice for policy lists.
func (p *pools) polSlice(s []*flowpb.Policy) []*flowpb.Policy {
	if cap(s) == 0 && len(p.pols) > 0 {
		s = p.pols[len(p.pols)-1]
		p.pols = p.pols[:len(p.pols)-1]
	}
	return s
}

// keepUnused saves the slices of sl that f did not take. (Plain
// statements: a loop over the pairs built an array of them for every
// flow.)
func (p *pools) keepUnused(f *flowpb.Flow, sl *flowSlices) {
	keepSpare(&p.strs, f.NodeLabels, sl.nodeLabels)
	keepSpare(&p.strs, f.SourceNames, sl.srcNames)
	keepSpare(&p.strs, f.DestinationNames, sl.dstNames)
	keepSpare(&p.pols, f.EgressAllowedBy, sl.egressAllowed)
	keepSpare(&p.pols, f.IngressAllowedBy, sl.ingressAllowed)
	keepSpare(&p.pols, f.EgressDeniedBy, sl.egressDenied)
	keepSpare(&p.pols, f.IngressDeniedBy, sl.ingressDenied)
}

// keepSpare saves spare in free when the flow left it unused (used is nil).
func keepSpare[T any](free *[][]T, used, spare []T) {
	if used == nil && cap(spare) > 0 && len(*free) < maxFree {
		*free = append(*free, spare)
	}
}

// flowSlices are the slices of a Flow kept across reuse.
type flowSlices struct {
	nodeLabels, srcNames, dstNames []string
	egressAllowed, ingressAllowed  []*flowpb.Policy
	egressDenied, ingressDenied    []*flowpb.Policy
}

// recycle takes f apart into the free lists, resets it and returns its
// slices (emptied) for reuse.
func (p *pools) recycle(f *flowpb.Flow) flowSlices {
	p.ts.Put(f.Time, maxFree)
	p.emitter.Put(f.Emitter, maxFree)
	p.eth.Put(f.Ethernet, maxFree)
	p.ip.Put(f.IP, maxFree)
	if l4 := f.L4; l4 != nil {
		p.recycleL4(l4)
		p.l4.Put(l4, maxFree)
	}
	p.recycleEndpoint(f.Source)
	p.recycleEndpoint(f.Destination)
	if l7 := f.L7; l7 != nil {
		switch r := l7.Record.(type) {
		case *flowpb.Layer7_Dns:
			p.dns.Put(r.Dns, maxFree)
			r.Dns = nil
			p.l7dns.Put(r, maxFree)
		case *flowpb.Layer7_Http:
			if h := r.Http; h != nil {
				h.Headers = putAll(&p.header, h.Headers)
				p.http.Put(h, maxFree)
			}
			r.Http = nil
			p.l7http.Put(r, maxFree)
		case *flowpb.Layer7_Kafka:
			p.kafka.Put(r.Kafka, maxFree)
			r.Kafka = nil
			p.l7kafka.Put(r, maxFree)
		}
		l7.Record = nil
		p.l7.Put(l7, maxFree)
	}
	p.eventType.Put(f.EventType, maxFree)
	p.service.Put(f.SourceService, maxFree)
	p.service.Put(f.DestinationService, maxFree)
	p.boolv.Put(f.IsReply, maxFree)
	p.iface.Put(f.Interface, maxFree)
	if tc := f.TraceContext; tc != nil {
		p.traceP.Put(tc.Parent, maxFree)
		tc.Parent = nil
		p.traceCtx.Put(tc, maxFree)
	}
	s := flowSlices{
		nodeLabels:     f.NodeLabels[:0],
		srcNames:       f.SourceNames[:0],
		dstNames:       f.DestinationNames[:0],
		egressAllowed:  p.recyclePolicies(f.EgressAllowedBy),
		ingressAllowed: p.recyclePolicies(f.IngressAllowedBy),
		egressDenied:   p.recyclePolicies(f.EgressDeniedBy),
		ingressDenied:  p.recyclePolicies(f.IngressDeniedBy),
	}
	f.Reset()
	return s
}

func (p *pools) recycleL4(l4 *flowpb.Layer4) {
	switch r := l4.Protocol.(type) {
	case *flowpb.Layer4_TCP:
		if t := r.TCP; t != nil {
			p.flags.Put(t.Flags, maxFree)
			t.Flags = nil
			p.tcp.Put(t, maxFree)
		}
		r.TCP = nil
		p.l4tcp.Put(r, maxFree)
	case *flowpb.Layer4_UDP:
		p.udp.Put(r.UDP, maxFree)
		r.UDP = nil
		p.l4udp.Put(r, maxFree)
	case *flowpb.Layer4_ICMPv4:
		p.icmp4.Put(r.ICMPv4, maxFree)
		r.ICMPv4 = nil
		p.l4icmp4.Put(r, maxFree)
	case *flowpb.Layer4_ICMPv6:
		p.icmp6.Put(r.ICMPv6, maxFree)
		r.ICMPv6 = nil
		p.l4icmp6.Put(r, maxFree)
	case *flowpb.Layer4_SCTP:
		p.sctp.Put(r.SCTP, maxFree)
		r.SCTP = nil
		p.l4sctp.Put(r, maxFree)
	}
	l4.Protocol = nil
}

// putAll frees the messages of s, those in its spare capacity too, and
// returns s emptied with its backing array cleared.
//
// The spare capacity matters: a decoder that later reuses the Flow (see
// pipeline.Event.FlowStorage) extends a list within its capacity and
// decodes into the elements it finds there. A pointer left there after its
// message went to a free list would alias a message of another flow, and
// that decode would overwrite it.
func putAll[T any](p *freelist.List[T], s []*T) []*T {
	s = s[:cap(s)]
	for _, x := range s {
		p.Put(x, maxFree)
	}
	clear(s)
	return s[:0]
}

// recycleEndpoint frees e's workloads; e keeps its slices for reuse.
func (p *pools) recycleEndpoint(e *flowpb.Endpoint) {
	if e == nil {
		return
	}
	e.Workloads = putAll(&p.workload, e.Workloads)
	p.ep.Put(e, maxFree)
}

func (p *pools) recyclePolicies(ps []*flowpb.Policy) []*flowpb.Policy {
	return putAll(&p.policy, ps)
}

// policyMsg returns a zeroed Policy whose labels keep their storage.
func (p *pools) policyMsg() *flowpb.Policy {
	x := p.policy.Get()
	labels := x.Labels[:0]
	x.Reset()
	x.Labels = labels
	return x
}

// dnsMsg returns a zeroed DNS whose slices keep their storage.
func (p *pools) dnsMsg() *flowpb.DNS {
	x := p.dns.Get()
	ips, cnames, qtypes, rrtypes := x.Ips[:0], x.Cnames[:0], x.Qtypes[:0], x.Rrtypes[:0]
	x.Reset()
	x.Ips, x.Cnames, x.Qtypes, x.Rrtypes = ips, cnames, qtypes, rrtypes
	return x
}

// httpMsg returns a zeroed HTTP whose header slice keeps its storage.
func (p *pools) httpMsg() *flowpb.HTTP {
	x := p.http.Get()
	headers := x.Headers[:0]
	x.Reset()
	x.Headers = headers
	return x
}
