package flowfilter

import (
	"errors"
	"fmt"
	"net/netip"
	"regexp"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"

	flowpb "github.com/flowbus/flowbus/flow"
)

// source_label / destination_label / node_labels: each entry is a
// Kubernetes label selector (`=`, `==`, `!=`, `in`, `notin`, `>`, `<`,
// exists, `!key`, ANDed by commas) whose keys may carry a Cilium source
// prefix: `k8s:app=foo`, `reserved:world`, `any:app`. As Hubble does, every
// key is first rewritten from `src:key` to `src.key`, and a key without a
// colon gets the `any.` source; then the selector is parsed with
// Kubernetes' grammar and validation. A flow label `src:key=value` (parsed
// like Cilium's labels.ParseLabel) is selected by `src.key` when the
// sources are equal or the selector's source is `any`; keys compare
// exactly, except between two `cidr` labels, where the selector's prefix
// must contain the label's. The entries are ORed.
func labelFilter(field string, selectors []string, get func(*flowpb.Flow) []string) (predicate, error) {
	if len(selectors) == 0 {
		return nil, nil
	}
	sels := make([]selector, 0, len(selectors))
	for i, s := range selectors {
		sel, err := parseLabelSelector(s)
		if err != nil {
			return nil, fieldErrf(field, i, s, "invalid label selector: %v", err)
		}
		sels = append(sels, sel)
	}
	return func(f *flowpb.Flow) bool {
		labels := get(f)
		for _, s := range sels {
			if s.matches(labels) {
				return true
			}
		}
		return false
	}, nil
}

// parseLabelSelector translates Cilium source prefixes and parses the
// result as a Kubernetes label selector.
func parseLabelSelector(s string) (selector, error) {
	return parseSelector(translateSelector(s))
}

// translateSelector rewrites `src:key` keys to `src.key`, and bare keys to
// `any.key`, leaving operators and values alone (Hubble's labelparser.go).
// A key starts after spaces and '!' and ends at a space, '=', '!' or ',';
// the next key starts after a ',' outside parentheses.
func translateSelector(s string) string {
	var out strings.Builder
	i := 0
	for i < len(s) {
		// up to the key
		for i < len(s) {
			r, n := utf8.DecodeRuneInString(s[i:])
			if !unicode.IsSpace(r) && r != '!' {
				break
			}
			out.WriteRune(r)
			i += n
		}
		// the key
		var kb strings.Builder
		for i < len(s) {
			r, n := utf8.DecodeRuneInString(s[i:])
			if unicode.IsSpace(r) || r == '=' || r == '!' || r == ',' {
				break
			}
			kb.WriteRune(r)
			i += n
		}
		key := kb.String()
		if !strings.Contains(key, ":") {
			out.WriteString("any.")
			out.WriteString(key)
		} else {
			out.WriteString(strings.Replace(key, ":", ".", 1))
		}
		// up to the next selector
		nesting := 0
		for i < len(s) {
			r, n := utf8.DecodeRuneInString(s[i:])
			switch r {
			case '(':
				nesting++
			case ')':
				nesting--
			}
			out.WriteRune(r)
			i += n
			if r == ',' && nesting == 0 {
				break
			}
		}
	}
	return out.String()
}

// selector is a parsed label selector: all requirements must match.
type selector []requirement

type operator int

const (
	opIn operator = iota
	opNotIn
	opEquals
	opNotEquals
	opExists
	opDoesNotExist
	opGreaterThan
	opLessThan
)

type requirement struct {
	key    selectKey
	op     operator
	values []string
	num    int64 // for > and <
}

// selectKey is a selector key `src.key` split like Cilium's
// parseSelectLabel(key, '.').
type selectKey struct {
	source, key string
	// cidr is the parsed key of a `cidr` source, when valid.
	cidr   netip.Prefix
	isCIDR bool
	// prefix is "source:" when a label can only be selected by starting
	// with it (see lookup).
	prefix string
}

func newSelectKey(k string) selectKey {
	src, key := parseLabelSource(k, '.')
	if src == "" {
		src = "any"
	}
	// A key has no '=' (label key validation forbids it), so parseLabel's
	// value split never applies here.
	sk := selectKey{source: src, key: key}
	switch src {
	case "any", "reserved", "cidr", "unspec":
	default:
		if !strings.ContainsAny(src, "$:") {
			sk.prefix = src + ":"
		}
	}
	if src == "cidr" {
		if p, ok := parseCIDRLabel(key); ok {
			sk.cidr, sk.isCIDR = p, true
		}
	}
	return sk
}

