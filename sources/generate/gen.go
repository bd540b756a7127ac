package generate

import (
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"unsafe"

	flowpb "github.com/flowbus/flowbus/flow"
	"github.com/flowbus/flowbus/flow/flowid"
	"github.com/flowbus/flowbus/pipeline"
)

// rng is the generator's deterministic random source.
type rng struct{ p *rand.PCG }

func newRNG(seed uint64) *rng { return &rng{rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)} }

func (r *rng) u64() uint64 { return r.p.Uint64() }

// intn returns a number in [0, n), n < 2^32.
func (r *rng) intn(n int) int { return int(((r.u64() >> 32) * uint64(n)) >> 32) }

// TCP flag bits of a step.
const (
	fSYN = 1 << iota
	fACK
	fRST
	fFIN
	fPSH
)

// what a step emits.
type stepKind uint8

const (
	sTCP    stepKind = iota // a TCP segment, observed by a trace point
	sUDP                    // a UDP datagram
	sICMP                   // an ICMP message (type/code in the step)
	sSCTP                   // an SCTP packet (chunk in the step)
	sL7Req                  // an L7 request from the proxy
	sL7Resp                 // an L7 response from the proxy
	sPolicy                 // a policy verdict event for the first packet
	sDrop                   // a drop event for the packet
)

// step is one event of a conversation.
type step struct {
	kind     stepKind
	reply    bool // server to client
	flags    uint8
	icmpType uint32
	icmpCode uint32
	chunk    flowpb.SCTPChunkType
	verdict  flowpb.Verdict // policy verdicts
}

func tcp(reply bool, flags uint8) step { return step{kind: sTCP, reply: reply, flags: flags} }

var (
	handshake = []step{tcp(false, fSYN), tcp(true, fSYN|fACK), tcp(false, fACK)}
	closing   = []step{tcp(false, fFIN|fACK), tcp(true, fFIN|fACK), tcp(false, fACK)}
	data      = []step{tcp(false, fPSH|fACK), tcp(true, fPSH|fACK)}
	policyOK  = step{kind: sPolicy, flags: fSYN, verdict: flowpb.Verdict_FORWARDED}
)

func concat(parts ...[]step) []step {
	var s []step
	for _, p := range parts {
		s = append(s, p...)
	}
	return s
}

// Conversation scripts.
var (
	scriptHTTP = concat([]step{policyOK}, handshake,
		[]step{{kind: sL7Req}, tcp(false, fPSH|fACK), tcp(true, fPSH|fACK), {kind: sL7Resp, reply: true}}, closing)
	scriptKafka = concat([]step{policyOK}, handshake,
		[]step{{kind: sL7Req}, tcp(false, fPSH|fACK), tcp(true, fPSH|fACK), {kind: sL7Resp, reply: true}}, data, closing)
	scriptDNS = []step{{kind: sUDP}, {kind: sL7Req}, {kind: sL7Resp, reply: true}, {kind: sUDP, reply: true}}
	scriptTCP = concat([]step{policyOK}, handshake, data, data, closing)
	// scriptTCPReset ends with a reset instead of a FIN exchange.
	scriptTCPReset = concat(handshake, data, []step{tcp(false, fRST|fACK)})
	scriptWorld    = concat(handshake, data, data, data, closing)
	scriptICMP4    = []step{{kind: sICMP, icmpType: 8}, {kind: sICMP, reply: true, icmpType: 0}}
	scriptICMP6    = []step{{kind: sICMP, icmpType: 128}, {kind: sICMP, reply: true, icmpType: 129}}
	scriptUnreach  = []step{{kind: sUDP}, {kind: sICMP, reply: true, icmpType: 3, icmpCode: 3}}
	scriptSCTP     = []step{
		{kind: sSCTP, chunk: flowpb.SCTPChunkType_INIT},
		{kind: sSCTP, reply: true, chunk: flowpb.SCTPChunkType_INIT_ACK},
		{kind: sSCTP, chunk: flowpb.SCTPChunkType_UNSUPPORTED},
		{kind: sSCTP, reply: true, chunk: flowpb.SCTPChunkType_UNSUPPORTED},
		{kind: sSCTP, chunk: flowpb.SCTPChunkType_SHUTDOWN},
		{kind: sSCTP, reply: true, chunk: flowpb.SCTPChunkType_SHUTDOWN_ACK},
		{kind: sSCTP, chunk: flowpb.SCTPChunkType_SHUTDOWN_COMPLETE},
	}
	scriptSCTPAbort = []step{
		{kind: sSCTP, chunk: flowpb.SCTPChunkType_INIT},
		{kind: sSCTP, reply: true, chunk: flowpb.SCTPChunkType_ABORT},
	}
	// A connection denied by policy: the verdict, then the SYN and its
	// retransmission dropped.
	scriptDenied = []step{{kind: sPolicy, flags: fSYN, verdict: flowpb.Verdict_DROPPED}, {kind: sDrop, flags: fSYN}, {kind: sDrop, flags: fSYN}}
	// An audited connection: policy would deny it, audit mode lets it pass.
	scriptAudit   = concat([]step{{kind: sPolicy, flags: fSYN, verdict: flowpb.Verdict_AUDIT}}, handshake, closing)
	scriptRefused = []step{tcp(false, fSYN), tcp(true, fRST|fACK)}
	scriptDrop    = []step{{kind: sDrop, flags: fSYN}}
)

