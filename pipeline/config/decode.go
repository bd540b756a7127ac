package config

import (
	"encoding"
	"fmt"
	"math"
	"reflect"
	"sort"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// Duration is a time.Duration written in the config as a Go duration
// string: "1s", "500ms", "1m30s". A bare 0 means zero.
type Duration time.Duration

// D returns d as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

// String formats d like time.Duration.
func (d Duration) String() string { return time.Duration(d).String() }

// UnmarshalConfig implements Unmarshaler.
func (d *Duration) UnmarshalConfig(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return Errorf(n, "expected a duration like 1s or 500ms, got %s", describe(n))
	}
	if n.Value == "0" {
		*d = 0
		return nil
	}
	v, err := time.ParseDuration(n.Value)
	if err != nil {
		return Errorf(n, "invalid duration %q: want a number with a unit, like 1s, 500ms or 2m", n.Value)
	}
	if v < 0 {
		return Errorf(n, "invalid duration %q: must not be negative", n.Value)
	}
	*d = Duration(v)
	return nil
}

// Unmarshaler is implemented by types that decode themselves from a YAML
// node. UnmarshalConfig should return errors made with Errorf (or Errors)
// so that they carry positions.
type Unmarshaler interface {
	UnmarshalConfig(n *yaml.Node) error
}

// Decode decodes the YAML node n (usually a component's mapping) into v, a
// non-nil pointer. It is strict: an unknown key, a duplicate key, or a value
// of the wrong type is an error at its position, and all the errors found
// are returned together as Errors.
//
// Supported targets: structs (keys from `yaml:"name"` tags, or the lower-case
// field name; `yaml:"-"` skips a field; `,inline` merges an embedded
// struct's keys; `,required` or a `required:"true"` tag makes a missing key
// an error; a `default:"VALUE"` tag gives a missing or null key the value
// VALUE, decoded like YAML, when the field is still zero), string, bool,
// signed and unsigned integers, floats, Duration, slices, maps with string
// keys, pointers, `any` (plain YAML decoding), types implementing
// Unmarshaler or encoding.TextUnmarshaler, and yaml.Node / *yaml.Node
// fields, which receive the node untouched for the component to decode
// later. A null value or a missing key leaves the target unchanged, but for
// the defaults of the structs it holds (a missing key whose type is a struct
// gets its fields' defaults; a nil node or a null n gets v's).
//
// Keys documents the same tags, for the reference.
func Decode(n *yaml.Node, v any) error {
	rv := reflect.ValueOf(v)
	if rv.Kind() != reflect.Pointer || rv.IsNil() {
		return Errors{Errorf(n, "config.Decode: target must be a non-nil pointer, got %T", v)}
	}
	var d decoder
	if n == nil || isNull(resolve(n)) {
		d.defaults(n, rv.Elem())
		return d.errs.Err()
	}
	d.value(n, rv.Elem())
	return d.errs.Err()
}

// defaults gives the fields of v (a struct, or a pointer to one that is
// set) their `default` tags, recursively, where they are still zero. n is
// where a broken default is reported.
func (d *decoder) defaults(n *yaml.Node, v reflect.Value) {
	for v.Kind() == reflect.Pointer {
		if v.IsNil() {
			return
		}
		v = v.Elem()
	}
	if v.Kind() != reflect.Struct || !plainStruct(v.Type()) {
		return
	}
	for _, f := range fields(v.Type()) {
		d.fieldDefault(n, f, fieldByIndex(v, f.index))
	}
}

// fieldDefault applies f's default to fv when it is zero, or the defaults
// of the struct it holds.
func (d *decoder) fieldDefault(n *yaml.Node, f field, fv reflect.Value) {
	if f.def == "" {
		d.defaults(n, fv)
		return
	}
	if !fv.IsZero() {
		return
	}
	var doc yaml.Node
	if err := yaml.Unmarshal([]byte(f.def), &doc); err != nil || len(doc.Content) != 1 {
		d.errorf(n, "key %q: invalid default %q", f.name, f.def)
		return
	}
	before := len(d.errs)
	d.value(doc.Content[0], fv)
	for _, e := range d.errs[before:] {
		// A default that does not decode is the component's mistake.
		e.Line, e.Col = 0, 0
		if n != nil {
			e.Line, e.Col = n.Line, n.Column
		}
		e.Msg = fmt.Sprintf("key %q: default %q: %s", f.name, f.def, e.Msg)
	}
}

