package codec

import (
	"errors"
	"fmt"
	"unsafe"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	flowpb "github.com/flowbus/flowbus/flow"
	"github.com/flowbus/flowbus/flow/observer"
)

//go:generate go run ../flow/flowjson/internal/gen -pbdecode zz_pbdecode.go

// The binary decoder in zz_pbdecode.go is generated from the schema's
// descriptors. It gives what proto.Unmarshal gives (unknown fields kept,
// unknown enum numbers kept, a known field with an unexpected wire type
// kept as an unknown field, UTF-8 checked), but decodes into a message's
// existing storage: nested messages, oneof wrappers and lists are reused,
// and every string of a decoded message is a slice of one copy of the
// input. The rare inputs where protobuf-go merges (a singular message or a
// oneof that occurs twice) are decoded by protobuf-go instead.

// errFallback hands a message to protobuf-go.
var errFallback = errors.New("codec: not on the fast path")

// A DecodeError is malformed protobuf input: where and in which message or
// field it was found.
type DecodeError struct {
	Offset int    // byte offset in the input
	Field  string // the message or field being decoded
	Err    error
}

func (e *DecodeError) Error() string {
	return fmt.Sprintf("codec: protobuf at byte %d (%s): %v", e.Offset, e.Field, e.Err)
}

func (e *DecodeError) Unwrap() error { return e.Err }

// pbDecoder reads one message. b views s's bytes and is never written.
// sp, when not nil, keeps nested messages between messages (see Spares).
type pbDecoder struct {
	s  string
	b  []byte
	sp *Spares
}

// maxSpares bounds each of Spares' lists: a stream whose flows lose a
// field for good keeps no more than that many of its messages. A message
// is in one flow's storage or in a list, never in both: the decoder keeps
// a message only once the storage it came from no longer references it,
// and a list's Get takes it off before a storage gets it.
const maxSpares = 64

func newPbDecoder(s string) pbDecoder {
	return pbDecoder{s: s, b: unsafe.Slice(unsafe.StringData(s), len(s))}
}

func (d *pbDecoder) bad(pos int, field string, code int) error {
	return &DecodeError{Offset: pos, Field: field, Err: protowire.ParseError(code)}
}

func (d *pbDecoder) badUTF8(pos int, field string) error {
	return &DecodeError{Offset: pos, Field: field, Err: ErrInvalidUTF8}
}

// varint reads a varint at d.b[i:end]: its value and length, or a
// negative protowire error code.
func (d *pbDecoder) varint(i, end int) (uint64, int) {
	if v, n := d.varint1(i, end); n != 0 {
		return v, n
	}
	return protowire.ConsumeVarint(d.b[i:end])
}

// varint1, tag1 and length1 are the one-byte cases of varint, tag and
// length, the common ones, small enough for the compiler to inline (the
// others are calls): each returns a zero length (or start) when the input
// is not that case, and the generated decoder then calls the full form.
func (d *pbDecoder) varint1(i, end int) (uint64, int) {
	if i < end {
		if c := d.b[i]; c < 0x80 {
			return uint64(c), 1
		}
	}
	return 0, 0
}

// tag1: a tag of one byte, field numbers 1 to 15.
func (d *pbDecoder) tag1(i, end int) (protowire.Number, protowire.Type, int) {
	if i < end {
		if c := d.b[i]; c < 0x80 && c >= 8 {
			return protowire.Number(c >> 3), protowire.Type(c & 7), 1
		}
	}
	return 0, 0, 0
}

// length1: a length prefix of one byte whose content ends by end.
func (d *pbDecoder) length1(i, end int) (int, int) {
	if i < end {
		if c := int(d.b[i]); c < 0x80 && c < end-i {
			return i + 1, c
		}
	}
	return 0, 0
}

// protowire's error codes for an invalid field number and for truncated
// input.
var (
	errCodeFieldNumber = func() int {
		_, _, n := protowire.ConsumeTag([]byte{0})
		return n
	}()
	errCodeTruncated = func() int {
		_, n := protowire.ConsumeBytes([]byte{1})
		return n
	}()
)

// tag reads a field's tag. Field numbers above protowire.MaxValidNumber
// are invalid, as protobuf-go's unmarshal has them.
func (d *pbDecoder) tag(i, end int) (protowire.Number, protowire.Type, int) {
	v, n := d.varint(i, end)
	if n < 0 {
		return 0, 0, n
	}
	if num := v >> 3; num < uint64(protowire.MinValidNumber) || num > uint64(protowire.MaxValidNumber) {
		return 0, 0, errCodeFieldNumber
	}
	return protowire.Number(v >> 3), protowire.Type(v & 7), n
}

// length reads a length prefix at d.b[i:end]: the content's start and
// length, or a negative protowire error code as the length.
func (d *pbDecoder) length(i, end int) (int, int) {
	v, n := d.varint(i, end)
	if n < 0 {
		return 0, n
	}
	if v > uint64(end-i-n) {
		return 0, errCodeTruncated
	}
	return i + n, int(v)
}

// UnmarshalFlow decodes a flow.Flow in protobuf's binary format into f,
// like proto.Unmarshal into a reset f, but reusing f's nested messages and
// lists as storage. f's strings share one copy of b.
func UnmarshalFlow(b []byte, f *flowpb.Flow) error {
	d := newPbDecoder(string(b))
	err := d.decodeFlow(f, 0, len(d.b))
	if err == errFallback {
		proto.Reset(f)
		if err := proto.Unmarshal(b, f); err != nil {
			return fmt.Errorf("codec: %w", err)
		}
		return nil
	}
	if err != nil {
		// A decode cut short leaves f half the flow before, half b's.
		*f = flowpb.Flow{}
	}
	return err
}