// convKind is a kind of conversation, with its weight in the mix.
type convKind uint8

const (
	cHTTP convKind = iota
	cDNS
	cKafka
	cTCP
	cWorld
	cICMP4
	cICMP6
	cUnreach
	cSCTP
	cDenied
	cAudit
	cRefused
	cDrop
	cProbe
	numConvKinds
)

var convWeights = [numConvKinds]int{
	cHTTP: 26, cDNS: 16, cKafka: 8, cTCP: 12, cWorld: 10, cICMP4: 4, cICMP6: 3,
	cUnreach: 2, cSCTP: 3, cDenied: 6, cAudit: 2, cRefused: 3, cDrop: 5, cProbe: 4,
}

// otherDrops are the drop reasons of single dropped packets.
var otherDrops = []flowpb.DropReason{
	flowpb.DropReason_CT_MAP_INSERTION_FAILED,
	flowpb.DropReason_STALE_OR_UNROUTABLE_IP,
	flowpb.DropReason_UNSUPPORTED_L3_PROTOCOL,
	flowpb.DropReason_INVALID_SOURCE_IP,
	flowpb.DropReason_FIB_LOOKUP_FAILED,
	flowpb.DropReason_CT_MISSING_TCP_ACK_FLAG,
	flowpb.DropReason_NO_EGRESS_GATEWAY,
	flowpb.DropReason_DROP_RATE_LIMITED,
	flowpb.DropReason_AUTH_REQUIRED,
	flowpb.DropReason_TTL_EXCEEDED,
}

type l4proto uint8

const (
	pTCP l4proto = iota
	pUDP
	pICMP
	pSCTP
	pNone
)

// conv is a conversation in progress.
type conv struct {
	kind           convKind
	script         []step
	next           int
	proto          l4proto
	client, server *endpoint
	v6             bool
	cport, sport   uint32
	atServer       bool // observed on the server's node (else the client's)
	service        *service

	// L7 and drop details.
	route      *httpRoute
	req        int // index into httpRequests / dnsRecords
	latency    int // index into httpLatenciesMS
	requestID  string
	traceID    string
	traceparen string
	dns        *dnsStrings
	kafka      *kafkaStrings
	corr       int
	policy     *policyInfo
	dropReason flowpb.DropReason
	opened     bool // the first packet was sent
}

// httpRoute is a client→server pair with the requests it makes.
type httpRoute struct {
	client, server *app
	reqs           []int
	base           string // scheme://host:port
	urls           []string
	reqSummary     []string   // per request
	respSummary    [][]string // per request, per latency
}

type dnsStrings struct {
	rec                    *dnsRecord
	querySummary, aSummary string
}

type kafkaStrings struct {
	topic, apiKey string
	errorCode     int32
	reqSummary    [kafkaCorrelations]string
	respSummary   [kafkaCorrelations]string
}