// parseLabelSource is Cilium's labels.parseSource: a leading '$' means the
// reserved source; otherwise the source is what precedes the first delim.
// With ':' as delimiter, "reserved.x" without a colon is reserved too.
func parseLabelSource(s string, delim byte) (src, next string) {
	if s == "" {
		return "", ""
	}
	if s[0] == '$' {
		return "reserved", s[1:]
	}
	i := strings.IndexByte(s, delim)
	if i < 0 {
		if delim != '.' && strings.HasPrefix(s, "reserved.") {
			return "reserved", s[len("reserved."):]
		}
		return "", s
	}
	return s[:i], s[i+1:]
}

// parseFlowLabel parses a flow label "src:key=value" like Cilium's
// labels.ParseLabel, without allocating.
func parseFlowLabel(s string) (src, key, value string) {
	src, next := parseLabelSource(s, ':')
	if src == "" {
		src = "unspec"
	}
	i := strings.IndexByte(next, '=')
	switch {
	case i < 0:
		key = next
	case i == 0 && src == "reserved":
		key = next[1:]
	default:
		key, value = next[:i], next[i+1:]
	}
	return src, key, value
}

// parseCIDRLabel parses the key of a cidr label: a prefix, with '-' for
// ':' in IPv6 addresses.
func parseCIDRLabel(key string) (netip.Prefix, bool) {
	if strings.IndexByte(key, '-') >= 0 {
		key = strings.ReplaceAll(key, "-", ":")
	}
	p, err := netip.ParsePrefix(key)
	if err != nil {
		return netip.Prefix{}, false
	}
	return p, true
}

// lookup returns the value of the first label the key selects.
func (k *selectKey) lookup(labels []string) (string, bool) {
	if k.prefix != "" {
		// A plain source (not any, reserved or cidr): only labels written
		// "source:key[=value]" can be selected.
		for _, l := range labels {
			if !strings.HasPrefix(l, k.prefix) {
				continue
			}
			rest := l[len(k.prefix):]
			key, value := rest, ""
			if i := strings.IndexByte(rest, '='); i >= 0 {
				key, value = rest[:i], rest[i+1:]
			}
			if key == k.key {
				return value, true
			}
		}
		return "", false
	}
	for _, l := range labels {
		src, key, value := parseFlowLabel(l)
		if k.source != "any" && k.source != src {
			continue
		}
		if k.source == "cidr" && src == "cidr" && k.isCIDR {
			if p, ok := parseCIDRLabel(key); ok {
				if k.cidr.Bits() <= p.Bits() && k.cidr.Contains(p.Addr()) {
					return value, true
				}
				continue
			}
		}
		if key == k.key {
			return value, true
		}
	}
	return "", false
}

func (s selector) matches(labels []string) bool {
	for i := range s {
		if !s[i].matches(labels) {
			return false
		}
	}
	return true
}

// matches is Kubernetes' Requirement.Matches.
func (r *requirement) matches(labels []string) bool {
	v, ok := r.key.lookup(labels)
	switch r.op {
	case opIn, opEquals:
		return ok && r.has(v)
	case opNotIn, opNotEquals:
		return !ok || !r.has(v)
	case opExists:
		return ok
	case opDoesNotExist:
		return !ok
	case opGreaterThan, opLessThan:
		if !ok {
			return false
		}
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return false
		}
		if r.op == opGreaterThan {
			return n > r.num
		}
		return n < r.num
	}
	return false
}

func (r *requirement) has(v string) bool {
	for _, x := range r.values {
		if x == v {
			return true
		}
	}
	return false
}

// The selector grammar below is Kubernetes' (apimachinery labels.Parse).

type token int

const (
	tokError token = iota
	tokEOS
	tokClosedPar
	tokComma
	tokDoesNotExist
	tokDoubleEquals
	tokEquals
	tokGreaterThan
	tokIdentifier
	tokIn
	tokLessThan
	tokNotEquals
	tokNotIn
	tokOpenPar
)

var string2token = map[string]token{
	")":     tokClosedPar,
	",":     tokComma,
	"!":     tokDoesNotExist,
	"==":    tokDoubleEquals,
	"=":     tokEquals,
	">":     tokGreaterThan,
	"in":    tokIn,
	"<":     tokLessThan,
	"!=":    tokNotEquals,
	"notin": tokNotIn,
	"(":     tokOpenPar,
}

type scanned struct {
	tok token
	lit string
}

func isWhitespace(c byte) bool { return c == ' ' || c == '\t' || c == '\r' || c == '\n' }

func isSpecialSymbol(c byte) bool {
	switch c {
	case '=', '!', '(', ')', ',', '>', '<':
		return true
	}
	return false
}

