// Package encode turns pipeline events into the wire formats of SPEC §4:
// Hubble export JSON lines and binary observer.GetFlowsResponse messages.
package encode

import (
	"bytes"
	"encoding/json"
	"fmt"
	"slices"
	"unicode/utf8"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/flowbus/flowbus/flow/flowjson"
	"github.com/flowbus/flowbus/pipeline"
)

// Content types announced in message headers.
const (
	ContentTypeJSON     = "application/json"
	ContentTypeProtobuf = "application/x-protobuf"
	// Schema is the message name announced in the flowbus-schema header.
	Schema = "observer.GetFlowsResponse"
)

// Encoder appends the encoding of one event to a buffer.
type Encoder interface {
	// Append appends e's encoding to dst and returns the extended buffer.
	// A JSON line ends with '\n'; a protobuf message has no length prefix.
	Append(dst []byte, e *pipeline.Event) ([]byte, error)
	// ContentType is the MIME type of the encoding.
	ContentType() string
}

// New returns the encoder for a config `encoding` value; "" means json.
func New(name string) (Encoder, error) {
	switch name {
	case "", "json":
		return JSON{}, nil
	case "protobuf":
		return Protobuf{}, nil
	}
	return nil, fmt.Errorf("unknown encoding %q (want json or protobuf)", name)
}

// Field numbers of observer.GetFlowsResponse.
const (
	fieldFlow       = 1
	fieldLostEvents = 3
	fieldNodeName   = 1000
	fieldTime       = 1001
)

// Protobuf writes the binary observer.GetFlowsResponse envelope. It writes
// the envelope's fields itself, so no envelope is allocated per event, in
// protobuf-go's order (regular fields by number, then the oneof): the bytes
// equal proto.Marshal of the equivalent GetFlowsResponse.
type Protobuf struct{}

// ContentType implements Encoder.
func (Protobuf) ContentType() string { return ContentTypeProtobuf }

var marshal = proto.MarshalOptions{UseCachedSize: true}

// Append implements Encoder.
func (Protobuf) Append(dst []byte, e *pipeline.Event) ([]byte, error) {
	var (
		msg proto.Message
		num protowire.Number
	)
	switch {
	case e.Flow != nil:
		msg, num = e.Flow, fieldFlow
	case e.Lost != nil:
		msg, num = e.Lost, fieldLostEvents
	default:
		return dst, fmt.Errorf("encode: empty event")
	}
	n := len(dst)
	if e.NodeName != "" {
		if !utf8.ValidString(e.NodeName) {
			return dst, fmt.Errorf("encode protobuf: node_name is not valid UTF-8")
		}
		dst = protowire.AppendTag(dst, fieldNodeName, protowire.BytesType)
		dst = protowire.AppendString(dst, e.NodeName)
	}
	if e.Time != nil {
		dst = protowire.AppendTag(dst, fieldTime, protowire.BytesType)
		dst = appendTimestamp(dst, e.Time)
	}
	// One size pass fills the cached sizes that MarshalAppend then reuses
	// for every nested length prefix; the buffer is grown once.
	size := proto.Size(msg)
	dst = protowire.AppendTag(dst, num, protowire.BytesType)
	dst = protowire.AppendVarint(dst, uint64(size))
	dst = slices.Grow(dst, size)
	dst, err := marshal.MarshalAppend(dst, msg)
	if err != nil {
		return dst[:n], fmt.Errorf("encode protobuf: %w", err)
	}
	return dst, nil
}

// appendTimestamp appends a length-prefixed google.protobuf.Timestamp, as
// proto.Marshal writes it, without reflection.
func appendTimestamp(dst []byte, t *timestamppb.Timestamp) []byte {
	if len(t.ProtoReflect().GetUnknown()) > 0 {
		dst = protowire.AppendVarint(dst, uint64(proto.Size(t)))
		dst, _ = marshal.MarshalAppend(dst, t) // a Timestamp cannot fail
		return dst
	}
	size := 0
	if t.Seconds != 0 {
		size += 1 + protowire.SizeVarint(uint64(t.Seconds))
	}
	if t.Nanos != 0 {
		size += 1 + protowire.SizeVarint(uint64(int64(t.Nanos)))
	}
	dst = protowire.AppendVarint(dst, uint64(size))
	if t.Seconds != 0 {
		dst = protowire.AppendTag(dst, 1, protowire.VarintType)
		dst = protowire.AppendVarint(dst, uint64(t.Seconds))
	}
	if t.Nanos != 0 {
		dst = protowire.AppendTag(dst, 2, protowire.VarintType)
		dst = protowire.AppendVarint(dst, uint64(int64(t.Nanos)))
	}
	return dst
}

// JSON writes one Hubble export line per event: protojson with proto field
// names, compacted and HTML-escaped the way encoding/json re-encodes it, and
// a newline, byte for byte what Hubble's exporter writes. It uses the
// generated encoder of flow/flowjson (no reflection, no allocation);
// ReferenceJSON is the protojson implementation it is tested against.
type JSON struct{}

// ContentType implements Encoder.
func (JSON) ContentType() string { return ContentTypeJSON }

// Append implements Encoder.
func (JSON) Append(dst []byte, e *pipeline.Event) ([]byte, error) {
	out, err := flowjson.AppendExport(dst, e.Flow, e.Lost, e.NodeName, e.Time)
	if err != nil {
		return dst, fmt.Errorf("encode json: %w", err)
	}
	return append(out, '\n'), nil
}

// ReferenceJSON is the reflective reference for JSON: protojson of the
// envelope, compacted and HTML-escaped by encoding/json. It is about ten
// times slower; tests and benchmarks compare JSON against it.
type ReferenceJSON struct{}

// ContentType implements Encoder.
func (ReferenceJSON) ContentType() string { return ContentTypeJSON }

var jsonOpts = protojson.MarshalOptions{UseProtoNames: true}

// Append implements Encoder.
func (ReferenceJSON) Append(dst []byte, e *pipeline.Event) ([]byte, error) {
	env := Envelope(e)
	raw, err := jsonOpts.Marshal(env)
	if err != nil {
		return dst, fmt.Errorf("encode json: %w", err)
	}
	buf := bytes.NewBuffer(dst)
	if err := json.Compact(buf, raw); err != nil {
		return dst, fmt.Errorf("encode json: %w", err)
	}
	out := buf.Bytes()
	// encoding/json escapes <, >, &, U+2028 and U+2029 in Marshaler output.
	var esc bytes.Buffer
	json.HTMLEscape(&esc, out[len(dst):])
	out = append(out[:len(dst)], esc.Bytes()...)
	return append(out, '\n'), nil
}
