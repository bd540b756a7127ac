// Package template renders Kafka topics, NATS subjects and message keys from
// events: literal text with `{{ field.path }}` placeholders, such as
// `hubble.flows.{{ verdict }}` or `flows.{{ source.namespace }}`.
//
// A placeholder names a flow field with a dotted proto field path (see
// flow/fieldpath). When the field is unset or renders empty, the placeholder
// renders `unknown`. Characters a target does not allow are replaced by `_`:
// a Kafka topic allows [a-zA-Z0-9._-] only (a non-ASCII character becomes
// one `_` per byte), is cut to 249 bytes, and a topic that renders as `.` or
// `..` (names Kafka reserves) has its dots replaced by `_`. Literal text
// must be valid as it is: a literal Kafka topic that is longer than 249
// bytes, is `.` or `..`, or holds another character is a configuration
// error, as is a template whose literal text alone exceeds 249 bytes. In a
// NATS subject a rendered
// value never contains whitespace, control characters, `.`, `*` or `>`, so a
// placeholder always stays inside one subject token. LostEvents carry no flow:
// every placeholder renders `lost` for them (a sink may configure a separate
// template for LostEvents instead).
//
// Rendering appends to a caller's buffer and does not allocate.
package template

import (
	"fmt"
	"strings"
	"unicode/utf8"

	"gopkg.in/yaml.v3"

	"github.com/flowbus/flowbus/flow/fieldpath"
	"github.com/flowbus/flowbus/pipeline"
	"github.com/flowbus/flowbus/pipeline/config"
)

// Target says where a rendered template is used, which decides the
// characters it may contain.
type Target int

const (
	// Text renders values unchanged (message keys).
	Text Target = iota
	// Kafka renders Kafka topic names: [a-zA-Z0-9._-], at most 249 bytes.
	Kafka
	// NATS renders NATS subjects: placeholders stay inside one token.
	NATS
)

func (t Target) String() string {
	switch t {
	case Kafka:
		return "Kafka topic"
	case NATS:
		return "NATS subject"
	}
	return "text"
}

// Values rendered in place of a placeholder.
const (
	// Unknown replaces an unset or empty value.
	Unknown = "unknown"
	// Lost replaces every placeholder when the event is a LostEvent.
	Lost = "lost"
)

// MaxKafkaTopic is the longest topic name Kafka accepts.
const MaxKafkaTopic = 249

type part struct {
	lit  string // literal text, when hole is false
	path fieldpath.Path
	hole bool
	off  int // byte offset in the template text
}

// Template is a parsed template. It is immutable and safe for concurrent use.
type Template struct {
	src    string
	target Target
	parts  []part
}

// Error is a template syntax error at a byte offset of the template text.
type Error struct {
	Template string
	Offset   int
	Msg      string
}

func (e *Error) Error() string {
	return fmt.Sprintf("template %q: at offset %d: %s", e.Template, e.Offset, e.Msg)
}

// Parse parses s for the given target. Literal text must already be valid
// for the target; placeholders must name fields of flow.Flow.
func Parse(s string, target Target) (*Template, error) {
	t := &Template{src: s, target: target}
	errAt := func(off int, format string, args ...any) error {
		return &Error{Template: s, Offset: off, Msg: fmt.Sprintf(format, args...)}
	}
	if s == "" {
		return nil, errAt(0, "empty template")
	}
	rest, off := s, 0
	for rest != "" {
		open := strings.Index(rest, "{{")
		closing := strings.Index(rest, "}}")
		if closing >= 0 && (open < 0 || closing < open) {
			return nil, errAt(off+closing, "unexpected }} without {{")
		}
		if open < 0 {
			t.parts = append(t.parts, part{lit: rest, off: off})
			break
		}
		if open > 0 {
			t.parts = append(t.parts, part{lit: rest[:open], off: off})
		}
		end := strings.Index(rest[open+2:], "}}")
		if end < 0 {
			return nil, errAt(off+open, "unclosed {{")
		}
		inner := rest[open+2 : open+2+end]
		name := strings.TrimSpace(inner)
		nameOff := off + open + 2 + strings.Index(inner, name)
		if name == "" {
			return nil, errAt(off+open, "empty placeholder {{ }}: want a field path such as {{ verdict }}")
		}
		if strings.Contains(name, "{{") {
			return nil, errAt(off+open, "unclosed {{")
		}
		p, err := fieldpath.Parse(name)
		if err != nil {
			return nil, errAt(nameOff, "%v", err)
		}
		t.parts = append(t.parts, part{path: p, hole: true, off: off + open})
		consumed := open + 2 + end + 2
		rest, off = rest[consumed:], off+consumed
	}
	if err := t.checkLiterals(); err != nil {
		return nil, err
	}
	return t, nil
}

