package flowjson

import (
	"errors"
	"fmt"
	"math/bits"
	"unicode/utf8"
	"unsafe"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/timestamppb"

	flowpb "github.com/flowbus/flowbus/flow"
	"github.com/flowbus/flowbus/flow/observer"
)

// errFallback stops the fast path: protojson decodes the line instead (and
// reports the error if the line is invalid).
var errFallback = errors.New("flowjson: not on the fast path")

// Unmarshal decodes one export line, an observer.ExportEvent (or
// GetFlowsResponse) in JSON, into ev. The result is what protojson.Unmarshal
// gives (ev is reset first), but ev's nested messages (the flow, its
// endpoints, timestamps, lists) are reused as storage, so decoding into the
// same ExportEvent again allocates little. Strings of the result share one
// allocation; line itself is not retained.
func Unmarshal(line []byte, ev *observer.ExportEvent) error {
	a := arena{block: make([]byte, 0, len(line))} // room for every string
	return unmarshal(line, ev, &a)
}

// Decoder decodes export lines like Unmarshal, but keeps the strings of
// consecutive lines together in append-only blocks of blockSize bytes
// instead of one allocation per line. Only the strings' own bytes are
// kept, not the keys, punctuation, numbers, enum names and times around
// them (about half of a Hubble line), so a file of lines allocates about
// half the bytes and gives the garbage collector half the work. The cost:
// a string still referenced keeps its whole block in memory. A Decoder is
// used by one goroutine at a time; its zero value is ready to use.
type Decoder struct {
	a arena
}

// Unmarshal decodes line into ev like the package's Unmarshal.
func (dec *Decoder) Unmarshal(line []byte, ev *observer.ExportEvent) error {
	return unmarshal(line, ev, &dec.a)
}

func unmarshal(line []byte, ev *observer.ExportEvent, a *arena) error {
	d := newDecoder(line, *a)
	ok := d.decodeExport(ev) == nil && d.end()
	*a = d.a
	if ok {
		return nil
	}
	if err := protojson.Unmarshal(line, ev); err != nil {
		return fmt.Errorf("flowjson: %w", err)
	}
	return nil
}

// UnmarshalFlow decodes a flow.Flow JSON object into f, like
// protojson.Unmarshal but reusing f's nested messages as storage.
func UnmarshalFlow(data []byte, f *flowpb.Flow) error {
	d := newDecoder(data, arena{block: make([]byte, 0, len(data))})
	if d.decodeFlow(f) == nil && d.end() {
		return nil
	}
	if err := protojson.Unmarshal(data, f); err != nil {
		return fmt.Errorf("flowjson: %w", err)
	}
	return nil
}

// blockSize is the size of a Decoder's blocks of strings: the strings of
// about four enriched Hubble lines.
const blockSize = 4096

// arena is append-only storage for decoded strings. A string is copied
// into the free tail of the current block, which is never written again
// there, so the strings stay immutable; a full block is left to the
// strings that refer to it and to the garbage collector.
type arena struct {
	block []byte // the current block; its length is what is used
	tmp   []byte // scratch for unescaping
}

// keep returns a string with the bytes of b, stored in the arena.
func (a *arena) keep(b []byte) string {
	if len(b) == 0 {
		return ""
	}
	if cap(a.block)-len(a.block) < len(b) {
		if len(b) > blockSize/4 { // a long string gets its own allocation
			c := append([]byte(nil), b...)
			return unsafe.String(unsafe.SliceData(c), len(c))
		}
		a.block = make([]byte, 0, blockSize)
	}
	n := len(a.block)
	a.block = append(a.block, b...)
	return unsafe.String(&a.block[n], len(b))
}

