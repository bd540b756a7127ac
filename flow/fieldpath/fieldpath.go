// Package fieldpath resolves dotted field paths into a flow.Flow, written
// with proto field names as Hubble writes them ("source.pod_name",
// "l4.TCP.destination_port", "l7.http.url", "IP.source"). Paths are checked
// against the schema when parsed, and reading or clearing a field through a
// parsed path does not allocate.
package fieldpath

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"google.golang.org/protobuf/reflect/protoreflect"

	flowpb "github.com/flowbus/flowbus/flow"
)

// Path is a parsed field path. The zero Path is the flow itself.
type Path struct {
	text   string
	fields []protoreflect.FieldDescriptor
}

var flowDesc = (&flowpb.Flow{}).ProtoReflect().Descriptor()

// Parse parses a dotted path of proto field names relative to flow.Flow.
// Every segment but the last must name a singular message field.
func Parse(s string) (Path, error) {
	return ParseIn(flowDesc, s)
}

// ParseIn parses a dotted path relative to the message md.
func ParseIn(md protoreflect.MessageDescriptor, s string) (Path, error) {
	if s == "" {
		return Path{}, fmt.Errorf("empty field path")
	}
	p := Path{text: s}
	msg := md
	for i, seg := range strings.Split(s, ".") {
		if msg == nil {
			prev := p.fields[i-1]
			return Path{}, fmt.Errorf("field path %q: %s is a %s, it has no field %q", s, prev.Name(), kindName(prev), seg)
		}
		fd := msg.Fields().ByName(protoreflect.Name(seg))
		if fd == nil {
			return Path{}, fmt.Errorf("field path %q: %s has no field %q (fields: %s)", s, msg.Name(), seg, fieldNames(msg))
		}
		p.fields = append(p.fields, fd)
		msg = nil
		if fd.Message() != nil && !fd.IsList() && !fd.IsMap() {
			msg = fd.Message()
		}
	}
	return p, nil
}

// MustParse is Parse for paths known to be valid; it panics otherwise.
func MustParse(s string) Path {
	p, err := Parse(s)
	if err != nil {
		panic(err)
	}
	return p
}

func kindName(fd protoreflect.FieldDescriptor) string {
	switch {
	case fd.IsList():
		return "repeated field"
	case fd.IsMap():
		return "map"
	}
	return fd.Kind().String()
}

func fieldNames(md protoreflect.MessageDescriptor) string {
	fs := md.Fields()
	names := make([]string, fs.Len())
	for i := range names {
		names[i] = string(fs.Get(i).Name())
	}
	return strings.Join(names, ", ")
}

// String returns the path as written.
func (p Path) String() string { return p.text }

// Fields returns the field descriptors along the path, outermost first.
func (p Path) Fields() []protoreflect.FieldDescriptor { return p.fields }

// Leaf returns the descriptor of the last field of the path.
func (p Path) Leaf() protoreflect.FieldDescriptor {
	if len(p.fields) == 0 {
		return nil
	}
	return p.fields[len(p.fields)-1]
}

// parent walks to the message holding the leaf field; ok is false when an
// intermediate message is unset.
func (p Path) parent(m protoreflect.Message) (protoreflect.Message, bool) {
	for _, fd := range p.fields[:len(p.fields)-1] {
		if !m.Has(fd) {
			return nil, false
		}
		m = m.Get(fd).Message()
	}
	return m, true
}

// Get returns the value at p in f and whether it is populated (every message
// on the way is set and the leaf is set: non-zero for a scalar, non-empty
// for a list).
func (p Path) Get(f *flowpb.Flow) (protoreflect.Value, bool) {
	return p.GetIn(f.ProtoReflect())
}

// GetIn is Get on any message of the path's root type.
func (p Path) GetIn(m protoreflect.Message) (protoreflect.Value, bool) {
	if len(p.fields) == 0 {
		return protoreflect.ValueOfMessage(m), true
	}
	parent, ok := p.parent(m)
	if !ok {
		return protoreflect.Value{}, false
	}
	leaf := p.Leaf()
	if !parent.Has(leaf) {
		return protoreflect.Value{}, false
	}
	return parent.Get(leaf), true
}

