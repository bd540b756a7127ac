package flowfilter

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/reflect/protoreflect"
	"gopkg.in/yaml.v3"

	flowpb "github.com/flowbus/flowbus/flow"
	"github.com/flowbus/flowbus/pipeline/config"
)

// ParseFilters reads a YAML sequence of Hubble FlowFilter objects, written
// as Hubble's exporter allowlist/denylist entries are: proto field names
// (`source_pod`), or their lowerCamel JSON names (`sourcePod`); enums by
// name (`DROPPED`) or number; 64-bit integers as numbers or strings. A
// sequence item may also be a string holding one FlowFilter as JSON
// (`'{"source_pod":["kube-system/"]}'`), the form Hubble's flag values use.
//
// A scalar written where a repeated field is expected counts as a list of
// one (`verdict: DROPPED`), and numbers given to string fields are taken as
// written (`destination_port: [53]`), since YAML users write them so.
//
// The whole list may also be one string of JSON, as Hubble's
// --hubble-export-allowlist flag takes it: FlowFilter objects one after the
// other, or a JSON array of them.
//
// A null or missing node gives no filters. An error is a *config.Error at
// the position of the offending node, or config.Errors holding the first
// error of each invalid filter when there are several.
func ParseFilters(node *yaml.Node) ([]*flowpb.FlowFilter, error) {
	node = resolve(node)
	if node == nil || isNull(node) {
		return nil, nil
	}
	if node.Kind == yaml.ScalarNode && node.Tag == "!!str" {
		return parseJSONFilters(node)
	}
	if node.Kind != yaml.SequenceNode {
		return nil, config.Errorf(node, "want a list of FlowFilter objects, got %s", kindName(node))
	}
	out := make([]*flowpb.FlowFilter, 0, len(node.Content))
	var errs config.Errors // the first error of each filter
	for i, item := range node.Content {
		item = resolve(item)
		ff := new(flowpb.FlowFilter)
		switch {
		case item.Kind == yaml.ScalarNode && item.Tag == "!!str":
			if err := (protojson.UnmarshalOptions{}).Unmarshal([]byte(item.Value), ff); err != nil {
				errs = append(errs, config.Errorf(item, "filter %d: invalid FlowFilter JSON: %v", i, err))
			}
		case item.Kind == yaml.MappingNode:
			if err := decodeMessage(item, ff.ProtoReflect()); err != nil {
				errs = append(errs, config.Positioned(err, item)...)
			}
		default:
			errs = append(errs, config.Errorf(item, "filter %d: want a FlowFilter mapping, got %s", i, kindName(item)))
		}
		out = append(out, ff)
	}
	switch len(errs) {
	case 0:
		return out, nil
	case 1:
		return nil, errs[0]
	}
	return nil, errs
}

// resolve follows aliases and unwraps documents.
func resolve(n *yaml.Node) *yaml.Node {
	for depth := 0; n != nil && depth < 64; depth++ {
		switch {
		case n.Kind == yaml.AliasNode:
			n = n.Alias
		case n.Kind == yaml.DocumentNode && len(n.Content) == 1:
			n = n.Content[0]
		case n.Kind == yaml.DocumentNode && len(n.Content) == 0:
			return nil
		default:
			return n
		}
	}
	return n
}

func isNull(n *yaml.Node) bool {
	return n.Kind == 0 || n.Kind == yaml.ScalarNode && n.Tag == "!!null"
}

func kindName(n *yaml.Node) string {
	switch n.Kind {
	case yaml.SequenceNode:
		return "a list"
	case yaml.MappingNode:
		return "a mapping"
	case yaml.ScalarNode:
		if isNull(n) {
			return "null"
		}
		return fmt.Sprintf("%q", n.Value)
	}
	return "an unexpected node"
}