// lex splits s into tokens like Kubernetes' label selector lexer: reading
// past the end yields NUL; a NUL byte starting a token ends the input, and
// one inside a token ends the token.
func lex(s string) []scanned {
	var out []scanned
	pos := 0
	read := func() byte {
		if pos < len(s) {
			c := s[pos]
			pos++
			return c
		}
		return 0
	}
	unread := func() { pos-- }
	for {
		c := read()
		for isWhitespace(c) {
			c = read()
		}
		switch {
		case c == 0:
			out = append(out, scanned{tokEOS, ""})
			return out
		case isSpecialSymbol(c):
			unread()
			var buf []byte
			last := scanned{}
		special:
			for {
				c := read()
				switch {
				case c == 0:
					break special
				case isSpecialSymbol(c):
					buf = append(buf, c)
					if t, ok := string2token[string(buf)]; ok {
						last = scanned{t, string(buf)}
					} else if last.tok != tokError {
						unread()
						break special
					}
				default:
					unread()
					break special
				}
			}
			if last.tok == tokError {
				last = scanned{tokError, fmt.Sprintf("error expected: keyword found '%s'", buf)}
			}
			out = append(out, last)
		default:
			unread()
			var buf []byte
		ident:
			for {
				c := read()
				switch {
				case c == 0:
					break ident
				case isSpecialSymbol(c) || isWhitespace(c):
					unread()
					break ident
				}
				buf = append(buf, c)
			}
			lit := string(buf)
			if t, ok := string2token[lit]; ok {
				out = append(out, scanned{t, lit})
			} else {
				out = append(out, scanned{tokIdentifier, lit})
			}
		}
	}
}

type parser struct {
	items []scanned
	pos   int
}

// lookahead returns the next token; in a values context "in" and "notin"
// are identifiers.
func (p *parser) lookahead(values bool) (token, string) {
	if p.pos >= len(p.items) {
		// Kubernetes' parser would index out of range here; no input reaches
		// this, as every path stops at the end-of-string token.
		return tokEOS, ""
	}
	it := p.items[p.pos]
	if values && (it.tok == tokIn || it.tok == tokNotIn) {
		return tokIdentifier, it.lit
	}
	return it.tok, it.lit
}

func (p *parser) consume(values bool) (token, string) {
	t, l := p.lookahead(values)
	p.pos++
	return t, l
}

func parseSelector(s string) (selector, error) {
	p := &parser{items: lex(s)}
	var sel selector
	for {
		tok, lit := p.lookahead(true)
		switch tok {
		case tokIdentifier, tokDoesNotExist:
			r, err := p.parseRequirement()
			if err != nil {
				return nil, fmt.Errorf("unable to parse requirement: %w", err)
			}
			sel = append(sel, r)
			t, l := p.consume(true)
			switch t {
			case tokEOS:
				return sel, nil
			case tokComma:
				t2, l2 := p.lookahead(true)
				if t2 != tokIdentifier && t2 != tokDoesNotExist {
					return nil, fmt.Errorf("found '%s', expected: identifier after ','", l2)
				}
			default:
				return nil, fmt.Errorf("found '%s', expected: ',' or 'end of string'", l)
			}
		case tokEOS:
			return sel, nil
		default:
			return nil, fmt.Errorf("found '%s', expected: !, identifier, or 'end of string'", lit)
		}
	}
}

func (p *parser) parseRequirement() (requirement, error) {
	key, op, err := p.parseKeyAndInferOperator()
	if err != nil {
		return requirement{}, err
	}
	if op == opExists || op == opDoesNotExist {
		return newRequirement(key, op, nil)
	}
	op, err = p.parseOperator()
	if err != nil {
		return requirement{}, err
	}
	var values []string
	switch op {
	case opIn, opNotIn:
		values, err = p.parseValues()
	default:
		values, err = p.parseExactValue()
	}
	if err != nil {
		return requirement{}, err
	}
	return newRequirement(key, op, values)
}

const opNone operator = -1

func (p *parser) parseKeyAndInferOperator() (string, operator, error) {
	op := opNone
	tok, lit := p.consume(true)
	if tok == tokDoesNotExist {
		op = opDoesNotExist
		tok, lit = p.consume(true)
	}
	if tok != tokIdentifier {
		return "", op, fmt.Errorf("found '%s', expected: identifier", lit)
	}
	if err := validateLabelKey(lit); err != nil {
		return "", op, err
	}
	if t, _ := p.lookahead(true); t == tokEOS || t == tokComma {
		if op != opDoesNotExist {
			op = opExists
		}
	}
	return lit, op, nil
}

func (p *parser) parseOperator() (operator, error) {
	tok, lit := p.consume(false)
	switch tok {
	case tokIn:
		return opIn, nil
	case tokEquals, tokDoubleEquals:
		return opEquals, nil
	case tokGreaterThan:
		return opGreaterThan, nil
	case tokLessThan:
		return opLessThan, nil
	case tokNotIn:
		return opNotIn, nil
	case tokNotEquals:
		return opNotEquals, nil
	}
	return opNone, fmt.Errorf("found '%s', expected: one of '=', '==', '!=', 'in', 'notin', '>', '<'", lit)
}

