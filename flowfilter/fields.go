package flowfilter

import (
	"errors"
	"fmt"
	"net/netip"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"

	flowpb "github.com/flowbus/flowbus/flow"
)

// messageTypeAccessLog is Cilium's monitor message type of L7 records
// (pkg/monitor/api MessageTypeAccessLog).
const messageTypeAccessLog = 129

// compile turns one FlowFilter into its predicates. A field counts as set
// when its list is non-empty (Hubble tests `!= nil`, and decoded empty
// lists are nil).
func compile(ff *flowpb.FlowFilter) (*flowFilter, error) {
	c := &flowFilter{}
	add := func(p predicate, err error) error {
		if err != nil {
			return err
		}
		if p != nil {
			c.preds = append(c.preds, p)
		}
		return nil
	}
	steps := []func() error{
		func() error { return add(uuidFilter(ff.GetUuid())) },
		func() error {
			return add(ipFilter("source_ip", ff.GetSourceIp(), func(f *flowpb.Flow) string { return f.GetIP().GetSource() }))
		},
		func() error {
			return add(ipFilter("destination_ip", ff.GetDestinationIp(), func(f *flowpb.Flow) string { return f.GetIP().GetDestination() }))
		},
		func() error {
			return add(ipFilter("source_ip_xlated", ff.GetSourceIpXlated(), func(f *flowpb.Flow) string { return f.GetIP().GetSourceXlated() }))
		},
		func() error {
			return add(nameFilter("source_pod", ff.GetSourcePod(), func(f *flowpb.Flow) (string, string) {
				ep := f.GetSource()
				return ep.GetNamespace(), ep.GetPodName()
			}))
		},
		func() error {
			return add(nameFilter("destination_pod", ff.GetDestinationPod(), func(f *flowpb.Flow) (string, string) {
				ep := f.GetDestination()
				return ep.GetNamespace(), ep.GetPodName()
			}))
		},
		func() error {
			return add(nameFilter("source_service", ff.GetSourceService(), func(f *flowpb.Flow) (string, string) {
				s := f.GetSourceService()
				return s.GetNamespace(), s.GetName()
			}))
		},
		func() error {
			return add(nameFilter("destination_service", ff.GetDestinationService(), func(f *flowpb.Flow) (string, string) {
				s := f.GetDestinationService()
				return s.GetNamespace(), s.GetName()
			}))
		},
		func() error {
			return add(fqdnFilter("source_fqdn", ff.GetSourceFqdn(), (*flowpb.Flow).GetSourceNames))
		},
		func() error {
			return add(fqdnFilter("destination_fqdn", ff.GetDestinationFqdn(), (*flowpb.Flow).GetDestinationNames))
		},
		func() error {
			return add(labelFilter("source_label", ff.GetSourceLabel(), func(f *flowpb.Flow) []string { return f.GetSource().GetLabels() }))
		},
		func() error {
			return add(labelFilter("destination_label", ff.GetDestinationLabel(), func(f *flowpb.Flow) []string { return f.GetDestination().GetLabels() }))
		},
		func() error {
			return add(labelFilter("node_labels", ff.GetNodeLabels(), (*flowpb.Flow).GetNodeLabels))
		},
		func() error {
			return add(workloadFilter("source_workload", ff.GetSourceWorkload(), (*flowpb.Flow).GetSource))
		},
		func() error {
			return add(workloadFilter("destination_workload", ff.GetDestinationWorkload(), (*flowpb.Flow).GetDestination))
		},
		func() error {
			return add(clusterNameFilter("source_cluster_name", ff.GetSourceClusterName(), (*flowpb.Flow).GetSource))
		},
		func() error {
			return add(clusterNameFilter("destination_cluster_name", ff.GetDestinationClusterName(), (*flowpb.Flow).GetDestination))
		},
		func() error { return add(trafficDirectionFilter(ff.GetTrafficDirection())) },
		func() error { return add(verdictFilter(ff.GetVerdict())) },
		func() error { return add(dropReasonFilter(ff.GetDropReasonDesc())) },
		func() error { return add(interfaceFilter(ff.GetInterface())) },
		func() error { return add(eventTypeFilter(ff.GetEventType())) },
		func() error { return add(httpStatusFilter(ff)) },
		func() error { return add(httpMethodFilter(ff)) },
		func() error { return add(httpPathFilter(ff)) },
		func() error { return add(httpURLFilter(ff)) },
		func() error { return add(httpHeaderFilter(ff)) },
		func() error { return add(protocolFilter(ff.GetProtocol())) },
		func() error { return add(portFilter("source_port", ff.GetSourcePort(), true)) },
		func() error { return add(portFilter("destination_port", ff.GetDestinationPort(), false)) },
		func() error { return add(replyFilter(ff.GetReply())) },
		func() error { return add(dnsQueryFilter(ff.GetDnsQuery())) },
		func() error {
			return add(identityFilter(ff.GetSourceIdentity(), (*flowpb.Flow).GetSource))
		},
		func() error {
			return add(identityFilter(ff.GetDestinationIdentity(), (*flowpb.Flow).GetDestination))
		},
		func() error { return add(tcpFlagsFilter(ff.GetTcpFlags())) },
		func() error { return add(nodeNameFilter(ff.GetNodeName())) },
		func() error { return add(ipVersionFilter(ff.GetIpVersion())) },
		func() error { return add(traceIDFilter(ff.GetTraceId())) },
		func() error { return add(ipTraceIDFilter(ff.GetIpTraceId())) },
		func() error { return add(encryptedFilter(ff.GetEncrypted())) },
		func() error { return add(celFilter(ff.GetExperimental().GetCelExpression())) },
	}
	for _, step := range steps {
		if err := step(); err != nil {
			return nil, err
		}
	}
	return c, nil
}

