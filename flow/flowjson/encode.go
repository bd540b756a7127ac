package flowjson

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"unicode/utf8"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/timestamppb"

	flowpb "github.com/flowbus/flowbus/flow"
)

// FieldError is an encoding error in one field; Path is the dotted proto
// path of the field from the encoded message.
type FieldError struct {
	Path string
	Err  error
}

func (e *FieldError) Error() string { return "flowjson: field " + e.Path + ": " + e.Err.Error() }
func (e *FieldError) Unwrap() error { return e.Err }

// fieldError prefixes err's path with name (only on the error path).
func fieldError(name string, err error) error {
	var fe *FieldError
	if errors.As(err, &fe) {
		return &FieldError{Path: name + "." + fe.Path, Err: fe.Err}
	}
	return &FieldError{Path: name, Err: err}
}

// Errors the encoder reports where protojson does too.
var (
	ErrInvalidUTF8    = errors.New("string is not valid UTF-8")
	ErrTimestampRange = errors.New("google.protobuf.Timestamp: seconds out of range")
	ErrTimestampNanos = errors.New("google.protobuf.Timestamp: nanos out of range")
)

// AppendFlow appends the JSON object of f (no newline). On error dst is
// returned with its original length.
func AppendFlow(dst []byte, f *flowpb.Flow) ([]byte, error) {
	n := len(dst)
	out, err := appendFlowCached(dst, f)
	if err != nil {
		return dst[:n], err
	}
	return out, nil
}

// AppendLostEvent appends the JSON object of l (no newline). On error dst is
// returned with its original length.
func AppendLostEvent(dst []byte, l *flowpb.LostEvent) ([]byte, error) {
	n := len(dst)
	out, err := appendLostEvent(dst, l)
	if err != nil {
		return dst[:n], err
	}
	return out, nil
}

// AppendExport appends the export line object of one event, the JSON of
// observer.GetFlowsResponse{flow or lost_events, node_name, time}, without
// the trailing newline. The flow wins when both f and lost are set; with
// neither, only the envelope fields are written. On error dst is returned
// with its original length.
func AppendExport(dst []byte, f *flowpb.Flow, lost *flowpb.LostEvent, nodeName string, t *timestamppb.Timestamp) ([]byte, error) {
	n := len(dst)
	var err error
	dst = append(dst, '{')
	var same []byte // the flow's time as written, when t is the same time
	switch {
	case f != nil:
		dst = append(dst, `"flow":`...)
		at := len(dst)
		if dst, err = appendFlowCached(dst, f); err != nil {
			return dst[:n], fieldError("flow", err)
		}
		// The envelope's time is nearly always the flow's, which is the
		// flow's first field: it is copied, not formatted again.
		if t != nil && f.Time != nil && t.Seconds == f.Time.Seconds && t.Nanos == f.Time.Nanos {
			const key = `{"time":"`
			if v := dst[at:]; bytes.HasPrefix(v, []byte(key)) {
				if end := bytes.IndexByte(v[len(key):], '"'); end >= 0 {
					same = v[len(key)-1 : len(key)+end+1]
				}
			}
		}
		dst = append(dst, ',')
	case lost != nil:
		dst = append(dst, `"lost_events":`...)
		if dst, err = appendLostEvent(dst, lost); err != nil {
			return dst[:n], fieldError("lost_events", err)
		}
		dst = append(dst, ',')
	}
	if nodeName != "" {
		dst = append(dst, `"node_name":`...)
		if dst, err = appendString(dst, nodeName); err != nil {
			return dst[:n], fieldError("node_name", err)
		}
		dst = append(dst, ',')
	}
	switch {
	case same != nil:
		dst = append(dst, `"time":`...)
		dst = append(dst, same...)
		dst = append(dst, ',')
	case t != nil:
		dst = append(dst, `"time":`...)
		if dst, err = appendTimestamp(dst, t.Seconds, t.Nanos); err != nil {
			return dst[:n], fieldError("time", err)
		}
		dst = append(dst, ',')
	}
	return closeObject(dst), nil
}

