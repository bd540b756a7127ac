package datapath

import (
	"bytes"
	"encoding/gob"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"sort"
	"strings"
	"time"

	"google.golang.org/protobuf/types/known/wrapperspb"

	flowpb "github.com/flowbus/flowbus/flow"
)

// L7 access-log records. Cilium's proxies report each HTTP, DNS, Kafka or
// generic L7 request and response as a LogRecord; on the monitor socket it
// travels as the message type byte 129 followed by the record in its own
// gob stream. The types below carry the same field names and kinds, which
// is all gob needs to decode Cilium's records (and to encode records
// Cilium's decoder would read).

// AccessLogRecord mirrors Cilium v1.20's accesslog.LogRecord.
type AccessLogRecord struct {
	Type                string // Request, Response or Sample
	Timestamp           string // RFC 3339 with nanoseconds
	NodeAddressInfo     AccessLogNodeAddress
	ObservationPoint    string // Ingress or Egress
	SourceEndpoint      AccessLogEndpoint
	DestinationEndpoint AccessLogEndpoint
	IPVersion           uint8 // 0 IPv4, 1 IPv6
	Verdict             string
	Info                string
	Metadata            []string
	TransportProtocol   uint16
	FlowEvent           string
	ServiceInfo         *AccessLogService
	DropReason          *uint16
	HTTP                *AccessLogHTTP
	Kafka               *AccessLogKafka
	DNS                 *AccessLogDNS
	L7                  *AccessLogL7
}

// AccessLogNodeAddress mirrors accesslog.NodeAddressInfo.
type AccessLogNodeAddress struct{ IPv4, IPv6 string }

// AccessLogEndpoint mirrors accesslog.EndpointInfo.
type AccessLogEndpoint struct {
	ID       uint64
	IPv4     string
	IPv6     string
	Port     uint16
	Identity uint64
	Labels   []AccessLogLabel
}

// AccessLogLabel mirrors labels.Label's exported fields.
type AccessLogLabel struct{ Key, Value, Source string }

// AccessLogService mirrors accesslog.ServiceInfo.
type AccessLogService struct {
	Name   string
	IPPort struct {
		IP   string
		Port uint16
	}
}

// AccessLogHTTP mirrors accesslog.LogRecordHTTP.
type AccessLogHTTP struct {
	Code            int
	Method          string
	URL             *url.URL
	Protocol        string
	Headers         http.Header
	MissingHeaders  http.Header
	RejectedHeaders http.Header
}

// AccessLogKafka mirrors accesslog.LogRecordKafka (removed after v1.19).
type AccessLogKafka struct {
	ErrorCode     int
	APIVersion    int16
	APIKey        string
	CorrelationID int32
	Topic         struct{ Topic string }
}

// AccessLogDNS mirrors accesslog.LogRecordDNS.
type AccessLogDNS struct {
	Query             string
	IPs               []netip.Addr
	TTL               uint32
	CNAMEs            []string
	ObservationSource string
	RCode             int
	QTypes            []uint16
	AnswerTypes       []uint16
}

// AccessLogL7 mirrors accesslog.LogRecordL7.
type AccessLogL7 struct {
	Proto  string
	Fields map[string]string
}

// legacyAccessLogRecord is the shape of records from Cilium releases whose
// endpoint labels were plain strings and DNS addresses net.IP.
type legacyAccessLogRecord struct {
	Type                string
	Timestamp           string
	ObservationPoint    string
	SourceEndpoint      legacyEndpoint
	DestinationEndpoint legacyEndpoint
	IPVersion           uint8
	Verdict             string
	TransportProtocol   uint16
	HTTP                *AccessLogHTTP
	Kafka               *AccessLogKafka
	DNS                 *legacyDNS
	L7                  *AccessLogL7
}

type legacyEndpoint struct {
	ID       uint64
	IPv4     string
	IPv6     string
	Port     uint16
	Identity uint64
	Labels   []string
}

type legacyDNS struct {
	Query             string
	IPs               []net.IP
	TTL               uint32
	CNAMEs            []string
	ObservationSource string
	RCode             int
	QTypes            []uint16
	AnswerTypes       []uint16
}

// MaxAccessLogSize bounds an encoded access-log record. Real records are a
// few KiB; the bound keeps a corrupt one (gob decodes a one-byte element
// into a struct many times its size) from costing much memory.
const MaxAccessLogSize = 256 << 10