// decodeExport decodes the envelope. Events other than flows and lost
// events take the fallback.
func (d *decoder) decodeExport(ev *observer.ExportEvent) error {
	oldResp, oldTime := ev.ResponseTypes, ev.Time
	*ev = observer.ExportEvent{}
	var seen, seenOneof uint8
	if err := d.objectStart(); err != nil {
		return err
	}
	for n := 0; ; n++ {
		key, more, err := d.field(n)
		if err != nil {
			return err
		}
		if !more {
			return nil
		}
		var bit uint8
		switch string(key) {
		case "flow":
			bit = 1
		case "lost_events", "lostEvents":
			bit = 2
		case "node_name", "nodeName":
			bit = 4
		case "time":
			bit = 8
		default: // node_status, agent_event, debug_event, unknown fields
			return errFallback
		}
		if seen&bit != 0 {
			return errFallback
		}
		seen |= bit
		if d.null() {
			continue
		}
		switch bit {
		case 1:
			if seenOneof != 0 {
				return errFallback
			}
			seenOneof = 1
			w, ok := oldResp.(*observer.ExportEvent_Flow)
			if !ok || w == nil {
				w = &observer.ExportEvent_Flow{}
			}
			if w.Flow == nil {
				w.Flow = new(flowpb.Flow)
			}
			if err := d.decodeFlow(w.Flow); err != nil {
				return err
			}
			ev.ResponseTypes = w
		case 2:
			if seenOneof != 0 {
				return errFallback
			}
			seenOneof = 1
			w, ok := oldResp.(*observer.ExportEvent_LostEvents)
			if !ok || w == nil {
				w = &observer.ExportEvent_LostEvents{}
			}
			if w.LostEvents == nil {
				w.LostEvents = new(flowpb.LostEvent)
			}
			if err := d.decodeLostEvent(w.LostEvents); err != nil {
				return err
			}
			ev.ResponseTypes = w
		case 4:
			s, err := d.str()
			if err != nil {
				return err
			}
			ev.NodeName = s
		case 8:
			t := oldTime
			if t == nil {
				t = new(timestamppb.Timestamp)
			}
			if err := d.timestamp(t); err != nil {
				return err
			}
			ev.Time = t
		}
	}
}

// decoder is a JSON reader over one line. Every method returns errFallback
// (or false) on anything outside the fast path. Decoded strings are copied
// into a (unescaped there when they have escapes); s views buf as a string
// for word loads and is never retained.
type decoder struct {
	buf []byte
	s   string
	pos int
	a   arena // copied back by Decoder.Unmarshal

	// lastTime is the text (in buf) of the last timestamp decoded, and
	// lastSeconds and lastNanos its value.
	lastTime    []byte
	lastSeconds int64
	lastNanos   int32
}

func newDecoder(line []byte, a arena) decoder {
	return decoder{buf: line, s: unsafe.String(unsafe.SliceData(line), len(line)), a: a}
}

func (d *decoder) ws() {
	if d.pos < len(d.buf) && d.buf[d.pos] > ' ' { // compact input
		return
	}
	for d.pos < len(d.buf) {
		switch d.buf[d.pos] {
		case ' ', '\t', '\n', '\r':
			d.pos++
		default:
			return
		}
	}
}

// end reports whether only whitespace is left.
func (d *decoder) end() bool {
	d.ws()
	return d.pos == len(d.buf)
}

func (d *decoder) expect(c byte) error {
	d.ws()
	if d.pos < len(d.buf) && d.buf[d.pos] == c {
		d.pos++
		return nil
	}
	return errFallback
}

func (d *decoder) objectStart() error { return d.expect('{') }
func (d *decoder) arrayStart() error  { return d.expect('[') }

// field reads the n-th key of an object and its colon; more is false at
// the closing brace.
func (d *decoder) field(n int) (key []byte, more bool, err error) {
	d.ws()
	if d.pos >= len(d.buf) {
		return nil, false, errFallback
	}
	if d.buf[d.pos] == '}' {
		d.pos++
		return nil, false, nil
	}
	if n > 0 {
		if d.buf[d.pos] != ',' {
			return nil, false, errFallback
		}
		d.pos++
		d.ws()
	}
	key, err = d.rawString()
	if err != nil {
		return nil, false, err
	}
	if err := d.expect(':'); err != nil {
		return nil, false, err
	}
	return key, true, nil
}