// appendFlowCached appends f's JSON through a cache from the pool.
func appendFlowCached(dst []byte, f *flowpb.Flow) ([]byte, error) {
	c := encodeCaches.Get().(*encodeCache)
	c.loaded += prefetch(f)
	dst, err := appendFlow(dst, f, c)
	encodeCaches.Put(c)
	return dst, err
}

// appendStrings appends the JSON array of l.
func appendStrings(dst []byte, l []string) ([]byte, error) {
	dst = append(dst, '[')
	for i, v := range l {
		if i > 0 {
			dst = append(dst, ',')
		}
		var err error
		if dst, err = appendString(dst, v); err != nil {
			return dst, err
		}
	}
	return append(dst, ']'), nil
}

// closeObject ends an object whose fields each end with a comma.
func closeObject(dst []byte) []byte {
	if dst[len(dst)-1] == ',' {
		dst[len(dst)-1] = '}'
		return dst
	}
	return append(dst, '}')
}

const hexDigits = "0123456789abcdef"

// plain[c] is true for the ASCII bytes written as they are.
var plain = func() (t [utf8.RuneSelf]bool) {
	for c := 0x20; c < utf8.RuneSelf; c++ {
		t[c] = true
	}
	for _, c := range `"\<>&` {
		t[c] = false
	}
	return t
}()

// Byte-parallel tests on 8 bytes in a uint64.
const (
	ones  = 0x0101010101010101
	highs = 0x8080808080808080
)

// load8 reads s[i:i+8] little-endian (the compiler makes it one load).
func load8(s string, i int) uint64 {
	s = s[i : i+8]
	return uint64(s[0]) | uint64(s[1])<<8 | uint64(s[2])<<16 | uint64(s[3])<<24 |
		uint64(s[4])<<32 | uint64(s[5])<<40 | uint64(s[6])<<48 | uint64(s[7])<<56
}

// hasByte reports (as non-zero) whether a byte of x equals b.
func hasByte(x uint64, b byte) uint64 {
	v := x ^ (ones * uint64(b))
	return (v - ones) &^ v & highs
}

// plain8 reports whether the 8 bytes of x are all written as they are:
// ASCII, no control character, none of " \ < > &.
func plain8(x uint64) bool {
	ctl := (x - ones*0x20) &^ x & highs // a byte below 0x20
	return (x&highs)|ctl|hasByte(x, '"')|hasByte(x, '\\')|hasByte(x, '<')|hasByte(x, '>')|hasByte(x, '&') == 0
}

