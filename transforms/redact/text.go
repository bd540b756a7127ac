package redact

import (
	"net/netip"
	"strings"

	flowpb "github.com/flowbus/flowbus/flow"
)

// Addresses also appear outside the address fields, in text a reader could
// undo a pseudonym with: the Summary and l7.http.url repeat them, a DNS PTR
// query spells one backwards (17.3.0.10.in-addr.arpa, and nibble by nibble
// under ip6.arpa), X-Forwarded-For and Forwarded headers carry clients',
// Kubernetes names pods and nodes after theirs (ip-10-0-3-17), and the
// bridge MAC of a pod is 0a:58 followed by its IPv4 address. So with `ip`
// rules every address found in these text fields is pseudonymised too,
// in the form it was written, with the same mapping as the address fields
// (10.0.3.17 and 10-0-3-17 become the same pseudonym, dotted and dashed):
//
//	Summary, ethernet.source, ethernet.destination, node_name,
//	source_names, destination_names, {source,destination}.pod_name,
//	{source,destination}.workloads[].name, l7.http.url,
//	l7.http.headers[].value, l7.dns.query, l7.dns.cnames
//
// An address is: a dotted or dashed IPv4 quad (each part a decimal of at
// most 255, not inside a longer number), the same reversed before
// .in-addr.arpa, an IPv6 address in any textual form, its 32 nibbles
// reversed before .ip6.arpa, or a MAC 0a:58:xx:xx:xx:xx. Text that merely
// looks like an address (a version 1.2.3.4) is rewritten too: a redactor
// errs on the side of hiding. This happens whatever `fields` says.
//
// Other fields are not searched and keep any address they hold: the
// endpoints' and node's labels (Cilium identity labels: dozens per flow,
// searching them would triple the cost of redaction, and rewriting them
// would change identities), extensions (opaque), policies
// (egress_allowed_by, ingress_allowed_by, ...), service, cluster and
// namespace names, interface names, trace context, and every Kafka field.
// Clear them with `remove` where they might hold addresses (e.g. remove:
// [source.labels, destination.labels, node_labels, extensions]).

// redactText pseudonymises the addresses in every text field of f.
func (r *Redactor) redactText(f *flowpb.Flow) {
	f.Summary = r.text(f.Summary)
	if e := f.Ethernet; e != nil {
		e.Source = r.text(e.Source)
		e.Destination = r.text(e.Destination)
	}
	f.NodeName = r.text(f.NodeName)
	r.texts(f.SourceNames)
	r.texts(f.DestinationNames)
	r.endpoint(f.Source)
	r.endpoint(f.Destination)
	if l7 := f.L7; l7 != nil {
		if h := l7.GetHttp(); h != nil {
			h.Url = r.text(h.Url)
			for _, hd := range h.Headers {
				if hd != nil {
					hd.Value = r.text(hd.Value)
				}
			}
		}
		if d := l7.GetDns(); d != nil {
			d.Query = r.text(d.Query)
			r.texts(d.Cnames)
		}
	}
}

func (r *Redactor) endpoint(e *flowpb.Endpoint) {
	if e == nil {
		return
	}
	e.PodName = r.text(e.PodName)
	for _, w := range e.Workloads {
		if w != nil {
			w.Name = r.text(w.Name)
		}
	}
}

func (r *Redactor) texts(ss []string) {
	for i, s := range ss {
		ss[i] = r.text(s)
	}
}

// text returns s with every address in it pseudonymised; s itself when it
// holds none (without allocating). Most text holds none, so the scan does
// little per byte: text without two digits around a dot or dash, a colon
// after a hex digit, or two colons holds no address; IPv6 addresses and
// MACs are looked for only in text with two colons, ip6.arpa names only in
// text that says arpa, and an IPv4 quad only where a number starts.
func (r *Redactor) text(s string) string {
	if !mayHoldAddr(s) {
		return s
	}
	colons := strings.Count(s, ":") >= 2
	arpa := len(s) >= 63+len(".ip6.arpa") && (strings.Contains(s, "arpa") || strings.Contains(s, "ARPA"))
	var out []byte
	last := 0 // s[last:] is not yet copied to out
	for i := 0; i < len(s); {
		form, n := r.token(s, i, colons, arpa)
		if n == 0 {
			i++
			continue
		}
		if out == nil {
			out = r.buf[:0]
		}
		out = append(out, s[last:i]...)
		out = r.emit(out, s[i:i+n], form)
		i += n
		last = i
	}
	if out == nil {
		return s
	}
	out = append(out, s[last:]...)
	r.buf = out
	return string(out)
}

