// Package codec turns pipeline events into flowbus's wire formats: Hubble
// export JSON lines (one observer.GetFlowsResponse per line, as Hubble's
// exporter writes it), binary observer.GetFlowsResponse messages, and OCSF
// Network Activity events (JSON lines).
package codec

import (
	"bytes"
	"encoding/json"
	"fmt"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

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
	case "ocsf":
		return NewOCSF(false), nil
	}
	return nil, fmt.Errorf("unknown encoding %q (want json, protobuf or ocsf)", name)
}

// ForBuild returns the encoder a sink's `encoding` names, with its
// options.
func ForBuild(b *pipeline.Build) (Encoder, error) {
	if b.Encoding == "ocsf" {
		return NewOCSF(b.RawData), nil
	}
	return New(b.Encoding)
}

// Field numbers of observer.GetFlowsResponse.
const (
	fieldFlow       = 1
	fieldLostEvents = 3
	fieldNodeName   = 1000
	fieldTime       = 1001
)

// Protobuf writes the binary observer.GetFlowsResponse envelope with the
// generated encoder (zz_protobuf.go): no envelope is allocated per event, no
// reflection, no size pass, and the bytes equal proto.Marshal of the
// equivalent GetFlowsResponse (protobuf-go's order: node_name, time, then
// the oneof).
type Protobuf struct{}

// ContentType implements Encoder.
func (Protobuf) ContentType() string { return ContentTypeProtobuf }

// Append implements Encoder.
func (Protobuf) Append(dst []byte, e *pipeline.Event) ([]byte, error) {
	if e.Flow == nil && e.Lost == nil {
		return dst, fmt.Errorf("encode: empty event")
	}
	n := len(dst)
	var err error
	if e.NodeName != "" {
		if !validString(e.NodeName) {
			return dst, fmt.Errorf("encode protobuf: %w", invalidUTF8("observer.GetFlowsResponse.node_name"))
		}
		dst = protowire.AppendTag(dst, fieldNodeName, protowire.BytesType)
		dst = protowire.AppendString(dst, e.NodeName)
	}
	if e.Time != nil {
		dst = protowire.AppendTag(dst, fieldTime, protowire.BytesType)
		pos := len(dst)
		dst = append(dst, 0)
		dst, _ = appendPbgoogle_protobuf_Timestamp(dst, e.Time) // has no strings
		dst = fixLength(dst, pos)
	}
	if e.Flow != nil {
		// Flows are 128 bytes to 16 KiB: reserve a two-byte length.
		dst = protowire.AppendTag(dst, fieldFlow, protowire.BytesType)
		pos := len(dst)
		dst = append(dst, 0, 0)
		if dst, err = appendPbFlow(dst, e.Flow); err != nil {
			return dst[:n], fmt.Errorf("encode protobuf: %w", err)
		}
		dst = fixLengthN(dst, pos, 2)
	} else {
		dst = protowire.AppendTag(dst, fieldLostEvents, protowire.BytesType)
		pos := len(dst)
		dst = append(dst, 0)
		if dst, err = appendPbLostEvent(dst, e.Lost); err != nil {
			return dst[:n], fmt.Errorf("encode protobuf: %w", err)
		}
		dst = fixLength(dst, pos)
	}
	return dst, nil
}

// ReferenceProtobuf is proto.Marshal of the envelope (allocating), the
// reference Protobuf is tested against.
type ReferenceProtobuf struct{}

// ContentType implements Encoder.
func (ReferenceProtobuf) ContentType() string { return ContentTypeProtobuf }

// Append implements Encoder.
func (ReferenceProtobuf) Append(dst []byte, e *pipeline.Event) ([]byte, error) {
	if e.Flow == nil && e.Lost == nil {
		return dst, fmt.Errorf("encode: empty event")
	}
	out, err := proto.MarshalOptions{}.MarshalAppend(dst, Envelope(e))
	if err != nil {
		return dst, fmt.Errorf("encode protobuf: %w", err)
	}
	return out, nil
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
