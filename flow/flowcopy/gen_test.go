package flowcopy

import (
	"bytes"
	"fmt"
	"go/format"
	"os"
	"reflect"
	"slices"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	flowpb "github.com/flowbus/flowbus/flow"
)

// aliases names the packages the generated code refers to.
var aliases = map[string]string{
	"github.com/flowbus/flowbus/flow":                    "flowpb",
	"google.golang.org/protobuf/types/known/anypb":       "anypb",
	"google.golang.org/protobuf/types/known/timestamppb": "timestamppb",
	"google.golang.org/protobuf/types/known/wrapperspb":  "wrapperspb",
}

// generator writes one copy function per message type reachable from the
// roots.
type generator struct {
	out     bytes.Buffer
	done    map[reflect.Type]bool
	queue   []reflect.Type
	imports map[string]bool
}

func (g *generator) qual(t reflect.Type) string {
	a, ok := aliases[t.PkgPath()]
	if !ok {
		panic(fmt.Sprintf("flowcopy: no alias for package %s", t.PkgPath()))
	}
	g.imports[t.PkgPath()] = true
	return a + "." + t.Name()
}

// fn is the name of the copy function of message type t (a struct type).
func (g *generator) fn(t reflect.Type) string {
	if !g.done[t] {
		g.done[t] = true
		g.queue = append(g.queue, t)
	}
	if aliases[t.PkgPath()] == "flowpb" {
		return "copy" + t.Name()
	}
	a := aliases[t.PkgPath()]
	return "copy" + strings.ToUpper(a[:1]) + a[1:] + t.Name()
}

var protoMessage = reflect.TypeFor[proto.Message]()

func isMessagePtr(t reflect.Type) bool {
	return t.Kind() == reflect.Pointer && t.Elem().Kind() == reflect.Struct && t.Implements(protoMessage)
}

var stringType = reflect.TypeFor[string]()

// value writes the copy of one field's value, src into dst (Go expressions
// of type t). Every string goes through the copier ss (str, strList); the
// generated functions take it as their last argument.
func (g *generator) value(w *strings.Builder, dst, src string, t reflect.Type) {
	switch {
	case isMessagePtr(t):
		fmt.Fprintf(w, "if %s == nil {\n%s = nil\n} else {\nif %s == nil {\n%s = new(%s)\n}\n%s(%s, %s, ss)\n}\n",
			src, dst, dst, dst, g.qual(t.Elem()), g.fn(t.Elem()), dst, src)
	case t.Kind() == reflect.Slice && isMessagePtr(t.Elem()):
		e := t.Elem().Elem()
		fmt.Fprintf(w, "%s = resize(%s, len(%s))\nfor i, s := range %s {\nd := %s[i]\nif d == nil {\nd = new(%s)\n%s[i] = d\n}\nif s != nil {\n%s(d, s, ss)\n}\n}\n",
			dst, dst, src, src, dst, g.qual(e), dst, g.fn(e))
	case t.Kind() == reflect.Slice && t.Elem() == stringType:
		fmt.Fprintf(w, "%s = strList(%s, %s, ss)\n", dst, dst, src)
	case t.Kind() == reflect.Slice:
		if k := t.Elem().Kind(); k == reflect.Slice || k == reflect.Pointer || k == reflect.Map || k == reflect.String {
			panic(fmt.Sprintf("flowcopy: unsupported list type %s", t))
		}
		fmt.Fprintf(w, "%s = append(%s[:0], %s...)\n", dst, dst, src)
	case t.Kind() == reflect.Map || t.Kind() == reflect.Pointer || t.Kind() == reflect.Interface:
		panic(fmt.Sprintf("flowcopy: unsupported field type %s", t))
	case t == stringType:
		fmt.Fprintf(w, "%s = str(%s, ss)\n", dst, src)
	case t.Kind() == reflect.String:
		panic(fmt.Sprintf("flowcopy: unsupported string type %s", t))
	default:
		fmt.Fprintf(w, "%s = %s\n", dst, src)
	}
}