// member reads the n-th key of an object and its colon; more is false at
// the closing brace. keys are the object's fields' keys as Hubble's
// exporter writes them (quoted proto names with their colon) in field
// order. The key is first looked for among keys[from:], where the
// canonical form, fields in order, finds it with a comparison or two and
// without scanning it; idx is then its field's index. Any other key
// (another order, a JSON name, an unknown field, whitespace before the
// colon) is returned as raw bytes with idx -1, for the caller's full
// lookup.
func (d *decoder) member(n int, keys []string, from int) (idx int, key []byte, more bool, err error) {
	d.ws()
	if d.pos >= len(d.buf) {
		return 0, nil, false, errFallback
	}
	if d.buf[d.pos] == '}' {
		d.pos++
		return 0, nil, false, nil
	}
	if n > 0 {
		if d.buf[d.pos] != ',' {
			return 0, nil, false, errFallback
		}
		d.pos++
		d.ws()
	}
	if rest := d.buf[d.pos:]; len(rest) > 1 {
		c := rest[1]
		for i := from; i < len(keys); i++ {
			k := keys[i]
			if k[1] == c && len(rest) >= len(k) && string(rest[:len(k)]) == k {
				d.pos += len(k)
				return i, nil, true, nil
			}
		}
	}
	if key, err = d.rawString(); err != nil {
		return 0, nil, false, err
	}
	if err := d.expect(':'); err != nil {
		return 0, nil, false, err
	}
	return -1, key, true, nil
}

// elem starts the i-th element of an array; more is false at the closing
// bracket.
func (d *decoder) elem(i int) (more bool, err error) {
	d.ws()
	if d.pos >= len(d.buf) {
		return false, errFallback
	}
	if d.buf[d.pos] == ']' {
		d.pos++
		return false, nil
	}
	if i > 0 {
		if d.buf[d.pos] != ',' {
			return false, errFallback
		}
		d.pos++
	}
	return true, nil
}

// null consumes a JSON null.
func (d *decoder) null() bool {
	d.ws()
	if len(d.buf)-d.pos >= 4 && string(d.buf[d.pos:d.pos+4]) == "null" {
		d.pos += 4
		return true
	}
	return false
}

// rawString reads a string without escapes or non-ASCII bytes (keys and
// enum names) and returns its bytes.
func (d *decoder) rawString() ([]byte, error) {
	d.ws()
	if d.pos >= len(d.buf) || d.buf[d.pos] != '"' {
		return nil, errFallback
	}
	start := d.pos + 1
	for i := start; i < len(d.buf); i++ {
		c := d.buf[i]
		if c == '"' {
			d.pos = i + 1
			return d.buf[start:i], nil
		}
		if c == '\\' || c < 0x20 || c >= utf8.RuneSelf {
			return nil, errFallback
		}
	}
	return nil, errFallback
}

// special8 flags (in the high bit of its byte) the bytes of x that end,
// escape or need checking in a JSON string: a quote, a backslash, a control
// or a non-ASCII byte. Its lowest set bit is always such a byte's (a false
// flag can only follow a true one), so bits.TrailingZeros64/8 is the index
// of the first.
func special8(x uint64) uint64 {
	return ((x-ones*0x20)|x)&highs | hasByte(x, '"') | hasByte(x, '\\')
}

// str reads a JSON string.
func (d *decoder) str() (string, error) {
	d.ws()
	if d.pos >= len(d.buf) || d.buf[d.pos] != '"' {
		return "", errFallback
	}
	start := d.pos + 1
	ascii := true
	for i := start; i < len(d.buf); i++ {
		if i+8 <= len(d.buf) {
			m := special8(load8(d.s, i))
			if m == 0 {
				i += 7 // and the loop's increment
				continue
			}
			i += bits.TrailingZeros64(m) >> 3
		}
		c := d.buf[i]
		switch {
		case c == '"':
			if !ascii && !utf8.ValidString(d.s[start:i]) {
				return "", errFallback
			}
			d.pos = i + 1
			return d.a.keep(d.buf[start:i]), nil
		case c == '\\':
			return d.escaped(start, i)
		case c < 0x20:
			return "", errFallback
		case c >= utf8.RuneSelf:
			ascii = false
		}
	}
	return "", errFallback
}