// uuid: exact string equality with flow.uuid.
func uuidFilter(ids []string) (predicate, error) {
	if len(ids) == 0 {
		return nil, nil
	}
	return func(f *flowpb.Flow) bool {
		return slices.Contains(ids, f.GetUuid())
	}, nil
}

// source_ip / destination_ip / source_ip_xlated: an entry containing "/" is
// a CIDR (netip.ParsePrefix), otherwise an address (netip.ParseAddr); both
// are validated at build time. The flow's IP string must be non-empty;
// addresses are compared as strings, exactly as written (no
// normalisation), prefixes by Contains(ParseAddr(flow ip)).
func ipFilter(field string, entries []string, get func(*flowpb.Flow) string) (predicate, error) {
	if len(entries) == 0 {
		return nil, nil
	}
	var addrs []string
	var prefixes []netip.Prefix
	for i, e := range entries {
		if strings.Contains(e, "/") {
			p, err := netip.ParsePrefix(e)
			if err != nil {
				return nil, fieldErrf(field, i, e, "invalid CIDR: %v", err)
			}
			prefixes = append(prefixes, p)
			continue
		}
		if _, err := netip.ParseAddr(e); err != nil {
			return nil, fieldErrf(field, i, e, "invalid IP address: %v", err)
		}
		addrs = append(addrs, e)
	}
	return func(f *flowpb.Flow) bool {
		ip := get(f)
		if ip == "" {
			return false
		}
		if slices.Contains(addrs, ip) {
			return true
		}
		if len(prefixes) > 0 {
			a, err := netip.ParseAddr(ip)
			if err != nil {
				return false
			}
			for _, p := range prefixes {
				if p.Contains(a) {
					return true
				}
			}
		}
		return false
	}, nil
}

// source_pod / destination_pod / source_service / destination_service:
// entries are `[namespace/][prefix]` split like Hubble's
// ParseNamespaceName: "ns/prefix" → (ns, prefix); "ns/" → every name in
// ns; "/prefix" → the prefix in any namespace; "prefix" (no slash) →
// namespace "default"; with more than one slash, everything after the
// second segment is ignored. An entry giving neither ("" or "/") is an
// error. Match: the endpoint's namespace and name must not both be empty,
// the namespace must equal the entry's unless that is empty, and the name
// must start with the prefix (an empty prefix matches every name).
func nameFilter(field string, entries []string, get func(*flowpb.Flow) (ns, name string)) (predicate, error) {
	if len(entries) == 0 {
		return nil, nil
	}
	type nsName struct{ ns, prefix string }
	filters := make([]nsName, 0, len(entries))
	for i, e := range entries {
		ns, prefix := parseNamespaceName(e)
		if ns == "" && prefix == "" {
			return nil, fieldErrf(field, i, e, "invalid filter, must be [namespace/][<name>]")
		}
		filters = append(filters, nsName{ns, prefix})
	}
	return func(f *flowpb.Flow) bool {
		ns, name := get(f)
		if ns == "" && name == "" {
			return false
		}
		for _, nf := range filters {
			if (nf.ns == "" || nf.ns == ns) && strings.HasPrefix(name, nf.prefix) {
				return true
			}
		}
		return false
	}, nil
}

