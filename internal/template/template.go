// Package template renders Kafka topics, NATS subjects, message keys and
// file paths from events: literal text with `{{ field.path }}` placeholders, such as
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
// placeholder always stays inside one subject token. In a path a rendered
// value never contains `/`, `\` or control characters. LostEvents carry no
// flow: every field placeholder renders `lost` for them (a sink may
// configure a separate template for LostEvents instead), while the time
// placeholders (`{{ time.date }}`, `{{ time.hour }}`, ...) render the
// event's time for flows and LostEvents alike.
//
// Rendering appends to a caller's buffer and does not allocate.
package template

import (
	"fmt"
	"strconv"
	"strings"
	"time"
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
	// Path renders file paths: a rendered value never contains `/`, `\`
	// or control characters, so a placeholder stays inside one path
	// element. Literal `.` and `..` elements are a configuration error; a
	// value that renders a whole element as `.` or `..` is left for the
	// caller to refuse (see CleanPath).
	Path
)

func (t Target) String() string {
	switch t {
	case Kafka:
		return "Kafka topic"
	case NATS:
		return "NATS subject"
	case Path:
		return "path"
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
	tm   timePart // a time placeholder (time.date, ...), when not 0
	hole bool
	off  int // byte offset in the template text
}

// timePart is one of the time placeholders: `time.date` (2006-01-02),
// `time.hour` (15), `time.year`, `time.month`, `time.day` and
// `time.minute`, all in UTC and zero-padded. They render the event's time
// (the envelope time, which for a flow is the flow's time), LostEvents
// included; an event without a time renders `unknown`.
type timePart int

const (
	timeNone timePart = iota
	timeDate
	timeHour
	timeYear
	timeMonth
	timeDay
	timeMinute
)

var timeParts = map[string]timePart{
	"time.date":   timeDate,
	"time.hour":   timeHour,
	"time.year":   timeYear,
	"time.month":  timeMonth,
	"time.day":    timeDay,
	"time.minute": timeMinute,
}

// Template is a parsed template. It is immutable and safe for concurrent use.
type Template struct {
	src      string
	target   Target
	parts    []part
	timeOnly bool // every placeholder is a time (see TimeKey)
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
		if tp, ok := timeParts[name]; ok {
			t.parts = append(t.parts, part{tm: tp, hole: true, off: off + open})
		} else {
			p, err := fieldpath.Parse(name)
			if err != nil {
				return nil, errAt(nameOff, "%v", err)
			}
			t.parts = append(t.parts, part{path: p, hole: true, off: off + open})
		}
		consumed := open + 2 + end + 2
		rest, off = rest[consumed:], off+consumed
	}
	if err := t.checkLiterals(); err != nil {
		return nil, err
	}
	t.timeOnly = t.holes() > 0
	for _, p := range t.parts {
		if p.hole && p.tm == timeNone {
			t.timeOnly = false
		}
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
			case Path:
				if c < ' ' || c == 0x7f {
					return &Error{Template: t.src, Offset: p.off + i, Msg: fmt.Sprintf("control character %q is not allowed in a path", c)}
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
	if t.target == Path {
		for _, el := range strings.Split(string(shape), "/") {
			if el == "." || el == ".." {
				return &Error{Template: t.src, Offset: 0, Msg: fmt.Sprintf("path element %q is not allowed: write the path without . and .. elements", el)}
			}
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
		if p.tm != timeNone {
			dst = appendTime(dst, p.tm, e)
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

// TimeKey returns a key of e's time when every placeholder of t is a
// time: events with the same key render alike (the key is the time in
// whole minutes, the finest a placeholder names), so a caller may keep a
// rendering for as long as the key stays the same. ok is false when t has
// another placeholder, or none, or e's time is missing or not normalized:
// render e then.
func (t *Template) TimeKey(e *pipeline.Event) (key int64, ok bool) {
	if !t.timeOnly {
		return 0, false
	}
	ts := e.Timestamp()
	if ts == nil || ts.GetNanos() < 0 || ts.GetNanos() >= 1e9 {
		return 0, false
	}
	sec := ts.GetSeconds()
	key = sec / 60
	if sec%60 < 0 {
		key-- // floor, for times before 1970
	}
	return key, true
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
	case Path:
		for i, c := range v {
			if c < ' ' || c == 0x7f || c == '/' || c == '\\' {
				v[i] = '_'
			}
		}
	}
}

// appendTime renders a time placeholder for e.
func appendTime(dst []byte, tp timePart, e *pipeline.Event) []byte {
	ts := e.Timestamp()
	if ts == nil {
		return append(dst, Unknown...)
	}
	tm := time.Unix(ts.GetSeconds(), int64(ts.GetNanos())).UTC()
	switch tp {
	case timeDate:
		y, m, d := tm.Date()
		dst = appendInt(dst, y, 4)
		dst = append(dst, '-')
		dst = appendInt(dst, int(m), 2)
		dst = append(dst, '-')
		return appendInt(dst, d, 2)
	case timeHour:
		return appendInt(dst, tm.Hour(), 2)
	case timeYear:
		return appendInt(dst, tm.Year(), 4)
	case timeMonth:
		return appendInt(dst, int(tm.Month()), 2)
	case timeDay:
		return appendInt(dst, tm.Day(), 2)
	case timeMinute:
		return appendInt(dst, tm.Minute(), 2)
	}
	return dst
}

// appendInt appends v zero-padded to width digits.
func appendInt(dst []byte, v, width int) []byte {
	if v < 0 {
		dst = append(dst, '-')
		v = -v
	}
	start := len(dst)
	dst = strconv.AppendInt(dst, int64(v), 10)
	for n := len(dst) - start; n < width; n++ {
		dst = append(dst, 0)
		copy(dst[start+1:], dst[start:])
		dst[start] = '0'
	}
	return dst
}

// CleanPath checks a rendered path: it reports an error when an element
// is `.` or `..` (a value that rendered a whole element as one, which
// would leave the directory the template names) or empty.
func CleanPath(p string) error {
	for i, el := range strings.Split(p, "/") {
		switch {
		case el == "." || el == "..":
			return fmt.Errorf("rendered path %q has a %q element: refusing a path that leaves the template's directory", p, el)
		case el == "" && i > 0:
			return fmt.Errorf("rendered path %q has an empty element", p)
		}
	}
	return nil
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