// escaped finishes a string with escapes; buf[start:i] is its plain prefix
// and buf[i] the first backslash. The text is unescaped straight into the
// free tail of the arena's block when the rest of the line fits there (the
// unescaped text is never longer than its raw text; Unmarshal's block
// always has that room), else into the arena's scratch, and then kept.
// Bytes written to the free tail and not kept are never referred to.
func (d *decoder) escaped(start, i int) (string, error) {
	a := &d.a
	inBlock := cap(a.block)-len(a.block) >= len(d.buf)-start
	var out []byte
	if inBlock {
		out = a.block[len(a.block):len(a.block)]
	} else {
		out = a.tmp[:0]
		defer func() { a.tmp = out[:0] }()
	}
	out = append(out, d.buf[start:i]...)
	for i < len(d.buf) {
		c := d.buf[i]
		switch {
		case c == '"':
			if !utf8.Valid(out) {
				return "", errFallback
			}
			d.pos = i + 1
			if !inBlock {
				return a.keep(out), nil
			}
			if len(out) == 0 {
				return "", nil
			}
			n := len(a.block)
			a.block = a.block[:n+len(out)]
			return unsafe.String(&a.block[n], len(out)), nil
		case c < 0x20:
			return "", errFallback
		case c != '\\':
			out = append(out, c)
			i++
			continue
		}
		if i+1 >= len(d.buf) {
			return "", errFallback
		}
		switch e := d.buf[i+1]; e {
		case '"', '\\', '/':
			out = append(out, e)
		case 'b':
			out = append(out, '\b')
		case 'f':
			out = append(out, '\f')
		case 'n':
			out = append(out, '\n')
		case 'r':
			out = append(out, '\r')
		case 't':
			out = append(out, '\t')
		case 'u':
			if i+6 > len(d.buf) {
				return "", errFallback
			}
			var r rune
			for _, h := range d.buf[i+2 : i+6] {
				switch {
				case h >= '0' && h <= '9':
					r = r<<4 | rune(h-'0')
				case h >= 'a' && h <= 'f':
					r = r<<4 | rune(h-'a'+10)
				case h >= 'A' && h <= 'F':
					r = r<<4 | rune(h-'A'+10)
				default:
					return "", errFallback
				}
			}
			if r >= 0xd800 && r <= 0xdfff { // surrogates: left to protojson
				return "", errFallback
			}
			out = utf8.AppendRune(out, r)
			i += 6
			continue
		default:
			return "", errFallback
		}
		i += 2
	}
	return "", errFallback
}

// digits reads an unsigned decimal integer (no leading zeros, no fraction
// or exponent) up to max.
func (d *decoder) digits(max uint64) (uint64, error) {
	start := d.pos
	var v uint64
	for d.pos < len(d.buf) {
		c := d.buf[d.pos]
		if c < '0' || c > '9' {
			break
		}
		if v > (max-uint64(c-'0'))/10 {
			return 0, errFallback
		}
		v = v*10 + uint64(c-'0')
		d.pos++
	}
	n := d.pos - start
	if n == 0 || (n > 1 && d.buf[start] == '0') {
		return 0, errFallback
	}
	if d.pos < len(d.buf) {
		switch d.buf[d.pos] {
		case '.', 'e', 'E':
			return 0, errFallback
		}
	}
	return v, nil
}

// number reads an integer, quoted if quotable, with an optional minus when
// signed; the magnitude is at most max (negMax when negative).
func (d *decoder) number(quotable, signed bool, max, negMax uint64) (v uint64, neg bool, err error) {
	d.ws()
	quoted := false
	if quotable && d.pos < len(d.buf) && d.buf[d.pos] == '"' {
		quoted = true
		d.pos++
	}
	if signed && d.pos < len(d.buf) && d.buf[d.pos] == '-' {
		neg = true
		d.pos++
		max = negMax
	}
	if v, err = d.digits(max); err != nil {
		return 0, false, err
	}
	if neg && v == 0 {
		return 0, false, errFallback
	}
	if quoted {
		if d.pos >= len(d.buf) || d.buf[d.pos] != '"' {
			return 0, false, errFallback
		}
		d.pos++
	}
	return v, neg, nil
}