// parseNamespaceName splits "ns/name" (Hubble's k8s.ParseNamespaceName).
func parseNamespaceName(s string) (ns, name string) {
	first, rest, found := strings.Cut(s, "/")
	if found {
		name, _, _ = strings.Cut(rest, "/")
		return first, name
	}
	if first == "" {
		return "", ""
	}
	return "default", first
}

// source_fqdn / destination_fqdn: the patterns form one regular expression
// \A(?:p1|p2…)\z. Each pattern is trimmed of spaces and of one trailing
// dot, lower-cased, and may hold [-0-9_a-z.*], where "." is literal and "*"
// is [-.0-9a-z]* (it crosses dots). Matches when any of the flow's
// source_names / destination_names matches (names are not lower-cased).
func fqdnFilter(field string, patterns []string, get func(*flowpb.Flow) []string) (predicate, error) {
	if len(patterns) == 0 {
		return nil, nil
	}
	fps := make([]fqdnPattern, 0, len(patterns))
	for i, p := range patterns {
		fp, err := newFQDNPattern(p)
		if err != nil {
			return nil, fieldErr(field, i, p, err)
		}
		fps = append(fps, fp)
	}
	return func(f *flowpb.Flow) bool {
		for _, name := range get(f) {
			for i := range fps {
				if fps[i].match(name) {
					return true
				}
			}
		}
		return false
	}, nil
}

// fqdnRegexp matches any FQDN (with underscores): what an empty element of
// a node name pattern means.
const fqdnRegexp = `(?:[-0-9_a-z]+(?:\.[-0-9_a-z]+)*)`

func appendFQDNPattern(sb *strings.Builder, pattern string) error {
	pattern = strings.TrimSpace(pattern)
	pattern = strings.TrimSuffix(pattern, ".")
	pattern = strings.ToLower(pattern)
	switch {
	case pattern == "":
		return errors.New("empty pattern")
	case strings.HasSuffix(pattern, "."):
		return errors.New("multiple trailing dots in pattern")
	}
	for _, r := range pattern {
		switch {
		case r == '.':
			sb.WriteString(`\.`)
		case r == '*':
			sb.WriteString(`[-.0-9a-z]*`)
		case r == '-', r == '_', '0' <= r && r <= '9', 'a' <= r && r <= 'z':
			sb.WriteRune(r)
		default:
			return fmt.Errorf("%q: invalid rune in pattern", r)
		}
	}
	return nil
}

// node_name: patterns are [cluster/]node, each part an FQDN pattern as
// above where an empty part matches any name; without "/" the pattern
// matches every cluster; more than one "/" is an error. At match time an
// empty flow node_name never matches, and one without "/" is taken as
// "default/<node_name>" (Cilium's default cluster name).
func nodeNameFilter(patterns []string) (predicate, error) {
	if len(patterns) == 0 {
		return nil, nil
	}
	nps := make([]nodePattern, 0, len(patterns))
	for i, p := range patterns {
		np, err := newNodePattern(p)
		if err != nil {
			return nil, fieldErr("node_name", i, p, err)
		}
		nps = append(nps, np)
	}
	return func(f *flowpb.Flow) bool {
		name := f.GetNodeName()
		if name == "" {
			return false
		}
		cluster, node, found := strings.Cut(name, "/")
		if !found {
			cluster, node = "default", name
		} else if strings.IndexByte(node, '/') >= 0 {
			return false // no pattern part matches a slash
		}
		for i := range nps {
			if nps[i].match(cluster, node) {
				return true
			}
		}
		return false
	}, nil
}

func appendNodeNamePattern(sb *strings.Builder, pattern string) error {
	if pattern == "" {
		return errors.New("empty pattern")
	}
	cluster, node := "", ""
	elems := strings.Split(pattern, "/")
	switch len(elems) {
	case 1:
		node = elems[0]
	case 2:
		cluster, node = elems[0], elems[1]
	default:
		return errors.New("too many slashes in pattern")
	}
	if cluster == "" {
		sb.WriteString(fqdnRegexp)
	} else if err := appendFQDNPattern(sb, cluster); err != nil {
		return err
	}
	sb.WriteByte('/')
	if node == "" {
		sb.WriteString(fqdnRegexp)
	} else if err := appendFQDNPattern(sb, node); err != nil {
		return err
	}
	return nil
}