// EncodeAccessLog returns r as a monitor-socket sample: the type byte 129
// followed by r in a gob stream of its own.
func EncodeAccessLog(r *AccessLogRecord) ([]byte, error) {
	var b bytes.Buffer
	b.WriteByte(MessageTypeAccessLog)
	if err := gob.NewEncoder(&b).Encode(r); err != nil {
		return nil, fmt.Errorf("encode access log record: %w", err)
	}
	return b.Bytes(), nil
}

// ParseAccessLog decodes the gob-encoded record that follows the type byte
// of an access-log sample.
func ParseAccessLog(data []byte) (*AccessLogRecord, error) {
	var c gobCache
	return c.parse(data)
}

// gobCache decodes access-log records faster than a fresh gob decoder per
// record. Every record is a gob stream of its own: the type definitions,
// then the value. The definitions are the same for every record from the
// same agent, so after a first record the cache keeps its decoder, and
// for a record whose definitions are byte for byte the cached ones only
// the value is handed to that decoder.
type gobCache struct {
	defs   []byte // type-definition messages of the cached stream
	dec    *gob.Decoder
	legacy bool // dec decodes legacyAccessLogRecord
	feed   feedReader
}

// feedReader is a reader that can be refilled between gob values.
type feedReader struct {
	b []byte
}

func (f *feedReader) Read(p []byte) (int, error) {
	if len(f.b) == 0 {
		return 0, io.EOF
	}
	n := copy(p, f.b)
	f.b = f.b[n:]
	return n, nil
}

func (f *feedReader) ReadByte() (byte, error) {
	if len(f.b) == 0 {
		return 0, io.EOF
	}
	c := f.b[0]
	f.b = f.b[1:]
	return c, nil
}

// gobDefsEnd returns where the type definitions of a one-value gob stream
// end, and whether data is exactly definitions followed by one value.
func gobDefsEnd(data []byte) (int, bool) {
	off := 0
	for off < len(data) {
		n, k, ok := gobUint(data[off:])
		if !ok || n == 0 || n > uint64(len(data)-off-k) {
			return 0, false
		}
		msg := data[off+k : off+k+int(n)]
		id, _, ok := gobUint(msg)
		if !ok {
			return 0, false
		}
		if id&1 == 0 { // a value (non-negative type id)
			return off, off+k+int(n) == len(data)
		}
		off += k + int(n)
	}
	return 0, false
}

// gobUint decodes gob's unsigned integer encoding.
func gobUint(b []byte) (v uint64, n int, ok bool) {
	if len(b) == 0 {
		return 0, 0, false
	}
	if b[0] < 0x80 {
		return uint64(b[0]), 1, true
	}
	k := int(-int8(b[0]))
	if k < 1 || k > 8 || len(b) < 1+k {
		return 0, 0, false
	}
	for _, c := range b[1 : 1+k] {
		v = v<<8 | uint64(c)
	}
	return v, 1 + k, true
}

func (c *gobCache) parse(data []byte) (*AccessLogRecord, error) {
	if len(data) > MaxAccessLogSize {
		return nil, malformed("access log record: %d bytes, more than %d", len(data), MaxAccessLogSize)
	}
	defsEnd, single := gobDefsEnd(data)
	if single && c.dec != nil && bytes.Equal(c.defs, data[:defsEnd]) {
		c.feed.b = data[defsEnd:]
		r, err := c.decode(c.dec, c.legacy)
		if err == nil {
			return r, nil
		}
		c.dec = nil // start over with a fresh decoder below
	}
	c.feed.b = data
	dec := gob.NewDecoder(&c.feed)
	r, err := c.decode(dec, false)
	legacy := false
	if err != nil {
		// Older agents: labels as strings, DNS addresses as net.IP.
		c.feed.b = data
		dec = gob.NewDecoder(&c.feed)
		var lerr error
		if r, lerr = c.decode(dec, true); lerr != nil {
			c.dec = nil
			return nil, malformed("access log record: %v", err)
		}
		legacy = true
	}
	if single {
		c.defs = append(c.defs[:0], data[:defsEnd]...)
		c.dec, c.legacy = dec, legacy
	} else {
		c.dec = nil
	}
	return r, nil
}