// Generator makes synthetic Hubble flows. It is deterministic for a seed
// (apart from Flow.time, which follows the clock given to Fill) and not
// safe for concurrent use.
type Generator struct {
	r     *rng
	w     *world
	pools pools
	convs []conv
	total int // sum of convWeights

	httpRoutes  []*httpRoute
	dnsTable    []*dnsStrings
	kafkaTable  []*kafkaStrings
	kafkaClient []*app
	appList     []*app

	arena []byte // backing store of per-flow strings (uuids, request ids)
}

// activeConversations is how many conversations run interleaved.
const activeConversations = 96

// NewGenerator returns a generator whose output depends only on seed.
func NewGenerator(seed uint64) *Generator { return newStream(seed, 0) }

// newStream returns generator number stream for seed: the same cluster as
// every other stream of the seed, with its own conversations.
func newStream(seed uint64, stream int) *Generator {
	r := newRNG(seed)
	g := &Generator{w: newWorld(r)}
	g.r = r
	if stream > 0 {
		g.r = newRNG(seed + uint64(stream)*0xbf58476d1ce4e5b9)
	}
	for _, w := range convWeights {
		g.total += w
	}
	for _, s := range appSpecs {
		g.appList = append(g.appList, g.w.apps[s.name])
	}
	g.buildTables()
	g.convs = make([]conv, activeConversations)
	for i := range g.convs {
		g.start(&g.convs[i])
	}
	return g
}

func (g *Generator) buildTables() {
	a := g.w.apps
	routes := []struct {
		client, server string
		reqs           []int
		scheme         string
		userinfo       string
	}{
		{"frontend", "catalog", []int{0, 1, 2, 8}, "http", ""},
		{"frontend", "cart", []int{3, 4, 5}, "http", ""},
		{"frontend", "checkout", []int{10, 11}, "http", ""},
		{"checkout", "payments-api", []int{6, 7}, "https", "svc-checkout:s3cr3t-Pa55@"},
		{"prometheus", "frontend", []int{9}, "http", ""},
		{"prometheus", "catalog", []int{9}, "http", ""},
	}
	for _, rt := range routes {
		srv := a[rt.server]
		h := &httpRoute{client: a[rt.client], server: srv, reqs: rt.reqs}
		h.base = rt.scheme + "://" + rt.userinfo + srv.fqdn + ":" + strconv.Itoa(int(srv.port))
		for _, ri := range rt.reqs {
			req := httpRequests[ri]
			url := h.base + req.path
			h.urls = append(h.urls, url)
			h.reqSummary = append(h.reqSummary, "HTTP/1.1 "+req.method+" "+url)
			var resp []string
			for _, ms := range httpLatenciesMS {
				resp = append(resp, fmt.Sprintf("HTTP/1.1 %d %dms (%s %s)", req.code, ms, req.method, url))
			}
			h.respSummary = append(h.respSummary, resp)
		}
		g.httpRoutes = append(g.httpRoutes, h)
	}
	for i := range dnsRecords {
		rec := &dnsRecords[i]
		d := &dnsStrings{rec: rec, querySummary: "DNS Query " + rec.query + " " + rec.qtype}
		if rec.rcode != 0 {
			d.aSummary = fmt.Sprintf("DNS Answer RCode: Non-Existent Domain TTL: %d (Proxy %s %s)", rec.ttl, rec.query, rec.qtype)
		} else {
			d.aSummary = fmt.Sprintf("DNS Answer %q TTL: %d (Proxy %s %s)", strings.Join(rec.ips, ","), rec.ttl, rec.query, rec.qtype)
		}
		g.dnsTable = append(g.dnsTable, d)
	}
	for ti, topic := range kafkaTopics {
		for ki, key := range kafkaAPIKeys {
			k := &kafkaStrings{topic: topic, apiKey: key}
			if (ti+ki)%5 == 4 {
				k.errorCode = 3 // UNKNOWN_TOPIC_OR_PARTITION
			}
			for c := range kafkaCorrelations {
				k.reqSummary[c] = fmt.Sprintf("Kafka request %s correlation id %d topic '%s'", key, c+1, topic)
				k.respSummary[c] = fmt.Sprintf("Kafka response %s correlation id %d topic '%s' return code %d", key, c+1, topic, k.errorCode)
			}
			g.kafkaTable = append(g.kafkaTable, k)
		}
	}
	g.kafkaClient = []*app{a["invoicer"], a["checkout"], a["payments-api"]}
}