// source_workload / destination_workload: matches when some workload of
// the endpoint has (filter name empty or equal) and (filter kind empty or
// equal) for some filter entry.
func workloadFilter(field string, entries []*flowpb.Workload, ep func(*flowpb.Flow) *flowpb.Endpoint) (predicate, error) {
	if len(entries) == 0 {
		return nil, nil
	}
	type wl struct{ name, kind string }
	ws := make([]wl, len(entries))
	for i, e := range entries {
		ws[i] = wl{e.GetName(), e.GetKind()}
	}
	return func(f *flowpb.Flow) bool {
		for _, w := range ep(f).GetWorkloads() {
			for _, fw := range ws {
				if (fw.name == "" || fw.name == w.GetName()) && (fw.kind == "" || fw.kind == w.GetKind()) {
					return true
				}
			}
		}
		return false
	}, nil
}

// source_cluster_name / destination_cluster_name: exact equality with the
// endpoint's cluster_name; an empty name in the filter is an error.
func clusterNameFilter(field string, names []string, ep func(*flowpb.Flow) *flowpb.Endpoint) (predicate, error) {
	if len(names) == 0 {
		return nil, nil
	}
	for i, n := range names {
		if n == "" {
			return nil, fieldErrf(field, i, n, "invalid cluster name: empty")
		}
	}
	return func(f *flowpb.Flow) bool {
		return slices.Contains(names, ep(f).GetClusterName())
	}, nil
}

// traffic_direction: membership of flow.traffic_direction.
func trafficDirectionFilter(dirs []flowpb.TrafficDirection) (predicate, error) {
	if len(dirs) == 0 {
		return nil, nil
	}
	return func(f *flowpb.Flow) bool { return slices.Contains(dirs, f.GetTrafficDirection()) }, nil
}

// verdict: membership of flow.verdict.
func verdictFilter(vs []flowpb.Verdict) (predicate, error) {
	if len(vs) == 0 {
		return nil, nil
	}
	return func(f *flowpb.Flow) bool { return slices.Contains(vs, f.GetVerdict()) }, nil
}

// drop_reason_desc: the flow must be DROPPED and its drop_reason_desc in
// the list.
func dropReasonFilter(rs []flowpb.DropReason) (predicate, error) {
	if len(rs) == 0 {
		return nil, nil
	}
	return func(f *flowpb.Flow) bool {
		return f.GetVerdict() == flowpb.Verdict_DROPPED && slices.Contains(rs, f.GetDropReasonDesc())
	}, nil
}

// interface: flow.interface must be set, and some entry must have (index 0
// or equal) and (name empty or equal).
func interfaceFilter(ifs []*flowpb.NetworkInterface) (predicate, error) {
	if len(ifs) == 0 {
		return nil, nil
	}
	type iface struct {
		index uint32
		name  string
	}
	list := make([]iface, len(ifs))
	for i, e := range ifs {
		list[i] = iface{e.GetIndex(), e.GetName()}
	}
	return func(f *flowpb.Flow) bool {
		fi := f.GetInterface()
		if fi == nil {
			return false
		}
		for _, e := range list {
			if (e.index == 0 || e.index == fi.GetIndex()) && (e.name == "" || e.name == fi.GetName()) {
				return true
			}
		}
		return false
	}, nil
}

// event_type: flow.event_type must be set, and some entry must have (type 0
// or equal type) and (not match_sub_type, or equal sub_type). Type 0 is a
// wildcard. (Agent and debug events do not reach this transform, and
// LostEvents always pass.)
func eventTypeFilter(ets []*flowpb.EventTypeFilter) (predicate, error) {
	if len(ets) == 0 {
		return nil, nil
	}
	type et struct {
		typ, sub int32
		matchSub bool
	}
	list := make([]et, len(ets))
	for i, e := range ets {
		list[i] = et{e.GetType(), e.GetSubType(), e.GetMatchSubType()}
	}
	return func(f *flowpb.Flow) bool {
		fe := f.GetEventType()
		if fe == nil {
			return false
		}
		for _, e := range list {
			if (e.typ == 0 || e.typ == fe.GetType()) && (!e.matchSub || e.sub == fe.GetSubType()) {
				return true
			}
		}
		return false
	}, nil
}