// Address forms.
const (
	formV4 = iota
	formDashed
	formInAddr
	formV6
	formIP6Arpa
	formMAC
)

// token returns the form and length of the address that starts at s[i]
// (and at no earlier position of the same word), or n = 0. colons and arpa
// say whether s may hold IPv6 addresses and MACs, and ip6.arpa names.
func (r *Redactor) token(s string, i int, colons, arpa bool) (form, n int) {
	c, prev := s[i], byte(' ')
	if i > 0 {
		prev = s[i-1]
	}
	if (colons || arpa) && (isHex(c) || c == ':') && !isHex(prev) && prev != ':' {
		if arpa {
			if n := nibbles(s, i); n > 0 {
				return formIP6Arpa, n
			}
		}
		if colons {
			if c == '0' && mac(s, i) > 0 {
				return formMAC, 17
			}
			if n := v6(s, i); n > 0 {
				return formV6, n
			}
		}
	}
	if isDigit(c) && !isDigit(prev) && !(i > 1 && (prev == '.' || prev == '-') && isDigit(s[i-2])) {
		if n, sep := quad(s, i); n > 0 {
			switch {
			case sep == '-':
				return formDashed, n
			case hasPrefixFold(s[i+n:], ".in-addr.arpa"):
				return formInAddr, n
			default:
				return formV4, n
			}
		}
	}
	return 0, 0
}

// emit appends the pseudonym of the address tok, written in form.
func (r *Redactor) emit(out []byte, tok string, form int) []byte {
	switch form {
	case formV4, formDashed, formInAddr:
		a, _ := parseQuad(tok)
		if form == formInAddr {
			a = [4]byte{a[3], a[2], a[1], a[0]}
		}
		p := r.ip.addr(netip.AddrFrom4(a)).As4()
		switch form {
		case formV4:
			return netip.AddrFrom4(p).AppendTo(out)
		case formDashed:
			start := len(out)
			out = netip.AddrFrom4(p).AppendTo(out)
			for j := start; j < len(out); j++ {
				if out[j] == '.' {
					out[j] = '-'
				}
			}
			return out
		default:
			return netip.AddrFrom4([4]byte{p[3], p[2], p[1], p[0]}).AppendTo(out)
		}
	case formV6:
		a, _ := netip.ParseAddr(tok)
		return r.ip.addr(a).AppendTo(out)
	case formIP6Arpa:
		var b [16]byte
		for k := range 32 {
			v := unhex(tok[2*k])
			j := 15 - k/2
			if k%2 == 0 {
				b[j] |= v
			} else {
				b[j] |= v << 4
			}
		}
		p := r.ip.addr(netip.AddrFrom16(b)).As16()
		for k := range 32 {
			v := p[15-k/2]
			if k%2 == 0 {
				v &= 0xf
			} else {
				v >>= 4
			}
			out = append(out, hexDigit(v, false), '.')
		}
		return out[:len(out)-1]
	case formMAC:
		var a [4]byte
		upper := false
		for k := range 4 {
			h, l := tok[6+3*k], tok[7+3*k]
			a[k] = unhex(h)<<4 | unhex(l)
			upper = upper || h >= 'A' && h <= 'F' || l >= 'A' && l <= 'F'
		}
		p := r.ip.addr(netip.AddrFrom4(a)).As4()
		out = append(out, tok[:6]...)
		for k, v := range p {
			if k > 0 {
				out = append(out, ':')
			}
			out = append(out, hexDigit(v>>4, upper), hexDigit(v&0xf, upper))
		}
		return out
	}
	return append(out, tok...)
}