func (g *Generator) pod(a *app) *endpoint { return a.pods[g.r.intn(len(a.pods))] }

func (g *Generator) ephemeral() uint32 { return uint32(32768 + g.r.intn(28232)) }

// start begins a new conversation in c.
func (g *Generator) start(c *conv) {
	n := g.r.intn(g.total)
	k := convKind(0)
	for ; n >= convWeights[k]; k++ {
		n -= convWeights[k]
	}
	a := g.w.apps
	*c = conv{kind: k, proto: pTCP, cport: g.ephemeral(), v6: g.r.intn(10) < 3, atServer: g.r.intn(2) == 0}
	switch k {
	case cHTTP:
		rt := g.httpRoutes[g.r.intn(len(g.httpRoutes))]
		c.route, c.script = rt, scriptHTTP
		c.client, c.server = g.pod(rt.client), g.pod(rt.server)
		c.sport, c.service = rt.server.port, rt.server.service
		c.req = g.r.intn(len(rt.reqs))
		c.latency = g.r.intn(len(httpLatenciesMS))
		c.requestID = g.uuid()
		c.traceparen = g.traceparent()
		c.traceID = c.traceparen[3:35]
		c.atServer = true // the ingress proxy of the server
		c.policy = &allowPolicies[0]
	case cDNS:
		c.script, c.proto = scriptDNS, pUDP
		cli := g.appList[g.r.intn(len(g.appList))]
		if cli.name == "coredns" {
			cli = a["frontend"]
		}
		c.client = cli.pods[g.r.intn(len(cli.pods))]
		c.server = g.pod(a["coredns"])
		c.sport, c.service = 53, a["coredns"].service
		c.dns = g.dnsTable[g.r.intn(len(g.dnsTable))]
		c.atServer = false // the client's DNS proxy
	case cKafka:
		c.script = scriptKafka
		c.client, c.server = g.pod(g.kafkaClient[g.r.intn(len(g.kafkaClient))]), g.pod(a["kafka"])
		c.sport, c.service = 9092, a["kafka"].service
		c.kafka = g.kafkaTable[g.r.intn(len(g.kafkaTable))]
		c.corr = g.r.intn(kafkaCorrelations)
		c.atServer = true
		c.policy = &allowPolicies[0]
	case cTCP:
		c.script = scriptTCP
		if g.r.intn(4) == 0 {
			c.script = scriptTCPReset
		}
		cli, srv := a["cart"], a["redis"]
		if g.r.intn(2) == 0 {
			cli, srv = a["payments-api"], a["postgres"]
		}
		c.client, c.server = g.pod(cli), g.pod(srv)
		c.sport, c.service = srv.port, srv.service
		c.policy = &allowPolicies[1]
	case cWorld:
		c.script = scriptWorld
		c.client = g.pod(g.appList[g.r.intn(len(g.appList))])
		c.server = g.w.ext[g.r.intn(len(g.w.ext))]
		c.sport = 443
		c.atServer = false
	case cICMP4, cICMP6:
		c.script, c.proto, c.v6 = scriptICMP4, pICMP, false
		if k == cICMP6 {
			c.script, c.v6 = scriptICMP6, true
		}
		c.client = g.pod(g.appList[g.r.intn(len(g.appList))])
		if g.r.intn(3) == 0 {
			c.server, c.atServer = g.w.ext[g.r.intn(len(g.w.ext))], false
		} else {
			c.server = g.pod(g.appList[g.r.intn(len(g.appList))])
		}
		c.cport = 0
	case cUnreach:
		c.script, c.proto, c.v6 = scriptUnreach, pUDP, false
		c.client, c.server = g.pod(a["invoicer"]), g.pod(a["catalog"])
		c.sport = 8125
	case cSCTP:
		c.script, c.proto = scriptSCTP, pSCTP
		if g.r.intn(6) == 0 {
			c.script = scriptSCTPAbort
		}
		c.client, c.server = g.pod(a["gnb-sim"]), g.pod(a["amf"])
		c.cport, c.sport, c.service = 38412, 38412, a["amf"].service
	case cDenied:
		c.script = scriptDenied
		if g.r.intn(2) == 0 {
			c.client, c.server = g.pod(a["invoicer"]), g.pod(a["postgres"])
			c.sport, c.atServer = 5432, true
			c.policy, c.dropReason = &denyPolicies[0], flowpb.DropReason_POLICY_DENIED
		} else {
			c.client, c.server = g.pod(a["catalog"]), g.w.ext[g.r.intn(len(g.w.ext))]
			c.sport, c.atServer = 443, false
			c.policy, c.dropReason = &denyPolicies[1], flowpb.DropReason_POLICY_DENY
		}
	case cAudit:
		c.script = scriptAudit
		c.client, c.server = g.pod(a["prometheus"]), g.pod(a["postgres"])
		c.sport, c.atServer = 9187, true
		c.policy = &denyPolicies[0]
	case cRefused:
		c.script = scriptRefused
		c.client, c.server = g.pod(a["frontend"]), g.pod(a["catalog"])
		c.sport = 9999
	case cProbe:
		// The kubelet probing a pod from its node.
		c.script = scriptTCP
		srv := g.appList[g.r.intn(len(g.appList))]
		c.server = g.pod(srv)
		c.client = g.w.hosts[c.server.node]
		c.sport = srv.port
		if c.sport == 0 {
			c.sport = 8080
		}
		c.atServer = true
		c.policy = &allowPolicies[0]
	case cDrop:
		c.script = scriptDrop
		c.client = g.pod(g.appList[g.r.intn(len(g.appList))])
		c.server = g.pod(g.appList[g.r.intn(len(g.appList))])
		c.dropReason = otherDrops[g.r.intn(len(otherDrops))]
		c.sport = 8080
		c.atServer = false
		switch c.dropReason {
		case flowpb.DropReason_UNSUPPORTED_L3_PROTOCOL:
			c.proto = pNone
		case flowpb.DropReason_TTL_EXCEEDED:
			c.proto, c.cport, c.sport = pUDP, g.ephemeral(), 33434
		}
	}
	if c.server.world {
		c.atServer = false
	}
}

