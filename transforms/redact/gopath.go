package redact

import (
	"reflect"
	"strconv"
	"strings"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	flowpb "github.com/flowbus/flowbus/flow"
	"github.com/flowbus/flowbus/flow/fieldpath"
)

// goPath is a field path compiled to the Go structs that protoc-gen-go
// generates for flow.Flow. Following it with reflect.Value.Field and Elem
// costs a few nanoseconds a step and never allocates, where protoreflect's
// Get on a message field looks up a pointer type in a global map each time.
type goPath struct {
	steps []goStep // interior fields, from the Flow down
	leaf  goStep   // the field itself, in the last struct
}

// goStep is one field of a generated struct: a plain field, or a oneof
// member, held in the oneof's interface field inside a wrapper struct
// (Layer7.Record holding *Layer7_Dns{Dns: ...}).
type goStep struct {
	field   int          // index of the struct field (the interface, for a oneof member)
	wrapper reflect.Type // the member's wrapper type; nil for a plain field
}

// compileGoPath compiles p; ok is false when some step has no generated
// field (then callers use protoreflect).
func compileGoPath(p fieldpath.Path) (goPath, bool) {
	var g goPath
	t := reflect.TypeFor[flowpb.Flow]()
	fds := p.Fields()
	for i, fd := range fds {
		st, ok := compileStep(t, fd)
		if !ok {
			return goPath{}, false
		}
		if i == len(fds)-1 {
			g.leaf = st
			return g, true
		}
		g.steps = append(g.steps, st)
		// The type of the next struct: the pointer's element.
		ft := t.Field(st.field).Type
		if st.wrapper != nil {
			ft = st.wrapper.Elem().Field(0).Type
		}
		if ft.Kind() != reflect.Pointer || ft.Elem().Kind() != reflect.Struct {
			return goPath{}, false
		}
		t = ft.Elem()
	}
	return goPath{}, false
}

func compileStep(t reflect.Type, fd protoreflect.FieldDescriptor) (goStep, bool) {
	if od := fd.ContainingOneof(); od != nil && !od.IsSynthetic() {
		idx := -1
		for i := range t.NumField() {
			if t.Field(i).Tag.Get("protobuf_oneof") == string(od.Name()) {
				idx = i
			}
		}
		if idx < 0 || fd.Message() == nil {
			return goStep{}, false
		}
		// Learn the wrapper type by setting the member on a new message.
		m, ok := reflect.New(t).Interface().(proto.Message)
		if !ok {
			return goStep{}, false
		}
		m.ProtoReflect().Mutable(fd)
		w := reflect.ValueOf(m).Elem().Field(idx)
		if w.IsNil() || w.Elem().Kind() != reflect.Pointer || w.Elem().Elem().NumField() != 1 {
			return goStep{}, false
		}
		return goStep{field: idx, wrapper: w.Elem().Type()}, true
	}
	for i := range t.NumField() {
		sf := t.Field(i)
		parts := strings.Split(sf.Tag.Get("protobuf"), ",")
		if sf.IsExported() && len(parts) >= 2 && parts[1] == strconv.Itoa(int(fd.Number())) {
			return goStep{field: i}, true
		}
	}
	return goStep{}, false
}

// parent returns the struct that holds the leaf, if every message on the
// way is set.
func (g *goPath) parent(f *flowpb.Flow) (reflect.Value, bool) {
	v := reflect.ValueOf(f).Elem()
	for _, st := range g.steps {
		fv, ok := st.get(v)
		if !ok || fv.IsNil() {
			return reflect.Value{}, false
		}
		v = fv.Elem()
	}
	return v, true
}

// get returns the value of the field st in the struct v; for a oneof
// member, ok is false unless it is the active one.
func (st goStep) get(v reflect.Value) (reflect.Value, bool) {
	fv := v.Field(st.field)
	if st.wrapper == nil {
		return fv, true
	}
	if fv.IsNil() {
		return reflect.Value{}, false
	}
	w := fv.Elem()
	if w.Type() != st.wrapper || w.IsNil() {
		return reflect.Value{}, false
	}
	return w.Elem().Field(0), true
}

// clear clears the field at g in f, if its parent is set; a oneof member
// is cleared only when it is the active one.
func (g *goPath) clear(f *flowpb.Flow) {
	v, ok := g.parent(f)
	if !ok {
		return
	}
	if _, ok := g.leaf.get(v); ok {
		v.Field(g.leaf.field).SetZero()
	}
}