func (d *decoder) uint32() (uint32, error) {
	v, _, err := d.number(true, false, 1<<32-1, 0)
	return uint32(v), err
}

func (d *decoder) uint64() (uint64, error) {
	v, _, err := d.number(true, false, 1<<64-1, 0)
	return v, err
}

func (d *decoder) int32() (int32, error) {
	v, neg, err := d.number(true, true, 1<<31-1, 1<<31)
	if neg {
		return int32(-int64(v)), err
	}
	return int32(v), err
}

func (d *decoder) int64() (int64, error) {
	v, neg, err := d.number(true, true, 1<<63-1, 1<<63)
	if neg {
		return -int64(v), err
	}
	return int64(v), err
}

func (d *decoder) boolean() (bool, error) {
	d.ws()
	rest := d.buf[d.pos:]
	switch {
	case len(rest) >= 4 && string(rest[:4]) == "true":
		d.pos += 4
		return true, nil
	case len(rest) >= 5 && string(rest[:5]) == "false":
		d.pos += 5
		return false, nil
	}
	return false, errFallback
}

// enum reads an enum value: a known name, or a bare int32.
func (d *decoder) enum(parse func([]byte) (int32, bool)) (int32, error) {
	d.ws()
	if d.pos < len(d.buf) && d.buf[d.pos] == '"' {
		name, err := d.rawString()
		if err != nil {
			return 0, err
		}
		v, ok := parse(name)
		if !ok {
			return 0, errFallback
		}
		return v, nil
	}
	v, neg, err := d.number(false, true, 1<<31-1, 1<<31)
	if neg {
		return int32(-int64(v)), err
	}
	return int32(v), err
}

// timestamp reads the canonical RFC 3339 form protojson writes
// (YYYY-MM-DDTHH:MM:SS[.fraction]Z); other forms protojson accepts (time
// zone offsets, lowercase letters) take the fallback.
func (d *decoder) timestamp(t *timestamppb.Timestamp) error {
	s, err := d.rawString()
	if err != nil {
		return err
	}
	if len(d.lastTime) > 0 && string(s) == string(d.lastTime) {
		// The envelope's time is usually the flow's, written again.
		*t = timestamppb.Timestamp{Seconds: d.lastSeconds, Nanos: d.lastNanos}
		return nil
	}
	if len(s) < 20 || s[4] != '-' || s[7] != '-' || s[10] != 'T' || s[13] != ':' || s[16] != ':' || s[len(s)-1] != 'Z' {
		return errFallback
	}
	num := func(b []byte) int64 {
		var v int64
		for _, c := range b {
			if c < '0' || c > '9' {
				return -1
			}
			v = v*10 + int64(c-'0')
		}
		return v
	}
	year, month, day := num(s[0:4]), num(s[5:7]), num(s[8:10])
	hour, minute, sec := num(s[11:13]), num(s[14:16]), num(s[17:19])
	if year < 1 || month < 1 || month > 12 || day < 1 || day > daysIn(year, month) ||
		hour < 0 || hour > 23 || minute < 0 || minute > 59 || sec < 0 || sec > 59 {
		return errFallback
	}
	var nanos int64
	if frac := s[19 : len(s)-1]; len(frac) > 0 {
		if frac[0] != '.' || len(frac) < 2 || len(frac) > 10 {
			return errFallback
		}
		if nanos = num(frac[1:]); nanos < 0 {
			return errFallback
		}
		for i := len(frac); i < 10; i++ {
			nanos *= 10
		}
	}
	// Not Reset, whose atomic store of the type information is a full
	// memory barrier (see the generated decoders).
	*t = timestamppb.Timestamp{Seconds: daysFrom(year, month, day)*86400 + hour*3600 + minute*60 + sec, Nanos: int32(nanos)}
	d.lastTime, d.lastSeconds, d.lastNanos = s, t.Seconds, t.Nanos
	return nil
}

func daysIn(year, month int64) int64 {
	switch month {
	case 2:
		if year%4 == 0 && (year%100 != 0 || year%400 == 0) {
			return 29
		}
		return 28
	case 4, 6, 9, 11:
		return 30
	}
	return 31
}