// httpCompatible reports whether the filter's event_type list allows an
// HTTP filter: an empty list, or one with an entry of type 129 (L7).
func httpCompatible(ff *flowpb.FlowFilter, field string) error {
	ets := ff.GetEventType()
	if len(ets) == 0 {
		return nil
	}
	for _, e := range ets {
		if e.GetType() == messageTypeAccessLog {
			return nil
		}
	}
	return fieldErrf(field, -1, "", "filtering by %s requires the event type filter to only match 'l7' events (type %d)",
		strings.ReplaceAll(strings.TrimPrefix(field, "http_"), "_", " "), messageTypeAccessLog)
}

var (
	httpStatusFull   = regexp.MustCompile(`^[1-5][0-9]{2}$`)
	httpStatusPrefix = regexp.MustCompile(`^[1-5][0-9]?\+$`)
)

// http_status_code: entries are full codes (^[1-5][0-9]{2}$) or prefixes
// (^[1-5][0-9]?\+$: "4+" is 4xx, "40+" is 400–409); anything else is an
// error. Matches when l7.http is set with a non-zero code (so requests
// never match) whose zero-padded 3-digit form equals a full entry or
// starts with a prefix.
func httpStatusFilter(ff *flowpb.FlowFilter) (predicate, error) {
	codes := ff.GetHttpStatusCode()
	if len(codes) == 0 {
		return nil, nil
	}
	if err := httpCompatible(ff, "http_status_code"); err != nil {
		return nil, err
	}
	var full, prefix []string
	for i, s := range codes {
		switch {
		case httpStatusFull.MatchString(s):
			full = append(full, s)
		case httpStatusPrefix.MatchString(s):
			prefix = append(prefix, strings.TrimSuffix(s, "+"))
		default:
			return nil, fieldErrf("http_status_code", i, s, "invalid status code (want e.g. 404, 4+ or 40+)")
		}
	}
	return func(f *flowpb.Flow) bool {
		h := f.GetL7().GetHttp()
		if h == nil || h.GetCode() == 0 {
			return false
		}
		var buf [16]byte
		code := paddedCode(buf[:0], h.GetCode())
		for _, s := range full {
			if string(code) == s {
				return true
			}
		}
		for _, p := range prefix {
			if len(code) >= len(p) && string(code[:len(p)]) == p {
				return true
			}
		}
		return false
	}, nil
}

// paddedCode appends fmt's "%03d" of c to dst.
func paddedCode(dst []byte, c uint32) []byte {
	switch {
	case c < 10:
		dst = append(dst, '0', '0')
	case c < 100:
		dst = append(dst, '0')
	}
	return strconv.AppendUint(dst, uint64(c), 10)
}

// http_method: case-insensitive equality with a non-empty http.method.
func httpMethodFilter(ff *flowpb.FlowFilter) (predicate, error) {
	methods := ff.GetHttpMethod()
	if len(methods) == 0 {
		return nil, nil
	}
	if err := httpCompatible(ff, "http_method"); err != nil {
		return nil, err
	}
	return func(f *flowpb.Flow) bool {
		h := f.GetL7().GetHttp()
		if h == nil || h.GetMethod() == "" {
			return false
		}
		for _, m := range methods {
			if strings.EqualFold(h.GetMethod(), m) {
				return true
			}
		}
		return false
	}, nil
}

func compileRegexps(field string, exprs []string) ([]*regexp.Regexp, error) {
	res := make([]*regexp.Regexp, 0, len(exprs))
	for i, e := range exprs {
		re, err := regexp.Compile(e)
		if err != nil {
			return nil, fieldErrf(field, i, e, "invalid regular expression: %v", err)
		}
		res = append(res, re)
	}
	return res, nil
}

// http_path: RE2 expressions, unanchored, applied to the path of
// url.ParseRequestURI(http.url); an empty or unparsable URL never matches.
func httpPathFilter(ff *flowpb.FlowFilter) (predicate, error) {
	exprs := ff.GetHttpPath()
	if len(exprs) == 0 {
		return nil, nil
	}
	if err := httpCompatible(ff, "http_path"); err != nil {
		return nil, err
	}
	res, err := compileRegexps("http_path", exprs)
	if err != nil {
		return nil, err
	}
	var scratch []byte // unescaped paths; a Filter is used by one goroutine
	return func(f *flowpb.Flow) bool {
		h := f.GetL7().GetHttp()
		if h == nil || h.GetUrl() == "" {
			return false
		}
		var path []byte
		var ok bool
		path, scratch, ok = requestURIPath(scratch[:0], h.GetUrl())
		if !ok {
			return false
		}
		for _, re := range res {
			if re.Match(path) {
				return true
			}
		}
		return false
	}, nil
}