// decodeMessage fills m from the YAML mapping n, strictly.
func decodeMessage(n *yaml.Node, m protoreflect.Message) error {
	md := m.Descriptor()
	fields := md.Fields()
	seen := map[protoreflect.FieldNumber]bool{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		key, val := resolve(n.Content[i]), resolve(n.Content[i+1])
		if key.Kind != yaml.ScalarNode {
			return config.Errorf(key, "%s: keys must be field names", md.Name())
		}
		fd := fields.ByName(protoreflect.Name(key.Value))
		if fd == nil {
			fd = fields.ByJSONName(key.Value)
		}
		if fd == nil {
			return config.Errorf(key, "unknown %s field %q", md.Name(), key.Value)
		}
		if seen[fd.Number()] {
			return config.Errorf(key, "%s field %q given twice", md.Name(), key.Value)
		}
		seen[fd.Number()] = true
		if isNull(val) {
			continue // like protojson: null leaves the field unset
		}
		if err := decodeField(val, m, fd); err != nil {
			return err
		}
	}
	return nil
}

func decodeField(n *yaml.Node, m protoreflect.Message, fd protoreflect.FieldDescriptor) error {
	switch {
	case fd.IsMap():
		return config.Errorf(n, "field %q: maps are not supported", fd.Name())
	case fd.IsList():
		items := []*yaml.Node{n}
		if n.Kind == yaml.SequenceNode {
			items = n.Content
		}
		list := m.Mutable(fd).List()
		for _, it := range items {
			it = resolve(it)
			if isNull(it) {
				return config.Errorf(it, "field %q: null list item", fd.Name())
			}
			if fd.Kind() == protoreflect.MessageKind {
				el := list.NewElement()
				if err := decodeMessageValue(it, el.Message(), fd); err != nil {
					return err
				}
				list.Append(el)
				continue
			}
			v, err := scalarValue(it, fd)
			if err != nil {
				return err
			}
			list.Append(v)
		}
		return nil
	case fd.Kind() == protoreflect.MessageKind:
		return decodeMessageValue(n, m.Mutable(fd).Message(), fd)
	default:
		v, err := scalarValue(n, fd)
		if err != nil {
			return err
		}
		m.Set(fd, v)
		return nil
	}
}

func decodeMessageValue(n *yaml.Node, m protoreflect.Message, fd protoreflect.FieldDescriptor) error {
	if n.Kind != yaml.MappingNode {
		return config.Errorf(n, "field %q: want a %s mapping, got %s", fd.Name(), fd.Message().Name(), kindName(n))
	}
	return decodeMessage(n, m)
}

func scalarValue(n *yaml.Node, fd protoreflect.FieldDescriptor) (protoreflect.Value, error) {
	if n.Kind != yaml.ScalarNode {
		return protoreflect.Value{}, config.Errorf(n, "field %q: want a %s, got %s", fd.Name(), kindWord(fd), kindName(n))
	}
	bad := func(format string, args ...any) (protoreflect.Value, error) {
		return protoreflect.Value{}, config.Errorf(n, "field %q: "+format, append([]any{fd.Name()}, args...)...)
	}
	s := n.Value
	switch fd.Kind() {
	case protoreflect.StringKind:
		return protoreflect.ValueOfString(s), nil
	case protoreflect.BoolKind:
		switch n.Tag {
		case "!!bool":
			var b bool
			if err := n.Decode(&b); err != nil {
				return bad("invalid bool %q", s)
			}
			return protoreflect.ValueOfBool(b), nil
		case "!!str":
			// protojson accepts only true/false; so do we for strings.
			switch s {
			case "true":
				return protoreflect.ValueOfBool(true), nil
			case "false":
				return protoreflect.ValueOfBool(false), nil
			}
		}
		return bad("want true or false, got %q", s)
	case protoreflect.EnumKind:
		ed := fd.Enum()
		if ev := ed.Values().ByName(protoreflect.Name(s)); ev != nil {
			return protoreflect.ValueOfEnum(ev.Number()), nil
		}
		if i, err := strconv.ParseInt(s, 10, 32); err == nil {
			return protoreflect.ValueOfEnum(protoreflect.EnumNumber(i)), nil
		}
		names := make([]string, 0, ed.Values().Len())
		for i := 0; i < ed.Values().Len(); i++ {
			names = append(names, string(ed.Values().Get(i).Name()))
		}
		return bad("unknown %s %q (want one of %s, or a number)", ed.Name(), s, strings.Join(names, ", "))
	case protoreflect.Int32Kind, protoreflect.Sint32Kind, protoreflect.Sfixed32Kind:
		i, err := parseInt(s, 32)
		if err != nil {
			return bad("invalid int32 %q: %v", s, err)
		}
		return protoreflect.ValueOfInt32(int32(i)), nil
	case protoreflect.Int64Kind, protoreflect.Sint64Kind, protoreflect.Sfixed64Kind:
		i, err := parseInt(s, 64)
		if err != nil {
			return bad("invalid int64 %q: %v", s, err)
		}
		return protoreflect.ValueOfInt64(i), nil
	case protoreflect.Uint32Kind, protoreflect.Fixed32Kind:
		u, err := parseUint(s, 32)
		if err != nil {
			return bad("invalid uint32 %q: %v", s, err)
		}
		return protoreflect.ValueOfUint32(uint32(u)), nil
	case protoreflect.Uint64Kind, protoreflect.Fixed64Kind:
		u, err := parseUint(s, 64)
		if err != nil {
			return bad("invalid uint64 %q: %v", s, err)
		}
		return protoreflect.ValueOfUint64(u), nil
	}
	return bad("unsupported field kind %s", fd.Kind())
}