// oneofWrappers returns the Go wrapper types of the oneof whose Go field is
// goField in message type t, found by setting each member through
// reflection.
func oneofWrappers(t reflect.Type, goField string, name string) []reflect.Type {
	var out []reflect.Type
	m := reflect.New(t).Interface().(proto.Message).ProtoReflect()
	od := m.Descriptor().Oneofs().ByName(protoreflect.Name(name))
	for i := range od.Fields().Len() {
		fd := od.Fields().Get(i)
		n := m.New()
		if fd.Message() != nil {
			n.Set(fd, n.NewField(fd))
		} else {
			n.Set(fd, fd.Default())
		}
		v := reflect.ValueOf(n.Interface()).Elem().FieldByName(goField)
		out = append(out, v.Elem().Type())
	}
	return out
}

func (g *generator) message(t reflect.Type) {
	var w strings.Builder
	fmt.Fprintf(&w, "\nfunc %s(dst, src *%s, ss Strings) {\n", g.fn(t), g.qual(t))
	for i := range t.NumField() {
		f := t.Field(i)
		if !f.IsExported() {
			continue
		}
		if name, ok := f.Tag.Lookup("protobuf_oneof"); ok {
			fmt.Fprintf(&w, "switch s := src.%s.(type) {\ncase nil:\ndst.%s = nil\n", f.Name, f.Name)
			for _, wt := range oneofWrappers(t, f.Name, name) {
				inner := wt.Elem().Field(0)
				fmt.Fprintf(&w, "case *%s:\nd, ok := dst.%s.(*%s)\nif !ok {\nd = new(%s)\ndst.%s = d\n}\n",
					g.qual(wt.Elem()), f.Name, g.qual(wt.Elem()), g.qual(wt.Elem()), f.Name)
				g.value(&w, "d."+inner.Name, "s."+inner.Name, inner.Type)
			}
			w.WriteString("}\n")
			continue
		}
		g.value(&w, "dst."+f.Name, "src."+f.Name, f.Type)
	}
	w.WriteString("}\n")
	g.out.WriteString(w.String())
}

func generate() []byte {
	g := &generator{done: map[reflect.Type]bool{}, imports: map[string]bool{}}
	var body bytes.Buffer
	body.WriteString(`
// Flow makes dst a deep copy of src, reusing dst's storage. dst shares
// src's strings.
func Flow(dst, src *flowpb.Flow) { copyFlow(dst, src, nil) }

// FlowOwned makes dst a deep copy of src, reusing dst's storage, with
// every non-empty string of src copied by ss.
func FlowOwned(dst, src *flowpb.Flow, ss Strings) { copyFlow(dst, src, ss) }

// LostEvent makes dst a deep copy of src, reusing dst's storage. dst
// shares src's strings.
func LostEvent(dst, src *flowpb.LostEvent) { copyLostEvent(dst, src, nil) }

// LostEventOwned makes dst a deep copy of src, reusing dst's storage, with
// every non-empty string of src copied by ss.
func LostEventOwned(dst, src *flowpb.LostEvent, ss Strings) { copyLostEvent(dst, src, ss) }
`)
	g.fn(reflect.TypeFor[flowpb.Flow]())
	g.fn(reflect.TypeFor[flowpb.LostEvent]())
	for len(g.queue) > 0 {
		t := g.queue[0]
		g.queue = g.queue[1:]
		g.message(t)
	}
	body.Write(g.out.Bytes())
	var src bytes.Buffer
	src.WriteString("// Code generated by gen_test.go (FLOWBUS_UPDATE=1 go test ./flow/flowcopy/); DO NOT EDIT.\n\npackage flowcopy\n\nimport (\n")
	paths := make([]string, 0, len(g.imports))
	for p := range g.imports {
		paths = append(paths, p)
	}
	slices.Sort(paths)
	for _, p := range paths {
		fmt.Fprintf(&src, "%s %q\n", aliases[p], p)
	}
	src.WriteString(")\n")
	src.Write(body.Bytes())
	out, err := format.Source(src.Bytes())
	if err != nil {
		panic(fmt.Sprintf("flowcopy: generated code does not parse: %v\n%s", err, src.Bytes()))
	}
	return out
}

// TestGenerated checks that copy_gen.go is what the schema generates now.
func TestGenerated(t *testing.T) {
	want := generate()
	const file = "copy_gen.go"
	if os.Getenv("FLOWBUS_UPDATE") != "" {
		if err := os.WriteFile(file, want, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	got, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("%s is stale: run FLOWBUS_UPDATE=1 go test ./flow/flowcopy/ and commit it", file)
	}
}