func (p *parser) parseValues() ([]string, error) {
	tok, lit := p.consume(true)
	if tok != tokOpenPar {
		return nil, fmt.Errorf("found '%s' expected: '('", lit)
	}
	tok, lit = p.lookahead(true)
	switch tok {
	case tokIdentifier, tokComma:
		s, err := p.parseIdentifiersList()
		if err != nil {
			return nil, err
		}
		if tok, _ = p.consume(true); tok != tokClosedPar {
			return nil, fmt.Errorf("found '%s', expected: ')'", lit)
		}
		return s, nil
	case tokClosedPar:
		p.consume(true)
		return []string{""}, nil
	}
	return nil, fmt.Errorf("found '%s', expected: ',', ')' or identifier", lit)
}

func (p *parser) parseIdentifiersList() ([]string, error) {
	var s []string
	insert := func(v string) {
		for _, x := range s {
			if x == v {
				return
			}
		}
		s = append(s, v)
	}
	for {
		tok, lit := p.consume(true)
		switch tok {
		case tokIdentifier:
			insert(lit)
			tok2, lit2 := p.lookahead(true)
			switch tok2 {
			case tokComma:
				continue
			case tokClosedPar:
				return s, nil
			default:
				return nil, fmt.Errorf("found '%s', expected: ',' or ')'", lit2)
			}
		case tokComma:
			if len(s) == 0 {
				insert("")
			}
			tok2, _ := p.lookahead(true)
			if tok2 == tokClosedPar {
				insert("")
				return s, nil
			}
			if tok2 == tokComma {
				p.consume(true)
				insert("")
			}
		default:
			return nil, fmt.Errorf("found '%s', expected: ',', or identifier", lit)
		}
	}
}

func (p *parser) parseExactValue() ([]string, error) {
	tok, _ := p.lookahead(true)
	if tok == tokEOS || tok == tokComma {
		return []string{""}, nil
	}
	tok, lit := p.consume(true)
	if tok == tokIdentifier {
		return []string{lit}, nil
	}
	return nil, fmt.Errorf("found '%s', expected: identifier", lit)
}

func newRequirement(key string, op operator, values []string) (requirement, error) {
	r := requirement{key: newSelectKey(key), op: op, values: values}
	switch op {
	case opIn, opNotIn:
		if len(values) == 0 {
			return r, errors.New("for 'in', 'notin' operators, values set can't be empty")
		}
	case opEquals, opNotEquals:
		if len(values) != 1 {
			return r, errors.New("exact-match compatibility requires one single value")
		}
	case opExists, opDoesNotExist:
		if len(values) != 0 {
			return r, errors.New("values set must be empty for exists and does not exist")
		}
	case opGreaterThan, opLessThan:
		if len(values) != 1 {
			return r, errors.New("for 'Gt', 'Lt' operators, exactly one value is required")
		}
		n, err := strconv.ParseInt(values[0], 10, 64)
		if err != nil {
			return r, errors.New("for 'Gt', 'Lt' operators, the value must be an integer")
		}
		r.num = n
	}
	for _, v := range values {
		if err := validateLabelValue(key, v); err != nil {
			return r, err
		}
	}
	return r, nil
}

var (
	qualifiedNameRE = regexp.MustCompile(`^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$`)
	dns1123SubRE    = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`)
	labelValueRE    = regexp.MustCompile(`^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$`)
)

// validateLabelKey is Kubernetes' IsQualifiedName: [prefix/]name, prefix a
// DNS-1123 subdomain (≤253), name ≤63 alphanumerics with -_. inside.
func validateLabelKey(k string) error {
	parts := strings.Split(k, "/")
	var name string
	switch len(parts) {
	case 1:
		name = parts[0]
	case 2:
		prefix := parts[0]
		name = parts[1]
		if prefix == "" {
			return fmt.Errorf("invalid label key %q: prefix part must be non-empty", k)
		}
		if len(prefix) > 253 || !dns1123SubRE.MatchString(prefix) {
			return fmt.Errorf("invalid label key %q: prefix part must be a lowercase RFC 1123 subdomain", k)
		}
	default:
		return fmt.Errorf("invalid label key %q: a qualified name must consist of alphanumeric characters, '-', '_' or '.', with an optional DNS subdomain prefix and '/'", k)
	}
	switch {
	case name == "":
		return fmt.Errorf("invalid label key %q: name part must be non-empty", k)
	case len(name) > 63:
		return fmt.Errorf("invalid label key %q: name part must be no more than 63 characters", k)
	case !qualifiedNameRE.MatchString(name):
		return fmt.Errorf("invalid label key %q: name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character", k)
	}
	return nil
}

func validateLabelValue(k, v string) error {
	if len(v) > 63 || !labelValueRE.MatchString(v) {
		return fmt.Errorf("invalid label value: %q: at key: %q: a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (at most 63)", v, k)
	}
	return nil
}