// parseInt accepts decimal integers, and floats with an integral value
// (as protojson does for 1e3).
func parseInt(s string, bits int) (int64, error) {
	i, err := strconv.ParseInt(s, 10, bits)
	if err == nil {
		return i, nil
	}
	if errors.Is(err, strconv.ErrRange) {
		return 0, errors.New("out of range")
	}
	f, ferr := strconv.ParseFloat(s, 64)
	if ferr != nil || f != math.Trunc(f) || f < -math.Pow(2, float64(bits-1)) || f >= math.Pow(2, float64(bits-1)) {
		return 0, errors.New("not an integer")
	}
	return int64(f), nil
}

func parseUint(s string, bits int) (uint64, error) {
	u, err := strconv.ParseUint(s, 10, bits)
	if err == nil {
		return u, nil
	}
	if errors.Is(err, strconv.ErrRange) {
		return 0, errors.New("out of range")
	}
	f, ferr := strconv.ParseFloat(s, 64)
	if ferr != nil || f != math.Trunc(f) || f < 0 || f >= math.Pow(2, float64(bits)) {
		return 0, errors.New("not an unsigned integer")
	}
	return uint64(f), nil
}

func kindWord(fd protoreflect.FieldDescriptor) string {
	switch fd.Kind() {
	case protoreflect.EnumKind:
		return string(fd.Enum().Name()) + " name or number"
	case protoreflect.MessageKind:
		return string(fd.Message().Name()) + " mapping"
	}
	return fd.Kind().String()
}

// parseJSONFilters reads a string holding FlowFilters as JSON, the form of
// Hubble's --hubble-export-allowlist/denylist flags: a sequence of JSON
// objects (`{"verdict":["DROPPED"]} {"source_pod":["kube-system/"]}`), or
// a JSON array of them.
func parseJSONFilters(node *yaml.Node) ([]*flowpb.FlowFilter, error) {
	dec := json.NewDecoder(strings.NewReader(node.Value))
	var raws []json.RawMessage
	if t := strings.TrimSpace(node.Value); strings.HasPrefix(t, "[") {
		if err := dec.Decode(&raws); err != nil {
			return nil, config.Errorf(node, "invalid FlowFilter JSON list: %v", err)
		}
		if dec.More() {
			return nil, config.Errorf(node, "invalid FlowFilter JSON list: data after the list")
		}
	} else {
		for {
			var raw json.RawMessage
			if err := dec.Decode(&raw); err == io.EOF {
				break
			} else if err != nil {
				return nil, config.Errorf(node, "invalid FlowFilter JSON: %v", err)
			}
			raws = append(raws, raw)
		}
	}
	out := make([]*flowpb.FlowFilter, 0, len(raws))
	for i, raw := range raws {
		ff := new(flowpb.FlowFilter)
		if err := (protojson.UnmarshalOptions{}).Unmarshal(raw, ff); err != nil {
			return nil, config.Errorf(node, "filter %d: invalid FlowFilter JSON: %v", i, err)
		}
		out = append(out, ff)
	}
	return out, nil
}