// plainStruct reports whether t is decoded key by key (not by an
// Unmarshaler, a TextUnmarshaler, or as a raw node).
func plainStruct(t reflect.Type) bool {
	if t.Kind() != reflect.Struct || t == nodeType {
		return false
	}
	p := reflect.PointerTo(t)
	return !p.Implements(unmarshalerType) && !p.Implements(textType)
}

type decoder struct {
	errs Errors
	// expanding holds the aliases being decoded, to stop self-reference;
	// expanded counts the nodes visited through aliases, to stop
	// exponential expansion; overflow is set once it passed MaxExpandedNodes.
	expanding map[*yaml.Node]bool
	via       *yaml.Node // the outermost alias being expanded
	expanded  int
	overflow  bool
}

// maxErrors bounds the errors one Decode reports: past it, decoding stops.
// (One mistake inside an anchored node repeats at each alias of it.)
const maxErrors = 100

func (d *decoder) errorf(n *yaml.Node, format string, args ...any) {
	d.errs = append(d.errs, Errorf(n, format, args...))
	d.limitErrors(n)
}

func (d *decoder) add(err error, n *yaml.Node) {
	d.errs = append(d.errs, Positioned(err, n)...)
	d.limitErrors(n)
}

func (d *decoder) limitErrors(n *yaml.Node) {
	if len(d.errs) >= maxErrors && !d.overflow {
		d.overflow = true
		d.errs = append(d.errs, Errorf(n, "too many errors; stopped decoding here"))
	}
}

var (
	nodeType        = reflect.TypeFor[yaml.Node]()
	unmarshalerType = reflect.TypeFor[Unmarshaler]()
	textType        = reflect.TypeFor[encoding.TextUnmarshaler]()
)

// resolve follows documents and aliases to the node that holds the value.
func resolve(n *yaml.Node) *yaml.Node {
	for n != nil {
		switch {
		case n.Kind == yaml.DocumentNode && len(n.Content) == 1:
			n = n.Content[0]
		case n.Kind == yaml.AliasNode && n.Alias != nil:
			n = n.Alias
		default:
			return n
		}
	}
	return n
}

func isNull(n *yaml.Node) bool {
	return n.Kind == 0 || n.Kind == yaml.DocumentNode && len(n.Content) == 0 ||
		n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null"
}