// checkLiterals checks the literal text against the target by rendering
// every placeholder as a valid token.
func (t *Template) checkLiterals() error {
	var shape []byte // the template with each placeholder as 'x'
	for _, p := range t.parts {
		if p.hole {
			shape = append(shape, 'x')
			continue
		}
		for i := 0; i < len(p.lit); i++ {
			c := p.lit[i]
			switch t.target {
			case Kafka:
				if !kafkaOK(c) {
					r, _ := utf8.DecodeRuneInString(p.lit[i:])
					return &Error{Template: t.src, Offset: p.off + i, Msg: fmt.Sprintf("character %q is not allowed in a Kafka topic (allowed: a-z A-Z 0-9 . _ -)", r)}
				}
			case NATS:
				if c == '*' || c == '>' || c <= ' ' || c == 0x7f {
					return &Error{Template: t.src, Offset: p.off + i, Msg: fmt.Sprintf("character %q is not allowed in a NATS subject", c)}
				}
			}
		}
		shape = append(shape, p.lit...)
	}
	if t.target == Kafka {
		lit := t.IsLiteral()
		switch {
		case lit && (string(shape) == "." || string(shape) == ".."):
			return &Error{Template: t.src, Offset: 0, Msg: fmt.Sprintf("%q is not a valid Kafka topic name", shape)}
		case lit && len(shape) > MaxKafkaTopic:
			return &Error{Template: t.src, Offset: MaxKafkaTopic, Msg: fmt.Sprintf("a Kafka topic is at most %d characters, this one has %d", MaxKafkaTopic, len(shape))}
		case len(shape) > MaxKafkaTopic:
			return &Error{Template: t.src, Offset: 0, Msg: fmt.Sprintf("a Kafka topic is at most %d characters; the literal text of this template alone has %d", MaxKafkaTopic, len(shape)-t.holes())}
		}
	}
	if t.target == NATS {
		for i, tok := range strings.Split(string(shape), ".") {
			if tok == "" {
				return &Error{Template: t.src, Offset: 0, Msg: fmt.Sprintf("NATS subject token %d is empty (leading, trailing or doubled '.')", i+1)}
			}
		}
	}
	return nil
}

func kafkaOK(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-'
}

// String returns the template text.
func (t *Template) String() string { return t.src }

// IsLiteral reports whether t has no placeholders.
func (t *Template) IsLiteral() bool {
	for _, p := range t.parts {
		if p.hole {
			return false
		}
	}
	return true
}

// Wildcard returns the NATS subject filter that matches every subject t can
// render: each token holding a placeholder becomes `*`. For other targets it
// returns the template text.
func (t *Template) Wildcard() string {
	var shape []byte
	for _, p := range t.parts {
		if p.hole {
			shape = append(shape, 0)
			continue
		}
		shape = append(shape, p.lit...)
	}
	toks := strings.Split(string(shape), ".")
	for i, tok := range toks {
		if strings.IndexByte(tok, 0) >= 0 {
			toks[i] = "*"
		}
	}
	return strings.Join(toks, ".")
}

// Append renders t for e, appending to dst.
func (t *Template) Append(dst []byte, e *pipeline.Event) []byte {
	start := len(dst)
	for i := range t.parts {
		p := &t.parts[i]
		if !p.hole {
			dst = append(dst, p.lit...)
			continue
		}
		if e.Flow == nil {
			dst = append(dst, Lost...)
			continue
		}
		vs := len(dst)
		var ok bool
		dst, ok = p.path.AppendText(dst, e.Flow)
		if !ok || len(dst) == vs {
			dst = append(dst[:vs], Unknown...)
			continue
		}
		t.sanitize(dst[vs:])
	}
	if t.target == Kafka {
		if len(dst)-start > MaxKafkaTopic {
			dst = dst[:start+MaxKafkaTopic]
		}
		if v := dst[start:]; string(v) == "." || string(v) == ".." {
			for i := range v {
				v[i] = '_'
			}
		}
	}
	return dst
}

// holes counts the placeholders of t.
func (t *Template) holes() int {
	n := 0
	for _, p := range t.parts {
		if p.hole {
			n++
		}
	}
	return n
}

func (t *Template) sanitize(v []byte) {
	switch t.target {
	case Kafka:
		for i, c := range v {
			if !kafkaOK(c) {
				v[i] = '_'
			}
		}
	case NATS:
		for i, c := range v {
			if c <= ' ' || c == 0x7f || c == '.' || c == '*' || c == '>' {
				v[i] = '_'
			}
		}
	}
}

// ParseNode parses the scalar n as a template for target and returns errors
// positioned at the offending character of the YAML file.
func ParseNode(n *yaml.Node, target Target) (*Template, error) {
	if n.Kind != yaml.ScalarNode || n.Tag == "!!null" {
		return nil, config.Errorf(n, "expected a %s template string", target)
	}
	t, err := Parse(n.Value, target)
	if err != nil {
		ce := config.Errorf(n, "%v", err)
		if te, ok := err.(*Error); ok {
			ce.Msg = te.Msg + " in template " + fmt.Sprintf("%q", te.Template)
			if !strings.Contains(n.Value, "\n") {
				switch n.Style {
				case 0:
					ce.Col += te.Offset
				case yaml.DoubleQuotedStyle, yaml.SingleQuotedStyle:
					if !strings.ContainsAny(n.Value, "\\'\"") {
						ce.Col += te.Offset + 1
					}
				}
			}
		}
		return nil, ce
	}
	return t, nil
}