// arenaChunk is the size of the blocks per-flow strings are cut from.
const arenaChunk = 32 << 10

// alloc returns n bytes of the arena. The bytes of a string made from them
// are never written again.
func (g *Generator) alloc(n int) []byte {
	if len(g.arena)+n > cap(g.arena) {
		g.arena = make([]byte, 0, arenaChunk)
	}
	start := len(g.arena)
	g.arena = g.arena[:start+n]
	return g.arena[start : start+n : start+n]
}

// uuid returns a random version 4 UUID.
func (g *Generator) uuid() string {
	b := g.alloc(flowid.TextLen)
	flowid.Put(b, g.r.u64(), g.r.u64())
	return unsafe.String(&b[0], len(b))
}

// traceparent returns a W3C traceparent header value.
func (g *Generator) traceparent() string {
	b := g.alloc(55)
	copy(b, "00-")
	for i := 3; i < 35; i += 16 {
		x := g.r.u64()
		for k := range 16 {
			b[i+k] = hexDigits[(x>>(60-4*k))&15]
		}
	}
	b[35] = '-'
	x := g.r.u64()
	for k := range 16 {
		b[36+k] = hexDigits[(x>>(60-4*k))&15]
	}
	copy(b[52:], "-01")
	return unsafe.String(&b[0], len(b))
}

// Fill makes e the next flow, with time unixNano. It reuses the storage of
// e's slot (pipeline.Event.FlowStorage).
func (g *Generator) Fill(e *pipeline.Event, unixNano int64) {
	c := &g.convs[g.r.intn(len(g.convs))]
	st := &c.script[c.next]
	f := e.FlowStorage()
	sl := g.pools.recycle(f)
	g.build(f, c, st, sl, unixNano)
	g.pools.keepUnused(f, &sl)
	e.NodeName = f.NodeName
	e.Time = f.Time
	c.next++
	if c.next == len(c.script) {
		g.start(c)
	}
}