func (c *gobCache) decode(dec *gob.Decoder, legacy bool) (*AccessLogRecord, error) {
	if !legacy {
		var r AccessLogRecord
		if err := dec.Decode(&r); err != nil {
			return nil, err
		}
		if len(c.feed.b) != 0 {
			return nil, errors.New("trailing bytes after the record")
		}
		return &r, nil
	}
	var l legacyAccessLogRecord
	if err := dec.Decode(&l); err != nil {
		return nil, err
	}
	if len(c.feed.b) != 0 {
		return nil, errors.New("trailing bytes after the record")
	}
	r := &AccessLogRecord{
		Type: l.Type, Timestamp: l.Timestamp, ObservationPoint: l.ObservationPoint,
		SourceEndpoint: l.SourceEndpoint.convert(), DestinationEndpoint: l.DestinationEndpoint.convert(),
		IPVersion: l.IPVersion, Verdict: l.Verdict, TransportProtocol: l.TransportProtocol,
		HTTP: l.HTTP, Kafka: l.Kafka, L7: l.L7,
	}
	if l.DNS != nil {
		d := &AccessLogDNS{Query: l.DNS.Query, TTL: l.DNS.TTL, CNAMEs: l.DNS.CNAMEs,
			ObservationSource: l.DNS.ObservationSource, RCode: l.DNS.RCode, QTypes: l.DNS.QTypes, AnswerTypes: l.DNS.AnswerTypes}
		for _, ip := range l.DNS.IPs {
			a, _ := netip.AddrFromSlice(ip)
			d.IPs = append(d.IPs, a.Unmap())
		}
		r.DNS = d
	}
	return r, nil
}

func (e legacyEndpoint) convert() AccessLogEndpoint {
	out := AccessLogEndpoint{ID: e.ID, IPv4: e.IPv4, IPv6: e.IPv6, Port: e.Port, Identity: e.Identity}
	for _, s := range e.Labels {
		// "source:key=value"
		var l AccessLogLabel
		if i := strings.IndexByte(s, ':'); i >= 0 {
			l.Source, s = s[:i], s[i+1:]
		}
		l.Key, l.Value, _ = strings.Cut(s, "=")
		out.Labels = append(out.Labels, l)
	}
	return out
}

// DecodeAccessLog decodes an L7 access-log record as the monitor socket
// carries it (the bytes after the message type byte 129) into an L7 flow,
// as Hubble's L7 parser does. Request latency and W3C trace parents are
// matched between requests and responses by their X-Request-Id header, so
// the Decoder keeps the last 10000 unanswered requests.
func (d *Decoder) DecodeAccessLog(data []byte, f *flowpb.Flow) error {
	r, err := d.gob.parse(data)
	if err != nil {
		return err
	}
	return d.DecodeAccessLogRecord(r, f)
}

