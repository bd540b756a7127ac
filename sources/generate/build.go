package generate

import (
	"strings"

	flowpb "github.com/flowbus/flowbus/flow"
)

// Cilium monitor message types (CiliumEventType.type).
const (
	msgDrop          = 1
	msgTrace         = 4
	msgPolicyVerdict = 5
	msgAccessLog     = 129
)

// Policy match types of policy verdict events.
const (
	matchL3Only = 1
	matchL3L4   = 2
)

// tcpSummaries[flags] is Hubble's summary of a TCP segment.
var tcpSummaries = func() [32]string {
	var s [32]string
	names := []struct {
		bit  uint8
		name string
	}{{fSYN, "SYN"}, {fACK, "ACK"}, {fRST, "RST"}, {fFIN, "FIN"}, {fPSH, "PSH"}}
	for f := range s {
		var parts []string
		for _, n := range names {
			if uint8(f)&n.bit != 0 {
				parts = append(parts, n.name)
			}
		}
		s[f] = "TCP Flags: " + strings.Join(parts, ", ")
	}
	return s
}()

func icmpSummary(v6 bool, typ, code uint32) string {
	if v6 {
		switch typ {
		case 128:
			return "ICMPv6 EchoRequest"
		case 129:
			return "ICMPv6 EchoReply"
		}
		return "ICMPv6"
	}
	switch {
	case typ == 8:
		return "ICMPv4 EchoRequest"
	case typ == 0:
		return "ICMPv4 EchoReply"
	case typ == 3 && code == 3:
		return "ICMPv4 DestinationUnreachable(Port)"
	}
	return "ICMPv4"
}

var (
	requestHeaders = [...][2]string{
		{"Accept", "application/json"},
		{"Authorization", "Bearer eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJzdmMtY2hlY2tvdXQifQ.c2lnbmF0dXJl"},
		{"Cookie", "session=8f14e45fceea167a5a36dedd4bea2543; theme=dark"},
		{"Traceparent", ""}, // per conversation
		{"User-Agent", "shop-client/2.3.1 (go1.26)"},
		{"X-Api-Key", "ak_live_9b1deb4d3b7d4bad9bdd2b0d7b3dcb6d"},
		{"X-Request-Id", ""}, // per conversation
	}
	responseHeaders = [...][2]string{
		{"Content-Type", "application/json; charset=utf-8"},
		{"Server", "envoy"},
		{"Set-Cookie", "session=8f14e45fceea167a5a36dedd4bea2543; Path=/; HttpOnly"},
		{"X-Envoy-Upstream-Service-Time", "3"},
		{"X-Request-Id", ""},
	}
)

// build fills the reset flow f with step st of conversation c. Nested
// messages come from the free lists with stale contents: every field of
// each is assigned (TestReuse checks this against flows that set every
// field), which saves a Reset per message.
func (g *Generator) build(f *flowpb.Flow, c *conv, st *step, sl flowSlices, unixNano int64) {
	p := &g.pools
	ts := p.ts.Get()
	ts.Seconds, ts.Nanos = unixNano/1e9, int32(unixNano%1e9)
	f.Time = ts
	f.Uuid = g.uuid()
	em := p.emitter.Get()
	em.Name, em.Version = "Hubble", emitterVersion
	f.Emitter = em

	src, dst := c.client, c.server
	if st.reply {
		src, dst = dst, src
	}
	obs := c.client
	if c.atServer {
		obs = c.server
	}
	f.NodeName = obs.node.name
	f.NodeLabels = append(p.strSlice(sl.nodeLabels), obs.node.labels...)
	f.Source = g.endpointMsg(src, obs.node)
	f.Destination = g.endpointMsg(dst, obs.node)
	if len(src.names) > 0 {
		f.SourceNames = append(p.strSlice(sl.srcNames), src.names...)
	}
	if len(dst.names) > 0 {
		f.DestinationNames = append(p.strSlice(sl.dstNames), dst.names...)
	}
	if c.service != nil {
		svc := p.service.Get()
		svc.Name, svc.Namespace = c.service.name, c.service.namespace
		if st.reply {
			f.SourceService = svc
		} else {
			f.DestinationService = svc
		}
	}
	if c.atServer {
		f.TrafficDirection = flowpb.TrafficDirection_INGRESS
	} else {
		f.TrafficDirection = flowpb.TrafficDirection_EGRESS
	}
	if c.proto != pNone {
		ip := p.ip.Get()
		if c.v6 {
			ip.Source, ip.Destination, ip.IpVersion = src.ipv6, dst.ipv6, flowpb.IPVersion_IPv6
		} else {
			ip.Source, ip.Destination, ip.IpVersion = src.ipv4, dst.ipv4, flowpb.IPVersion_IPv4
		}
		ip.SourceXlated, ip.Encrypted = "", false
		f.IP = ip
	}
	sport, dport := c.cport, c.sport
	if st.reply {
		sport, dport = dport, sport
	}
	f.Verdict = flowpb.Verdict_FORWARDED
	et := p.eventType.Get()
	et.SubType = 0
	f.EventType = et

	switch st.kind {
	case sL7Req, sL7Resp:
		f.Type = flowpb.FlowType_L7
		et.Type = msgAccessLog
		g.l4(f, c, st, sport, dport, false)
		g.l7(f, c, st)
		g.isReply(f, st.reply)
		return
	}

	f.Type = flowpb.FlowType_L3_L4
	eth := p.eth.Get()
	eth.Source, eth.Destination = src.mac, dst.mac
	f.Ethernet = eth
	f.Summary = g.l4(f, c, st, sport, dport, true)
	if c.proto == pNone {
		f.Summary = "Ethernet"
	}

	switch st.kind {
	case sPolicy:
		et.Type = msgPolicyVerdict
		f.Verdict = st.verdict
		g.policyVerdict(f, c, st, sl)
	case sDrop:
		et.Type, et.SubType = msgDrop, int32(c.dropReason)
		f.Verdict = flowpb.Verdict_DROPPED
		f.DropReason = uint32(c.dropReason)
		f.DropReasonDesc = c.dropReason
		if obs == dst {
			f.TrafficDirection = flowpb.TrafficDirection_INGRESS
		} else {
			f.TrafficDirection = flowpb.TrafficDirection_EGRESS
		}
	default: // a traced packet
		et.Type = msgTrace
		if obs == src {
			f.TraceObservationPoint = flowpb.TraceObservationPoint_FROM_ENDPOINT
			et.SubType = int32(flowpb.TraceObservationPoint_FROM_ENDPOINT)
		} else {
			f.TraceObservationPoint = flowpb.TraceObservationPoint_TO_ENDPOINT
		}
		switch {
		case st.reply:
			f.TraceReason = flowpb.TraceReason_REPLY
		case !c.opened:
			f.TraceReason = flowpb.TraceReason_NEW
			c.opened = true
		default:
			f.TraceReason = flowpb.TraceReason_ESTABLISHED
		}
		g.isReply(f, st.reply)
		iface := p.iface.Get()
		iface.Index, iface.Name = obs.ifindex, obs.ifname
		f.Interface = iface
	}
}

