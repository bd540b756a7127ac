package flowfilter

// Predicates on layer 7 records: HTTP status, method, path, URL and
// headers, and DNS queries.

import (
	"net/url"
	"regexp"
	"strconv"
	"strings"

	flowpb "github.com/flowbus/flowbus/flow"
)

// messageTypeAccessLog is Cilium's monitor message type of L7 records
// (pkg/monitor/api MessageTypeAccessLog).
const messageTypeAccessLog = 129

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