// DecodeAccessLogRecord decodes a parsed access-log record into f. It may
// change r (a URL password is replaced by HUBBLE_REDACTED, as Hubble does).
func (d *Decoder) DecodeAccessLogRecord(r *AccessLogRecord, f *flowpb.Flow) error {
	ts, err := time.Parse(time.RFC3339Nano, r.Timestamp)
	if err != nil {
		return malformed("access log record: timestamp: %v", err)
	}
	if y := ts.Year(); y < 1 || y > 9999 {
		return malformed("access log record: timestamp %q out of range", r.Timestamp)
	}
	spare := takeSpares(f)
	clearFlow(f)
	d.setTime(f, spare.time)

	switch r.IPVersion {
	case 0:
		f.IP = &flowpb.IP{Source: r.SourceEndpoint.IPv4, Destination: r.DestinationEndpoint.IPv4, IpVersion: flowpb.IPVersion_IPv4}
	case 1:
		f.IP = &flowpb.IP{Source: r.SourceEndpoint.IPv6, Destination: r.DestinationEndpoint.IPv6, IpVersion: flowpb.IPVersion_IPv6}
	}
	sp, dp := uint32(r.SourceEndpoint.Port), uint32(r.DestinationEndpoint.Port)
	switch r.TransportProtocol {
	case 6:
		f.L4 = &flowpb.Layer4{Protocol: &flowpb.Layer4_TCP{TCP: &flowpb.TCP{SourcePort: sp, DestinationPort: dp}}}
	case 17:
		f.L4 = &flowpb.Layer4{Protocol: &flowpb.Layer4_UDP{UDP: &flowpb.UDP{SourcePort: sp, DestinationPort: dp}}}
	case 132:
		f.L4 = &flowpb.Layer4{Protocol: &flowpb.Layer4_SCTP{SCTP: &flowpb.SCTP{SourcePort: sp, DestinationPort: dp}}}
	}
	f.Source = accessLogEndpoint(r.SourceEndpoint)
	f.Destination = accessLogEndpoint(r.DestinationEndpoint)
	switch r.Verdict {
	case "Denied":
		f.Verdict = flowpb.Verdict_DROPPED
	case "Forwarded":
		f.Verdict = flowpb.Verdict_FORWARDED
	case "Redirected":
		f.Verdict = flowpb.Verdict_REDIRECTED
	case "Error":
		f.Verdict = flowpb.Verdict_ERROR
	}
	f.Type = flowpb.FlowType_L7

	l7 := &flowpb.Layer7{}
	switch r.Type {
	case "Request":
		l7.Type = flowpb.L7FlowType_REQUEST
	case "Response":
		l7.Type = flowpb.L7FlowType_RESPONSE
	case "Sample":
		l7.Type = flowpb.L7FlowType_SAMPLE
	}
	switch {
	case r.DNS != nil:
		l7.Record = &flowpb.Layer7_Dns{Dns: decodeDNS(r.Type, r.DNS)}
	case r.HTTP != nil:
		l7.Record = &flowpb.Layer7_Http{Http: decodeHTTP(r.Type, r.HTTP)}
	case r.Kafka != nil:
		k := &flowpb.Kafka{ApiVersion: int32(r.Kafka.APIVersion), ApiKey: r.Kafka.APIKey,
			CorrelationId: r.Kafka.CorrelationID, Topic: r.Kafka.Topic.Topic}
		if r.Type != "Request" {
			k.ErrorCode = int32(r.Kafka.ErrorCode)
		}
		l7.Record = &flowpb.Layer7_Kafka{Kafka: k}
	}
	f.L7 = l7
	l7.LatencyNs = d.l7.latency(r, ts)
	f.IsReply = &wrapperspb.BoolValue{Value: r.Type == "Response"}
	f.Reply = f.IsReply.Value
	f.EventType = eventType(spare.eventType, MessageTypeAccessLog, 0)
	switch r.ObservationPoint {
	case "Ingress":
		f.TrafficDirection = flowpb.TrafficDirection_INGRESS
	case "Egress":
		f.TrafficDirection = flowpb.TrafficDirection_EGRESS
	}
	f.TraceContext = d.l7.traceContext(r)
	f.Summary = accessLogSummary(r, f)
	return nil
}

const clusterLabel = "io.cilium.k8s.policy.cluster"

func accessLogEndpoint(e AccessLogEndpoint) *flowpb.Endpoint {
	ep := &flowpb.Endpoint{ID: uint32(e.ID), Identity: uint32(e.Identity)}
	if len(e.Labels) > 0 {
		ep.Labels = make([]string, 0, len(e.Labels))
		for _, l := range e.Labels {
			ep.Labels = append(ep.Labels, l.Source+":"+l.Key+"="+l.Value)
			if l.Key == clusterLabel && l.Source == "k8s" {
				ep.ClusterName = l.Value
			}
		}
		sort.Strings(ep.Labels)
	}
	return ep
}

func decodeHTTP(typ string, h *AccessLogHTTP) *flowpb.HTTP {
	out := &flowpb.HTTP{Method: h.Method, Protocol: h.Protocol}
	keys := make([]string, 0, len(h.Headers))
	for k := range h.Headers {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		for _, v := range h.Headers[k] {
			out.Headers = append(out.Headers, &flowpb.HTTPHeader{Key: k, Value: v})
		}
	}
	if h.URL != nil {
		if h.URL.User != nil {
			if _, ok := h.URL.User.Password(); ok {
				h.URL.User = url.UserPassword(h.URL.User.Username(), "HUBBLE_REDACTED")
			}
		}
		out.Url = h.URL.String()
	}
	if typ != "Request" {
		out.Code = uint32(h.Code)
	}
	return out
}