// clearStrings empties the strings of s that are not empty: a pooled
// flow's lists keep no string of an earlier message beyond their length.
// It writes only where it must, as a write takes the collector's write
// barrier while it marks.
func clearStrings(s []string) {
	for i := range s {
		if s[i] != "" {
			s[i] = ""
		}
	}
}

// FlowsResponse is a decoded observer.GetFlowsResponse.
type FlowsResponse struct {
	// Flow is the response's flow, decoded into the storage given (or, in
	// the rare cases protobuf-go decodes, a new Flow); nil when the
	// response carries something else.
	Flow *flowpb.Flow
	// NodeName and Time are the envelope's. Time is Flow.Time when the two
	// are equal.
	NodeName string
	Time     *timestamppb.Timestamp
	// Other is a response without a flow (lost events, node status, a kind
	// this schema does not know), decoded by protobuf-go.
	Other *observer.GetFlowsResponse
}

// Envelope fields of observer.GetFlowsResponse.
const (
	respFlow     = 1
	respNodeName = 1000
	respTime     = 1001
)

// UnmarshalGetFlowsResponse decodes an observer.GetFlowsResponse in
// protobuf's binary format. A flow is decoded into storage (see
// UnmarshalFlow), whose strings then share s; other responses are decoded
// by protobuf-go into FlowsResponse.Other. Either way the result is what
// proto.Unmarshal gives, except that unknown fields of the envelope itself
// are not kept for a flow.
func UnmarshalGetFlowsResponse(s string, storage *flowpb.Flow) (FlowsResponse, error) {
	return (*Spares)(nil).UnmarshalGetFlowsResponse(s, storage)
}

// UnmarshalGetFlowsResponse is the package's UnmarshalGetFlowsResponse,
// keeping the nested messages it takes out of storage in sp and taking
// the ones it needs from there before it allocates. sp may be nil.
func (sp *Spares) UnmarshalGetFlowsResponse(s string, storage *flowpb.Flow) (FlowsResponse, error) {
	d := newPbDecoder(s)
	d.sp = sp
	var r FlowsResponse
	flowAt, flowEnd, timeAt, timeEnd := -1, -1, -1, -1
	end := len(d.b)
	for i := 0; i < end; {
		num, typ, n := d.tag(i, end)
		if n < 0 {
			return r, d.bad(i, "observer.GetFlowsResponse", n)
		}
		i += n
		switch {
		case num == respFlow && typ == protowire.BytesType && flowAt < 0,
			num == respTime && typ == protowire.BytesType && timeAt < 0:
			p, l := d.length(i, end)
			if l < 0 {
				return r, d.bad(i, "observer.GetFlowsResponse", l)
			}
			if num == respFlow {
				flowAt, flowEnd = p, p+l
			} else {
				timeAt, timeEnd = p, p+l
			}
			i = p + l
		case num == respNodeName && typ == protowire.BytesType:
			p, l := d.length(i, end)
			if l < 0 {
				return r, d.bad(i, "observer.GetFlowsResponse.node_name", l)
			}
			v := d.s[p : p+l]
			if !validString(v) {
				return r, d.badUTF8(p, "observer.GetFlowsResponse.node_name")
			}
			r.NodeName = v
			i = p + l
		default:
			// Another kind of response, a field twice, an unknown field.
			return unmarshalOther(d.b)
		}
	}
	if flowAt < 0 {
		return unmarshalOther(d.b)
	}
	if err := d.decodeFlow(storage, flowAt, flowEnd); err != nil {
		if err == errFallback {
			return unmarshalOther(d.b)
		}
		// See UnmarshalFlow.
		*storage = flowpb.Flow{}
		return FlowsResponse{}, err
	}
	r.Flow = storage
	if timeAt >= 0 {
		if ft := storage.Time; ft != nil && d.sameTime(ft, timeAt, timeEnd) {
			r.Time = ft
		} else {
			t := new(timestamppb.Timestamp)
			if err := d.decodegoogle_protobuf_Timestamp(t, timeAt, timeEnd); err != nil {
				if err == errFallback {
					return unmarshalOther(d.b)
				}
				return FlowsResponse{}, err
			}
			r.Time = t
		}
	}
	return r, nil
}

// sameTime reports whether the Timestamp at d.b[i:end] is plainly t: its
// seconds and nanos, nothing else, and t has no unknown fields.
func (d *pbDecoder) sameTime(t *timestamppb.Timestamp, i, end int) bool {
	if len(*(*[]byte)(unsafe.Add(unsafe.Pointer(t), unknowngoogle_protobuf_Timestamp))) > 0 {
		return false
	}
	var sec int64
	var nanos int32
	for i < end {
		num, typ, n := d.tag(i, end)
		if n < 0 || typ != protowire.VarintType {
			return false
		}
		i += n
		v, n := d.varint(i, end)
		if n < 0 {
			return false
		}
		i += n
		switch num {
		case 1:
			sec = int64(v)
		case 2:
			nanos = int32(v)
		default:
			return false
		}
	}
	return sec == t.Seconds && nanos == t.Nanos
}

// unmarshalOther decodes b with protobuf-go.
func unmarshalOther(b []byte) (FlowsResponse, error) {
	resp := new(observer.GetFlowsResponse)
	if err := proto.Unmarshal(b, resp); err != nil {
		return FlowsResponse{}, fmt.Errorf("codec: observer.GetFlowsResponse: %w", err)
	}
	r := FlowsResponse{NodeName: resp.GetNodeName(), Time: resp.GetTime()}
	if f := resp.GetFlow(); f != nil {
		r.Flow = f
	} else {
		r.Other = resp
	}
	return r, nil
}