func (d *decoder) value(n *yaml.Node, v reflect.Value) {
	// Raw nodes pass through untouched (with their original position).
	if v.Type() == nodeType {
		v.Set(reflect.ValueOf(*n))
		return
	}
	if v.Kind() == reflect.Pointer && v.Type().Elem() == nodeType {
		v.Set(reflect.ValueOf(n))
		return
	}
	if d.overflow {
		return
	}
	if len(d.expanding) > 0 {
		d.expanded++
		if d.expanded > MaxExpandedNodes {
			d.overflow = true
			d.errorf(d.via, "YAML aliases expand to more than %d nodes (through alias *%s); write the values out or use fewer aliases", MaxExpandedNodes, d.via.Value)
			return
		}
	}
	switch n.Kind {
	case yaml.DocumentNode:
		if len(n.Content) == 1 {
			d.value(n.Content[0], v)
		}
		return
	case yaml.AliasNode:
		if n.Alias == nil {
			d.errorf(n, "invalid alias")
			return
		}
		if d.expanding[n] {
			d.errorf(n, "alias *%s refers to itself", n.Value)
			return
		}
		if d.expanding == nil {
			d.expanding = map[*yaml.Node]bool{}
		}
		if len(d.expanding) == 0 {
			d.via = n
		}
		d.expanding[n] = true
		defer delete(d.expanding, n)
		d.value(n.Alias, v)
		return
	}
	if isNull(n) {
		return
	}
	if v.Kind() == reflect.Pointer {
		if v.IsNil() {
			v.Set(reflect.New(v.Type().Elem()))
		}
		d.value(n, v.Elem())
		return
	}
	if v.CanAddr() {
		p := v.Addr()
		if p.Type().Implements(unmarshalerType) {
			if err := p.Interface().(Unmarshaler).UnmarshalConfig(n); err != nil {
				d.add(err, n)
			}
			return
		}
		if p.Type().Implements(textType) {
			if n.Kind != yaml.ScalarNode {
				d.errorf(n, "expected a scalar value, got %s", describe(n))
				return
			}
			if err := p.Interface().(encoding.TextUnmarshaler).UnmarshalText([]byte(n.Value)); err != nil {
				d.errorf(n, "invalid value %q: %v", n.Value, err)
			}
			return
		}
	}
	switch v.Kind() {
	case reflect.Struct:
		d.structure(n, v)
	case reflect.Map:
		d.mapping(n, v)
	case reflect.Slice:
		d.sequence(n, v)
	case reflect.Array:
		d.array(n, v)
	case reflect.String:
		if n.Kind != yaml.ScalarNode {
			d.errorf(n, "expected a string, got %s", describe(n))
			return
		}
		v.SetString(n.Value)
	case reflect.Bool:
		if n.Kind != yaml.ScalarNode || n.ShortTag() != "!!bool" {
			d.errorf(n, "expected true or false, got %s", describe(n))
			return
		}
		var b bool
		if err := n.Decode(&b); err != nil {
			d.errorf(n, "expected true or false, got %s", describe(n))
			return
		}
		v.SetBool(b)
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		var i int64
		if n.Kind != yaml.ScalarNode || n.ShortTag() != "!!int" || n.Decode(&i) != nil {
			d.errorf(n, "expected an integer, got %s", describe(n))
			return
		}
		if v.OverflowInt(i) {
			d.errorf(n, "integer %s out of range for %s", n.Value, v.Type())
			return
		}
		v.SetInt(i)
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr:
		if n.Kind == yaml.ScalarNode && n.ShortTag() == "!!int" && strings.HasPrefix(n.Value, "-") {
			d.errorf(n, "expected a non-negative integer, got %s", n.Value)
			return
		}
		var u uint64
		if n.Kind != yaml.ScalarNode || n.ShortTag() != "!!int" || n.Decode(&u) != nil {
			d.errorf(n, "expected a non-negative integer, got %s", describe(n))
			return
		}
		if v.OverflowUint(u) {
			d.errorf(n, "integer %s out of range for %s", n.Value, v.Type())
			return
		}
		v.SetUint(u)
	case reflect.Float32, reflect.Float64:
		var f float64
		tag := n.ShortTag()
		if n.Kind != yaml.ScalarNode || (tag != "!!int" && tag != "!!float") || n.Decode(&f) != nil {
			d.errorf(n, "expected a number, got %s", describe(n))
			return
		}
		if v.Kind() == reflect.Float32 && math.Abs(f) > math.MaxFloat32 && !math.IsInf(f, 0) {
			d.errorf(n, "number %s out of range for float32", n.Value)
			return
		}
		v.SetFloat(f)
	case reflect.Interface:
		if v.NumMethod() != 0 {
			d.errorf(n, "cannot decode into %s", v.Type())
			return
		}
		var x any
		if err := n.Decode(&x); err != nil {
			d.errorf(n, "%v", err)
			return
		}
		if x != nil {
			v.Set(reflect.ValueOf(x))
		}
	default:
		d.errorf(n, "cannot decode into %s", v.Type())
	}
}

// field is one key of a struct.
type field struct {
	name     string
	index    []int
	required bool
	def      string // the `default` tag
	sf       reflect.StructField
}

// fields lists the keys of struct type t, following inline fields.
func fields(t reflect.Type) []field {
	var out []field
	for i := 0; i < t.NumField(); i++ {
		sf := t.Field(i)
		tag := sf.Tag.Get("yaml")
		if tag == "-" {
			continue
		}
		name, opts, _ := strings.Cut(tag, ",")
		inline, required := false, false
		for _, o := range strings.Split(opts, ",") {
			switch o {
			case "inline":
				inline = true
			case "required":
				required = true
			}
		}
		if inline {
			ft := sf.Type
			if ft.Kind() == reflect.Struct {
				for _, f := range fields(ft) {
					f.index = append([]int{i}, f.index...)
					out = append(out, f)
				}
				continue
			}
		}
		if !sf.IsExported() {
			continue
		}
		if name == "" {
			name = strings.ToLower(sf.Name)
		}
		if sf.Tag.Get("required") == "true" {
			required = true
		}
		out = append(out, field{name: name, index: []int{i}, required: required, def: sf.Tag.Get("default"), sf: sf})
	}
	return out
}