// requestURIPath returns the Path of url.ParseRequestURI(raw), or false
// when it fails. Common URLs (an absolute path, or scheme://host[:port]
// followed by one) are handled here, unescaping into buf without
// allocating; the others are given to net/url. It returns buf for reuse.
func requestURIPath(buf []byte, raw string) (path, newBuf []byte, ok bool) {
	p, buf, res := fastRequestURIPath(buf, raw)
	switch res {
	case fastOK:
		return p, buf, true
	case fastFail:
		return nil, buf, false
	}
	u, err := url.ParseRequestURI(raw)
	if err != nil {
		return nil, buf, false
	}
	buf = append(buf[:0], u.Path...)
	return buf, buf, true
}

type fastResult int

const (
	fastOK fastResult = iota
	fastFail
	fastUnsure // defer to net/url
)

// fastRequestURIPath follows net/url's parse(raw, viaRequest=true) for the
// URLs it is sure about.
func fastRequestURIPath(buf []byte, raw string) ([]byte, []byte, fastResult) {
	for i := 0; i < len(raw); i++ {
		if c := raw[i]; c < 0x20 || c == 0x7f {
			return nil, buf, fastFail // net/url refuses control bytes
		}
	}
	rest := raw
	if rest == "" || rest == "*" {
		return nil, buf, fastUnsure
	}
	if rest[0] != '/' {
		// scheme "://" authority, with a plain host and optional port.
		i := 0
		for i < len(rest) && ('a' <= rest[i] && rest[i] <= 'z' || 'A' <= rest[i] && rest[i] <= 'Z' ||
			i > 0 && ('0' <= rest[i] && rest[i] <= '9' || rest[i] == '+' || rest[i] == '-' || rest[i] == '.')) {
			i++
		}
		if i == 0 || i == len(rest) || rest[i] != ':' {
			// No scheme, and not an absolute path: net/url refuses it.
			return nil, buf, fastFail
		}
		rest = rest[i+1:]
		if q := strings.IndexByte(rest, '?'); q >= 0 {
			rest = rest[:q]
		}
		if !strings.HasPrefix(rest, "/") {
			return buf[:0], buf, fastOK // opaque: no path
		}
		if !strings.HasPrefix(rest, "//") {
			return unescapePath(buf, rest)
		}
		rest = rest[2:]
		end := strings.IndexAny(rest, "/?")
		if end < 0 {
			end = len(rest)
		}
		host := rest[:end]
		colon := false
		for j := 0; j < len(host); j++ {
			c := host[j]
			switch {
			case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', c == '.', c == '-':
				if colon {
					return nil, buf, fastUnsure
				}
			case '0' <= c && c <= '9':
			case c == ':' && !colon && j > 0:
				colon = true
			default:
				return nil, buf, fastUnsure
			}
		}
		rest = rest[end:]
		if rest == "" || rest[0] == '?' {
			return buf[:0], buf, fastOK // no path
		}
	}
	if q := strings.IndexByte(rest, '?'); q >= 0 {
		rest = rest[:q]
	}
	return unescapePath(buf, rest)
}