// Clear clears the field at p in f; it does nothing when it is unset.
func (p Path) Clear(f *flowpb.Flow) { p.ClearIn(f.ProtoReflect()) }

// ClearIn is Clear on any message of the path's root type.
func (p Path) ClearIn(m protoreflect.Message) {
	if len(p.fields) == 0 {
		return
	}
	if parent, ok := p.parent(m); ok {
		parent.Clear(p.Leaf())
	}
}

// AppendText appends the value at p in f as text and reports whether it is
// populated: strings as they are, enums by name (or number when the name is
// unknown), numbers in decimal, bools as true/false, wrapper types by their
// value, timestamps in RFC 3339, lists joined by ",". A message that is none
// of these is not text: ok is false.
func (p Path) AppendText(dst []byte, f *flowpb.Flow) ([]byte, bool) {
	v, ok := p.Get(f)
	if !ok {
		return dst, false
	}
	leaf := p.Leaf()
	if leaf.IsList() {
		l := v.List()
		start := len(dst)
		for i := 0; i < l.Len(); i++ {
			if i > 0 {
				dst = append(dst, ',')
			}
			if dst, ok = appendScalar(dst, leaf, l.Get(i)); !ok {
				return dst[:start], false
			}
		}
		return dst, true
	}
	if leaf.IsMap() {
		return dst, false
	}
	return appendScalar(dst, leaf, v)
}

func appendScalar(dst []byte, fd protoreflect.FieldDescriptor, v protoreflect.Value) ([]byte, bool) {
	switch fd.Kind() {
	case protoreflect.StringKind:
		return append(dst, v.String()...), true
	case protoreflect.BoolKind:
		return strconv.AppendBool(dst, v.Bool()), true
	case protoreflect.Int32Kind, protoreflect.Sint32Kind, protoreflect.Sfixed32Kind,
		protoreflect.Int64Kind, protoreflect.Sint64Kind, protoreflect.Sfixed64Kind:
		return strconv.AppendInt(dst, v.Int(), 10), true
	case protoreflect.Uint32Kind, protoreflect.Fixed32Kind, protoreflect.Uint64Kind, protoreflect.Fixed64Kind:
		return strconv.AppendUint(dst, v.Uint(), 10), true
	case protoreflect.FloatKind, protoreflect.DoubleKind:
		return strconv.AppendFloat(dst, v.Float(), 'g', -1, 64), true
	case protoreflect.EnumKind:
		if ev := fd.Enum().Values().ByNumber(v.Enum()); ev != nil {
			return append(dst, ev.Name()...), true
		}
		return strconv.AppendInt(dst, int64(v.Enum()), 10), true
	case protoreflect.BytesKind:
		return append(dst, v.Bytes()...), true
	case protoreflect.MessageKind, protoreflect.GroupKind:
		return appendWellKnown(dst, v.Message())
	}
	return dst, false
}

// appendWellKnown renders the wrapper types and Timestamp as text.
func appendWellKnown(dst []byte, m protoreflect.Message) ([]byte, bool) {
	md := m.Descriptor()
	switch md.FullName() {
	case "google.protobuf.Timestamp":
		fs := md.Fields()
		sec := m.Get(fs.ByName("seconds")).Int()
		nsec := m.Get(fs.ByName("nanos")).Int()
		return time.Unix(sec, nsec).UTC().AppendFormat(dst, time.RFC3339Nano), true
	case "google.protobuf.BoolValue", "google.protobuf.Int32Value", "google.protobuf.Int64Value",
		"google.protobuf.UInt32Value", "google.protobuf.UInt64Value", "google.protobuf.StringValue",
		"google.protobuf.FloatValue", "google.protobuf.DoubleValue", "google.protobuf.BytesValue":
		fd := md.Fields().ByName("value")
		return appendScalar(dst, fd, m.Get(fd))
	}
	return dst, false
}