func decodeDNS(typ string, d *AccessLogDNS) *flowpb.DNS {
	out := &flowpb.DNS{Query: d.Query, ObservationSource: d.ObservationSource}
	out.Qtypes = make([]string, 0, len(d.QTypes))
	for _, t := range d.QTypes {
		out.Qtypes = append(out.Qtypes, dnsTypeName(t))
	}
	if typ == "Request" {
		return out
	}
	out.Ips = make([]string, 0, len(d.IPs))
	for _, ip := range d.IPs {
		out.Ips = append(out.Ips, ip.String())
	}
	out.Ttl = d.TTL
	out.Cnames = d.CNAMEs
	out.Rcode = uint32(d.RCode)
	out.Rrtypes = make([]string, 0, len(d.AnswerTypes))
	for _, t := range d.AnswerTypes {
		out.Rrtypes = append(out.Rrtypes, dnsTypeName(t))
	}
	return out
}

var dnsTypes = map[uint16]string{
	1: "A", 2: "NS", 3: "MD", 4: "MF", 5: "CNAME", 6: "SOA", 7: "MB", 8: "MG", 9: "MR",
	10: "NULL", 11: "WKS", 12: "PTR", 13: "HINFO", 14: "MINFO", 15: "MX", 16: "TXT",
	28: "AAAA", 33: "SRV", 35: "NAPTR", 41: "OPT", 46: "RRSIG", 48: "DNSKEY", 64: "SVCB",
	65: "HTTPS", 256: "URI",
}

func dnsTypeName(t uint16) string {
	if s, ok := dnsTypes[t]; ok {
		return s
	}
	return "Unknown"
}

var dnsRcodes = map[uint8]string{
	0: "No Error", 1: "Format Error", 2: "Server Failure", 3: "Non-Existent Domain",
	4: "Not Implemented", 5: "Query Refused", 6: "Name Exists when it should not",
	7: "RR Set Exists when it should not", 8: "RR Set that should exist does not",
	9: "Server Not Authoritative for zone", 10: "Name not contained in zone",
	16: "Bad OPT Version", 17: "Key not recognized", 18: "Signature out of time window",
	19: "Bad TKEY Mode", 20: "Duplicate key name", 21: "Algorithm not supported",
	22: "Bad Truncation", 23: "Bad Cookie",
}

func accessLogSummary(r *AccessLogRecord, f *flowpb.Flow) string {
	switch {
	case r.HTTP != nil:
		req := fmt.Sprintf("%s %s", r.HTTP.Method, r.HTTP.URL)
		switch r.Type {
		case "Request":
			return fmt.Sprintf("%s %s", r.HTTP.Protocol, req)
		case "Response":
			return fmt.Sprintf("%s %d %dms (%s)", r.HTTP.Protocol, r.HTTP.Code,
				uint64(time.Duration(f.L7.LatencyNs)/time.Millisecond), req)
		}
		return ""
	case r.Kafka != nil:
		k := f.L7.GetKafka()
		if f.L7.Type == flowpb.L7FlowType_REQUEST {
			return fmt.Sprintf("Kafka request %s correlation id %d topic '%s'", k.ApiKey, k.CorrelationId, k.Topic)
		}
		return fmt.Sprintf("Kafka response %s correlation id %d topic '%s' return code %d",
			k.ApiKey, k.CorrelationId, k.Topic, k.ErrorCode)
	case r.DNS != nil:
		return dnsSummary(r.Type, r.DNS)
	case r.L7 != nil:
		return fmt.Sprintf("%s Fields: %s", r.L7.Proto, r.L7.Fields)
	}
	return ""
}

func dnsSummary(typ string, d *AccessLogDNS) string {
	types := make([]string, 0, len(d.QTypes))
	for _, t := range d.QTypes {
		types = append(types, dnsTypeName(t))
	}
	q := strings.Join(types, ",")
	switch typ {
	case "Request":
		return fmt.Sprintf("DNS Query %s %s", d.Query, q)
	case "Response":
		var answer string
		if rc := uint8(d.RCode); rc != 0 {
			name, ok := dnsRcodes[rc]
			if !ok {
				name = "Unknown"
			}
			answer = "RCode: " + name
		} else {
			var parts []string
			if len(d.IPs) > 0 {
				ips := make([]string, 0, len(d.IPs))
				for _, ip := range d.IPs {
					ips = append(ips, ip.String())
				}
				parts = append(parts, fmt.Sprintf("%q", strings.Join(ips, ",")))
			}
			if len(d.CNAMEs) > 0 {
				parts = append(parts, fmt.Sprintf("CNAMEs: %q", strings.Join(d.CNAMEs, ",")))
			}
			answer = strings.Join(parts, " ")
		}
		src := "Query"
		if d.ObservationSource == "proxy" {
			src = "Proxy"
		}
		return fmt.Sprintf("DNS Answer %s TTL: %d (%s %s %s)", answer, d.TTL, src, d.Query, q)
	}
	return ""
}