func (g *Generator) isReply(f *flowpb.Flow, reply bool) {
	b := g.pools.boolv.Get()
	b.Value = reply
	f.IsReply = b
	f.Reply = reply
}

// l4 sets f.L4 for the conversation's protocol (TCP flags when traced)
// and returns the packet's summary.
func (g *Generator) l4(f *flowpb.Flow, c *conv, st *step, sport, dport uint32, withFlags bool) string {
	p := &g.pools
	pr := c.proto
	if st.kind == sICMP {
		pr = pICMP
	}
	if pr == pNone {
		return ""
	}
	l4 := p.l4.Get()
	f.L4 = l4
	switch pr {
	case pTCP:
		t := p.tcp.Get()
		t.SourcePort, t.DestinationPort, t.Flags = sport, dport, nil
		w := p.l4tcp.Get()
		w.TCP = t
		l4.Protocol = w
		if withFlags {
			fl := p.flags.Get()
			fl.SYN = st.flags&fSYN != 0
			fl.ACK = st.flags&fACK != 0
			fl.RST = st.flags&fRST != 0
			fl.FIN = st.flags&fFIN != 0
			fl.PSH = st.flags&fPSH != 0
			fl.URG, fl.ECE, fl.CWR, fl.NS = false, false, false, false
			t.Flags = fl
		}
		return tcpSummaries[st.flags&31]
	case pUDP:
		u := p.udp.Get()
		u.SourcePort, u.DestinationPort = sport, dport
		w := p.l4udp.Get()
		w.UDP = u
		l4.Protocol = w
		return "UDP"
	case pSCTP:
		s := p.sctp.Get()
		s.SourcePort, s.DestinationPort, s.ChunkType = sport, dport, st.chunk
		w := p.l4sctp.Get()
		w.SCTP = s
		l4.Protocol = w
		return "SCTP"
	default: // pICMP
		if c.v6 {
			m := p.icmp6.Get()
			m.Type, m.Code = st.icmpType, st.icmpCode
			w := p.l4icmp6.Get()
			w.ICMPv6 = m
			l4.Protocol = w
		} else {
			m := p.icmp4.Get()
			m.Type, m.Code = st.icmpType, st.icmpCode
			w := p.l4icmp4.Get()
			w.ICMPv4 = m
			l4.Protocol = w
		}
		return icmpSummary(c.v6, st.icmpType, st.icmpCode)
	}
}

// endpointMsg returns x as an Endpoint seen from node at: the endpoint ID
// is known only for endpoints local to the observing node.
func (g *Generator) endpointMsg(x *endpoint, at *node) *flowpb.Endpoint {
	e := g.pools.ep.Get()
	e.ID = 0
	if x.node == at {
		e.ID = x.id
	}
	e.Identity = x.identity
	e.ClusterName = clusterName
	if x.namespace == "" { // world and host: no cluster label
		e.ClusterName = ""
	}
	e.Namespace = x.namespace
	e.Labels = append(e.Labels[:0], x.labels...)
	e.PodName = x.pod
	e.Workloads = e.Workloads[:0]
	for _, w := range x.workloads {
		m := g.pools.workload.Get()
		m.Name, m.Kind = w.name, w.kind
		e.Workloads = append(e.Workloads, m)
	}
	return e
}