// appendString appends s as a JSON string the way protojson writes it
// (\b \f \n \r \t \" \\ short escapes, other controls as \u00xx) after
// encoding/json's HTML escaping (<, >, &, U+2028, U+2029 as \u escapes).
// Invalid UTF-8 is an error, as in protojson.
func appendString(dst []byte, s string) ([]byte, error) {
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); {
		for i+8 <= len(s) && plain8(load8(s, i)) {
			i += 8
		}
		if i >= len(s) {
			break
		}
		c := s[i]
		if c < utf8.RuneSelf {
			if plain[c] {
				i++
				continue
			}
			dst = append(dst, s[start:i]...)
			switch c {
			case '"', '\\':
				dst = append(dst, '\\', c)
			case '\b':
				dst = append(dst, '\\', 'b')
			case '\f':
				dst = append(dst, '\\', 'f')
			case '\n':
				dst = append(dst, '\\', 'n')
			case '\r':
				dst = append(dst, '\\', 'r')
			case '\t':
				dst = append(dst, '\\', 't')
			default: // other controls, <, >, &
				dst = append(dst, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			return dst, ErrInvalidUTF8
		}
		if r == '\u2028' || r == '\u2029' {
			dst = append(dst, s[start:i]...)
			dst = append(dst, '\\', 'u', '2', '0', '2', hexDigits[r&0xf])
			i += size
			start = i
			continue
		}
		i += size
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"'), nil
}

// Timestamp range of protojson (years 0001 to 9999).
const (
	minTimestampSeconds = -62135596800
	maxTimestampSeconds = 253402300799
)

// appendTimestamp appends a Timestamp the way protojson writes it: RFC 3339
// in UTC with 0, 3, 6 or 9 fractional digits.
func appendTimestamp(dst []byte, secs int64, nanos int32) ([]byte, error) {
	if secs < minTimestampSeconds || secs > maxTimestampSeconds {
		return dst, fmt.Errorf("%w: %d", ErrTimestampRange, secs)
	}
	if nanos < 0 || nanos > 999999999 {
		return dst, fmt.Errorf("%w: %d", ErrTimestampNanos, nanos)
	}
	days := secs / 86400
	rem := secs % 86400
	if rem < 0 {
		rem += 86400
		days--
	}
	y, m, d := civil(days)
	dst = append(dst, '"',
		byte('0'+y/1000), byte('0'+y/100%10), byte('0'+y/10%10), byte('0'+y%10), '-',
		byte('0'+m/10), byte('0'+m%10), '-',
		byte('0'+d/10), byte('0'+d%10), 'T')
	h, mi, s := rem/3600, rem/60%60, rem%60
	dst = append(dst, byte('0'+h/10), byte('0'+h%10), ':',
		byte('0'+mi/10), byte('0'+mi%10), ':',
		byte('0'+s/10), byte('0'+s%10))
	if nanos != 0 {
		digits := 9
		switch {
		case nanos%1000000 == 0:
			nanos /= 1000000
			digits = 3
		case nanos%1000 == 0:
			nanos /= 1000
			digits = 6
		}
		dst = append(dst, '.')
		var buf [9]byte
		for i := digits - 1; i >= 0; i-- {
			buf[i] = byte('0' + nanos%10)
			nanos /= 10
		}
		dst = append(dst, buf[:digits]...)
	}
	return append(dst, 'Z', '"'), nil
}

// civil converts days since 1970-01-01 to a proleptic Gregorian date.
func civil(days int64) (year, month, day int64) {
	z := days + 719468
	era := z / 146097
	if z < 0 && z%146097 != 0 {
		era--
	}
	doe := z - era*146097
	yoe := (doe - doe/1460 + doe/36524 - doe/146096) / 365
	doy := doe - (365*yoe + yoe/4 - yoe/100)
	mp := (5*doy + 2) / 153
	day = doy - (153*mp+2)/5 + 1
	if mp < 10 {
		month = mp + 3
	} else {
		month = mp - 9
	}
	year = yoe + era*400
	if month <= 2 {
		year++
	}
	return year, month, day
}

// daysFrom converts a proleptic Gregorian date to days since 1970-01-01.
func daysFrom(year, month, day int64) int64 {
	if month <= 2 {
		year--
	}
	era := year / 400
	if year < 0 && year%400 != 0 {
		era--
	}
	yoe := year - era*400
	mp := month - 3
	if month <= 2 {
		mp = month + 9
	}
	doy := (153*mp+2)/5 + day - 1
	doe := yoe*365 + yoe/4 - yoe/100 + doy
	return era*146097 + doe - 719468
}

var anyOpts = protojson.MarshalOptions{UseProtoNames: true}

// appendAny writes an Any through protojson (it needs the type registry),
// compacted and HTML-escaped like the rest. Any fields are rare.
func appendAny(dst []byte, a *anypb.Any) ([]byte, error) {
	raw, err := anyOpts.Marshal(a)
	if err != nil {
		return dst, err
	}
	var buf bytes.Buffer
	if err := json.Compact(&buf, raw); err != nil {
		return dst, err
	}
	var esc bytes.Buffer
	json.HTMLEscape(&esc, buf.Bytes())
	return append(dst, esc.Bytes()...), nil
}