// l7State matches responses to requests by X-Request-Id: the request's
// time (for the latency) and its trace context. It holds at most
// l7CacheSize requests and forgets the oldest first.
type l7State struct {
	pending map[string]*l7Request
	order   []string // ids in insertion order; may hold ids already answered
}

type l7Request struct {
	time    time.Time
	hasTime bool
	trace   *flowpb.TraceContext
}

const l7CacheSize = 10000

func requestID(r *AccessLogRecord) string {
	if r.HTTP == nil {
		return ""
	}
	return r.HTTP.Headers.Get("X-Request-Id")
}

func (s *l7State) request(id string) *l7Request {
	if s.pending == nil {
		s.pending = make(map[string]*l7Request)
	}
	if p := s.pending[id]; p != nil {
		return p
	}
	for len(s.pending) >= l7CacheSize && len(s.order) > 0 {
		delete(s.pending, s.order[0])
		s.order = s.order[1:]
	}
	if len(s.order) >= 2*l7CacheSize { // drop ids already answered
		live := s.order[:0]
		for _, o := range s.order {
			if s.pending[o] != nil {
				live = append(live, o)
			}
		}
		s.order = live
	}
	p := new(l7Request)
	s.pending[id] = p
	s.order = append(s.order, id)
	return p
}

func (s *l7State) latency(r *AccessLogRecord, ts time.Time) uint64 {
	id := requestID(r)
	if id == "" {
		return 0
	}
	switch r.Type {
	case "Request":
		p := s.request(id)
		p.time, p.hasTime = ts, true
	case "Response":
		p := s.pending[id]
		if p == nil || !p.hasTime {
			return 0
		}
		p.hasTime = false
		s.forget(id, p)
		if l := ts.Sub(p.time).Nanoseconds(); l > 0 {
			return uint64(l)
		}
	}
	return 0
}

func (s *l7State) forget(id string, p *l7Request) {
	if !p.hasTime && p.trace == nil {
		delete(s.pending, id)
	}
}

func (s *l7State) traceContext(r *AccessLogRecord) *flowpb.TraceContext {
	id := requestID(r)
	switch r.Type {
	case "Request":
		if r.HTTP == nil {
			return nil
		}
		tid := traceParentID(r.HTTP.Headers.Get("traceparent"))
		if tid == "" {
			return nil
		}
		if id != "" {
			s.request(id).trace = &flowpb.TraceContext{Parent: &flowpb.TraceParent{TraceId: tid}}
		}
		return &flowpb.TraceContext{Parent: &flowpb.TraceParent{TraceId: tid}}
	case "Response":
		if id == "" {
			return nil
		}
		p := s.pending[id]
		if p == nil || p.trace == nil {
			return nil
		}
		tc := p.trace
		p.trace = nil
		s.forget(id, p)
		return tc
	}
	return nil
}

// traceParentID returns the trace ID of a W3C traceparent header value, or
// "" if the value is not valid (the checks of OpenTelemetry's propagator).
func traceParentID(h string) string {
	h = strings.TrimSpace(h)
	if len(h) < 55 {
		return ""
	}
	if h[2] != '-' || h[35] != '-' || h[52] != '-' {
		return ""
	}
	ver, tid, sid, flags := h[0:2], h[3:35], h[36:52], h[53:55]
	if !isLowerHex(ver) || ver == "ff" || !isLowerHex(tid) || !isLowerHex(sid) || !isLowerHex(flags) {
		return ""
	}
	if ver == "00" && len(h) != 55 {
		return ""
	}
	if len(h) > 55 && h[55] != '-' {
		return ""
	}
	if strings.Trim(tid, "0") == "" || strings.Trim(sid, "0") == "" {
		return ""
	}
	return tid
}

func isLowerHex(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}