func (g *Generator) policyVerdict(f *flowpb.Flow, c *conv, st *step, sl flowSlices) {
	pol := g.policyMsg(c.policy)
	ingress := c.atServer
	switch st.verdict {
	case flowpb.Verdict_DROPPED:
		f.PolicyMatchType = matchL3Only
		f.DropReason = uint32(c.dropReason)
		f.DropReasonDesc = c.dropReason
		if ingress {
			f.IngressDeniedBy = append(g.pools.polSlice(sl.ingressDenied), pol)
		} else {
			f.EgressDeniedBy = append(g.pools.polSlice(sl.egressDenied), pol)
		}
	case flowpb.Verdict_AUDIT:
		f.PolicyMatchType = matchL3Only
		g.isReply(f, false)
		if ingress {
			f.IngressDeniedBy = append(g.pools.polSlice(sl.ingressDenied), pol)
		} else {
			f.EgressDeniedBy = append(g.pools.polSlice(sl.egressDenied), pol)
		}
	default:
		f.PolicyMatchType = matchL3L4
		g.isReply(f, false)
		if ingress {
			f.IngressAllowedBy = append(g.pools.polSlice(sl.ingressAllowed), pol)
		} else {
			f.EgressAllowedBy = append(g.pools.polSlice(sl.egressAllowed), pol)
		}
	}
}

func (g *Generator) policyMsg(pi *policyInfo) *flowpb.Policy {
	x := g.pools.policyMsg()
	x.Name, x.Namespace, x.Kind, x.Revision = pi.name, pi.namespace, pi.kind, pi.revision
	x.Labels = append(x.Labels, pi.labels...)
	return x
}

// l7 sets the L7 record of a proxy event.
func (g *Generator) l7(f *flowpb.Flow, c *conv, st *step) {
	p := &g.pools
	l7 := p.l7.Get()
	l7.LatencyNs = 0
	f.L7 = l7
	resp := st.kind == sL7Resp
	if resp {
		l7.Type = flowpb.L7FlowType_RESPONSE
	} else {
		l7.Type = flowpb.L7FlowType_REQUEST
	}
	switch c.kind {
	case cHTTP:
		rt := c.route
		req := &httpRequests[rt.reqs[c.req]]
		h := p.httpMsg()
		h.Method, h.Url, h.Protocol = req.method, rt.urls[c.req], "HTTP/1.1"
		if resp {
			h.Code = req.code
			ms := httpLatenciesMS[c.latency]
			l7.LatencyNs = ms*1_000_000 + uint64(g.r.intn(1_000_000))
			f.Summary = rt.respSummary[c.req][c.latency]
			for _, kv := range responseHeaders {
				h.Headers = append(h.Headers, g.header(kv, c))
			}
		} else {
			f.Summary = rt.reqSummary[c.req]
			for _, kv := range requestHeaders {
				h.Headers = append(h.Headers, g.header(kv, c))
			}
		}
		if req.code == 403 {
			f.Verdict = flowpb.Verdict_DROPPED
		}
		w := p.l7http.Get()
		w.Http = h
		l7.Record = w
		tc, tp := p.traceCtx.Get(), p.traceP.Get()
		tp.TraceId = c.traceID
		tc.Parent = tp
		f.TraceContext = tc
	case cDNS:
		d := p.dnsMsg()
		rec := c.dns.rec
		d.Query, d.ObservationSource = rec.query, "proxy"
		d.Qtypes = append(d.Qtypes, rec.qtype)
		if resp {
			d.Ips = append(d.Ips, rec.ips...)
			d.Ttl, d.Rcode = rec.ttl, rec.rcode
			d.Cnames = append(d.Cnames, rec.cnames...)
			d.Rrtypes = append(d.Rrtypes, rec.rrtypes...)
			l7.LatencyNs = 300_000 + uint64(g.r.intn(2_700_000))
			f.Summary = c.dns.aSummary
		} else {
			f.Summary = c.dns.querySummary
		}
		w := p.l7dns.Get()
		w.Dns = d
		l7.Record = w
	case cKafka:
		k := p.kafka.Get()
		ks := c.kafka
		k.ErrorCode, k.ApiVersion, k.ApiKey, k.CorrelationId, k.Topic = 0, 12, ks.apiKey, int32(c.corr+1), ks.topic
		if resp {
			k.ErrorCode = ks.errorCode
			l7.LatencyNs = 500_000 + uint64(g.r.intn(20_000_000))
			f.Summary = ks.respSummary[c.corr]
		} else {
			f.Summary = ks.reqSummary[c.corr]
		}
		w := p.l7kafka.Get()
		w.Kafka = k
		l7.Record = w
	}
}

func (g *Generator) header(kv [2]string, c *conv) *flowpb.HTTPHeader {
	h := g.pools.header.Get()
	h.Key, h.Value = kv[0], kv[1]
	switch kv[0] {
	case "Traceparent":
		h.Value = c.traceparen
	case "X-Request-Id":
		h.Value = c.requestID
	}
	return h
}