// unescapePath unescapes a path as net/url does: %XX must be valid hex.
func unescapePath(buf []byte, rest string) ([]byte, []byte, fastResult) {
	buf = buf[:0]
	for i := 0; i < len(rest); i++ {
		c := rest[i]
		if c != '%' {
			buf = append(buf, c)
			continue
		}
		if i+2 >= len(rest) || !isHex(rest[i+1]) || !isHex(rest[i+2]) {
			return nil, buf, fastFail
		}
		buf = append(buf, unhex(rest[i+1])<<4|unhex(rest[i+2]))
		i += 2
	}
	return buf, buf, fastOK
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

func unhex(c byte) byte {
	switch {
	case '0' <= c && c <= '9':
		return c - '0'
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10
	}
	return c - 'A' + 10
}

// http_url: RE2 expressions, unanchored, applied to the whole http.url.
func httpURLFilter(ff *flowpb.FlowFilter) (predicate, error) {
	exprs := ff.GetHttpUrl()
	if len(exprs) == 0 {
		return nil, nil
	}
	if err := httpCompatible(ff, "http_url"); err != nil {
		return nil, err
	}
	res, err := compileRegexps("http_url", exprs)
	if err != nil {
		return nil, err
	}
	return func(f *flowpb.Flow) bool {
		h := f.GetL7().GetHttp()
		if h == nil || h.GetUrl() == "" {
			return false
		}
		for _, re := range res {
			if re.MatchString(h.GetUrl()) {
				return true
			}
		}
		return false
	}, nil
}

// http_header: some header of the flow has exactly (case-sensitively) the
// key and value of some entry.
func httpHeaderFilter(ff *flowpb.FlowFilter) (predicate, error) {
	hs := ff.GetHttpHeader()
	if len(hs) == 0 {
		return nil, nil
	}
	if err := httpCompatible(ff, "http_header"); err != nil {
		return nil, err
	}
	type kv struct{ k, v string }
	list := make([]kv, len(hs))
	for i, h := range hs {
		list[i] = kv{h.GetKey(), h.GetValue()}
	}
	return func(f *flowpb.Flow) bool {
		h := f.GetL7().GetHttp()
		if h == nil {
			return false
		}
		for _, fh := range h.GetHeaders() {
			for _, e := range list {
				if fh.GetKey() == e.k && fh.GetValue() == e.v {
					return true
				}
			}
		}
		return false
	}, nil
}

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

// reply: if is_reply is unset and the verdict is not DROPPED, no match;
// otherwise is_reply's value (unset counts as false) must be in the list.
func replyFilter(rs []bool) (predicate, error) {
	if len(rs) == 0 {
		return nil, nil
	}
	return func(f *flowpb.Flow) bool {
		if f.GetIsReply() == nil && f.GetVerdict() != flowpb.Verdict_DROPPED {
			return false
		}
		return slices.Contains(rs, f.GetIsReply().GetValue())
	}, nil
}

// dns_query: RE2 expressions, unanchored, applied to l7.dns.query (which
// keeps its trailing dot); l7.dns must be set.
func dnsQueryFilter(exprs []string) (predicate, error) {
	if len(exprs) == 0 {
		return nil, nil
	}
	res, err := compileRegexps("dns_query", exprs)
	if err != nil {
		return nil, err
	}
	return func(f *flowpb.Flow) bool {
		dns := f.GetL7().GetDns()
		if dns == nil {
			return false
		}
		for _, re := range res {
			if re.MatchString(dns.GetQuery()) {
				return true
			}
		}
		return false
	}, nil
}

// source_identity / destination_identity: the endpoint must be set and its
// identity in the list.
func identityFilter(ids []uint32, ep func(*flowpb.Flow) *flowpb.Endpoint) (predicate, error) {
	if len(ids) == 0 {
		return nil, nil
	}
	return func(f *flowpb.Flow) bool {
		e := ep(f)
		return e != nil && slices.Contains(ids, e.GetIdentity())
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

// ip_version: membership of IP.ipVersion (IP_NOT_USED without IP).
func ipVersionFilter(vs []flowpb.IPVersion) (predicate, error) {
	if len(vs) == 0 {
		return nil, nil
	}
	return func(f *flowpb.Flow) bool { return slices.Contains(vs, f.GetIP().GetIpVersion()) }, nil
}

// trace_id: exact equality with trace_context.parent.trace_id ("" matches
// flows without one).
func traceIDFilter(ids []string) (predicate, error) {
	if len(ids) == 0 {
		return nil, nil
	}
	return func(f *flowpb.Flow) bool {
		return slices.Contains(ids, f.GetTraceContext().GetParent().GetTraceId())
	}, nil
}

// ip_trace_id: ip_trace_id.trace_id in the list (0 matches flows without
// one).
func ipTraceIDFilter(ids []uint64) (predicate, error) {
	if len(ids) == 0 {
		return nil, nil
	}
	return func(f *flowpb.Flow) bool {
		return slices.Contains(ids, f.GetIpTraceId().GetTraceId())
	}, nil
}

// encrypted: IP.encrypted (false without IP) in the list.
func encryptedFilter(vs []bool) (predicate, error) {
	if len(vs) == 0 {
		return nil, nil
	}
	return func(f *flowpb.Flow) bool {
		return slices.Contains(vs, f.GetIP().GetEncrypted())
	}, nil
}
