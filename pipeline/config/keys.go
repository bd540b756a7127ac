package config

import (
	"reflect"
	"strings"
)

// Key documents one key of a component's options, for the reference. The
// options struct is the single source of truth: Decode and Keys read the
// same tags.
//
//	yaml:"name"        the key (`,required` also makes it required)
//	doc:"…"            a one-line description
//	default:"…"        the value a missing key takes (see Decode)
//	required:"true"    a missing key is an error
//	example:"…"        an example value, when the default does not show one
//	type:"…"           the documented type, for fields Decode passes on as
//	                   raw nodes or that decode themselves
//	hidden:"true"      left out of the reference (a key that is decoded
//	                   only to reject it with a better message)
type Key struct {
	// Path is the dotted key path: `tls.ca_file`; items of a list of
	// mappings are `routes[].subject`.
	Path     string
	Type     string
	Default  string
	Required bool
	Doc      string
	Example  string
}

var durationType = reflect.TypeFor[Duration]()

// Keys lists the keys of the options struct v (a struct or a pointer to
// one), nested mappings and lists of mappings recursively, in field order.
func Keys(v any) []Key {
	t := reflect.TypeOf(v)
	for t != nil && t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t == nil || t.Kind() != reflect.Struct {
		return nil
	}
	var out []Key
	keys(t, "", &out)
	return out
}

func keys(t reflect.Type, prefix string, out *[]Key) {
	for _, f := range fields(t) {
		if f.sf.Tag.Get("hidden") == "true" {
			continue
		}
		path := prefix + f.name
		k := Key{
			Path:     path,
			Type:     f.sf.Tag.Get("type"),
			Default:  f.def,
			Required: f.required,
			Doc:      f.sf.Tag.Get("doc"),
			Example:  f.sf.Tag.Get("example"),
		}
		var sub reflect.Type
		subPrefix := ""
		if k.Type == "" {
			k.Type, sub = typeName(f.sf.Type)
			subPrefix = path + "."
			if st := deref(f.sf.Type); st.Kind() == reflect.Slice {
				subPrefix = path + "[]."
			}
		}
		if st := deref(f.sf.Type); sub == nil && st.Kind() == reflect.Struct && st != nodeType && documented(st) {
			// A struct that decodes itself (reconnect: false, or the
			// mapping) still lists the keys of its mapping form.
			sub, subPrefix = st, path+"."
		}
		*out = append(*out, k)
		if sub != nil {
			keys(sub, subPrefix, out)
		}
	}
}

// documented reports whether struct t has a field with a doc tag.
func documented(t reflect.Type) bool {
	for i := 0; i < t.NumField(); i++ {
		if t.Field(i).Tag.Get("doc") != "" {
			return true
		}
	}
	return false
}

func deref(t reflect.Type) reflect.Type {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	return t
}

// typeName names t for the reference; sub is the struct whose keys are
// documented below it (a mapping, or the items of a list of mappings).
func typeName(t reflect.Type) (name string, sub reflect.Type) {
	t = deref(t)
	switch {
	case t == durationType:
		return "duration", nil
	case t == nodeType:
		return "any", nil
	case reflect.PointerTo(t).Implements(unmarshalerType), reflect.PointerTo(t).Implements(textType):
		return strings.ToLower(t.Name()), nil
	}
	switch t.Kind() {
	case reflect.Struct:
		return "mapping", t
	case reflect.String:
		return "string", nil
	case reflect.Bool:
		return "boolean", nil
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return "integer", nil
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr:
		return "non-negative integer", nil
	case reflect.Float32, reflect.Float64:
		return "number", nil
	case reflect.Slice, reflect.Array:
		e, sub := typeName(t.Elem())
		if sub != nil {
			return "list of mappings", sub
		}
		return "list of " + plural(e), nil
	case reflect.Map:
		e, _ := typeName(t.Elem())
		return "mapping of string to " + e, nil
	}
	return "any", nil
}

func plural(s string) string {
	switch s {
	case "any":
		return "values"
	case "boolean", "string", "integer", "number", "duration", "mapping":
		return s + "s"
	case "non-negative integer":
		return "non-negative integers"
	}
	return s
}