func (d *decoder) structure(n *yaml.Node, v reflect.Value) {
	if n.Kind != yaml.MappingNode {
		d.errorf(n, "expected a mapping, got %s", describe(n))
		return
	}
	fs := fields(v.Type())
	byName := make(map[string]*field, len(fs))
	for i := range fs {
		byName[fs[i].name] = &fs[i]
	}
	seen := make(map[string]bool, len(n.Content)/2)
	set := make(map[string]bool, len(n.Content)/2) // keys with a non-null value
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, val := resolve(n.Content[i]), n.Content[i+1]
		if k.Kind != yaml.ScalarNode {
			d.errorf(k, "expected a key, got %s", describe(k))
			continue
		}
		if k.Value == "<<" {
			d.errorf(k, "merge keys (<<) are not supported")
			continue
		}
		f := byName[k.Value]
		if f == nil {
			d.errorf(k, "unknown key %q (valid keys: %s)", k.Value, validKeys(fs))
			continue
		}
		if seen[k.Value] {
			d.errorf(k, "duplicate key %q", k.Value)
			continue
		}
		seen[k.Value], set[k.Value] = true, true
		d.value(val, fieldByIndex(v, f.index))
		if isNull(resolve(val)) {
			set[k.Value] = false // a null key takes its default
		}
	}
	for _, f := range fs {
		if f.required && !seen[f.name] {
			if doc := f.sf.Tag.Get("doc"); doc != "" {
				d.errorf(n, "missing required key %q: %s", f.name, doc)
			} else {
				d.errorf(n, "missing required key %q", f.name)
			}
		}
		if !set[f.name] {
			d.fieldDefault(n, f, fieldByIndex(v, f.index))
		}
	}
}

// fieldByIndex is v.FieldByIndex that allocates nil embedded pointers.
func fieldByIndex(v reflect.Value, index []int) reflect.Value {
	for i, x := range index {
		if i > 0 && v.Kind() == reflect.Pointer {
			if v.IsNil() {
				v.Set(reflect.New(v.Type().Elem()))
			}
			v = v.Elem()
		}
		v = v.Field(x)
	}
	return v
}

func validKeys(fs []field) string {
	names := make([]string, len(fs))
	for i, f := range fs {
		names[i] = f.name
	}
	sort.Strings(names)
	if len(names) == 0 {
		return "none"
	}
	return strings.Join(names, ", ")
}

func (d *decoder) mapping(n *yaml.Node, v reflect.Value) {
	if n.Kind != yaml.MappingNode {
		d.errorf(n, "expected a mapping, got %s", describe(n))
		return
	}
	t := v.Type()
	if t.Key().Kind() != reflect.String {
		d.errorf(n, "cannot decode into %s: keys must be strings", t)
		return
	}
	if v.IsNil() {
		v.Set(reflect.MakeMapWithSize(t, len(n.Content)/2))
	}
	seen := make(map[string]bool, len(n.Content)/2)
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, val := resolve(n.Content[i]), n.Content[i+1]
		if k.Kind != yaml.ScalarNode {
			d.errorf(k, "expected a key, got %s", describe(k))
			continue
		}
		if seen[k.Value] {
			d.errorf(k, "duplicate key %q", k.Value)
			continue
		}
		seen[k.Value] = true
		e := reflect.New(t.Elem()).Elem()
		if old := v.MapIndex(reflect.ValueOf(k.Value).Convert(t.Key())); old.IsValid() {
			e.Set(old)
		}
		before := len(d.errs)
		d.value(val, e)
		if len(d.errs) == before {
			v.SetMapIndex(reflect.ValueOf(k.Value).Convert(t.Key()), e)
		}
	}
}

func (d *decoder) sequence(n *yaml.Node, v reflect.Value) {
	if n.Kind != yaml.SequenceNode {
		d.errorf(n, "expected a list, got %s", describe(n))
		return
	}
	s := reflect.MakeSlice(v.Type(), len(n.Content), len(n.Content))
	for i, item := range n.Content {
		d.value(item, s.Index(i))
	}
	v.Set(s)
}

func (d *decoder) array(n *yaml.Node, v reflect.Value) {
	if n.Kind != yaml.SequenceNode {
		d.errorf(n, "expected a list, got %s", describe(n))
		return
	}
	if len(n.Content) != v.Len() {
		d.errorf(n, "expected a list of %d items, got %d", v.Len(), len(n.Content))
		return
	}
	for i, item := range n.Content {
		d.value(item, v.Index(i))
	}
}

// describe names what n holds, for error messages.
func describe(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		kind := "string"
		switch n.ShortTag() {
		case "!!int":
			kind = "integer"
		case "!!float":
			kind = "number"
		case "!!bool":
			kind = "boolean"
		case "!!null":
			return "null"
		}
		return fmt.Sprintf("%s %q", kind, n.Value)
	case yaml.AliasNode:
		return "an alias"
	case yaml.DocumentNode:
		return "a document"
	}
	return "nothing"
}