// quad returns the length of the IPv4 quad at s[i] (four decimals of at
// most 255 with the same separator, '.' or '-', the last not followed by
// another digit) and its separator; 0 if there is none.
func quad(s string, i int) (int, byte) {
	j := i
	var sep byte
	for part := range 4 {
		if part > 0 {
			if j >= len(s) || (s[j] != '.' && s[j] != '-') || (sep != 0 && s[j] != sep) {
				return 0, 0
			}
			sep = s[j]
			j++
		}
		v, k := 0, 0
		for ; k < 3 && j+k < len(s) && isDigit(s[j+k]); k++ {
			v = 10*v + int(s[j+k]-'0')
		}
		if k == 0 || v > 255 || (j+k < len(s) && isDigit(s[j+k])) {
			return 0, 0
		}
		j += k
	}
	return j - i, sep
}

func parseQuad(tok string) ([4]byte, bool) {
	var a [4]byte
	part, v := 0, 0
	for i := 0; i <= len(tok); i++ {
		if i == len(tok) || tok[i] == '.' || tok[i] == '-' {
			a[part] = byte(v)
			part, v = part+1, 0
			continue
		}
		v = 10*v + int(tok[i]-'0')
	}
	return a, part == 4
}

// v6 returns the length of the IPv6 address at s[i], 0 if there is none:
// the longest run of hex digits, colons and dots with at least two colons
// that parses (trailing dots and colons, as in "fd00::1." or a zone, are
// not part of it).
func v6(s string, i int) int {
	j, colons := i, 0
	for j < len(s) && (isHex(s[j]) || s[j] == ':' || s[j] == '.') {
		if s[j] == ':' {
			colons++
		}
		j++
	}
	if colons < 2 {
		return 0
	}
	for j > i && (s[j-1] == '.' || s[j-1] == ':' && !(j-2 >= i && s[j-2] == ':')) {
		j--
	}
	if a, err := netip.ParseAddr(s[i:j]); err == nil && a.Is6() {
		return j - i
	}
	return 0
}

// mac returns 17 if s[i:] starts with a MAC 0a:58:xx:xx:xx:xx that no hex
// digit or colon continues, else 0.
func mac(s string, i int) int {
	if len(s)-i < 17 || !hasPrefixFold(s[i:], "0a:58:") {
		return 0
	}
	for k := 0; k < 17; k++ {
		if k%3 == 2 {
			if s[i+k] != ':' {
				return 0
			}
		} else if !isHex(s[i+k]) {
			return 0
		}
	}
	if i+17 < len(s) && (isHex(s[i+17]) || s[i+17] == ':') {
		return 0
	}
	return 17
}

// nibbles returns 63 if s[i:] starts with the 32 reversed nibbles of an
// IPv6 address followed by .ip6.arpa, else 0.
func nibbles(s string, i int) int {
	if len(s)-i < 63+len(".ip6.arpa") || !hasPrefixFold(s[i+63:], ".ip6.arpa") {
		return 0
	}
	for k := 0; k < 63; k++ {
		if k%2 == 1 {
			if s[i+k] != '.' {
				return 0
			}
		} else if !isHex(s[i+k]) {
			return 0
		}
	}
	return 63
}

// mayHoldAddr reports whether s has a digit, dot or dash and digit (every
// IPv4 form, ip6.arpa names), or a colon after a hex digit or a colon
// (every IPv6 form, MACs).
func mayHoldAddr(s string) bool {
	for i := 1; i+1 < len(s); i++ {
		switch s[i] {
		case '.', '-':
			if isDigit(s[i-1]) && isDigit(s[i+1]) {
				return true
			}
		case ':':
			if isHex(s[i-1]) || s[i-1] == ':' {
				return true
			}
		}
	}
	return len(s) == 2 && s == "::"
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }

func isHex(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F'
}

func unhex(c byte) byte {
	switch {
	case c >= 'a':
		return c - 'a' + 10
	case c >= 'A':
		return c - 'A' + 10
	}
	return c - '0'
}

func hexDigit(v byte, upper bool) byte {
	if v < 10 {
		return '0' + v
	}
	if upper {
		return 'A' + v - 10
	}
	return 'a' + v - 10
}

func hasPrefixFold(s, prefix string) bool {
	return len(s) >= len(prefix) && strings.EqualFold(s[:len(prefix)], prefix)
}
