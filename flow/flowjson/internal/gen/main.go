// Command gen writes flowjson's generated encoder and decoder
// (zz_generated.go) from the compiled flow schema's descriptors: one
// append-style JSON encoder and one decoder per message reachable from
// flow.Flow and flow.LostEvent, with fields in declaration order, proto and
// JSON names, and the Go names taken from the generated structs.
//
// With -protobuf it writes codec's binary encoder (zz_protobuf.go), with
// -pbdecode codec's binary decoder into reused storage (zz_pbdecode.go).
//
// Run it with go generate in flow/flowjson and codec after changing
// flow.proto.
package main

import (
	"bytes"
	"flag"
	"fmt"
	"go/format"
	"log"
	"os"
	"reflect"
	"strconv"
	"strings"

	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"

	flowpb "github.com/flowbus/flowbus/flow"
)

const (
	fullTimestamp = "google.protobuf.Timestamp"
	fullAny       = "google.protobuf.Any"
	fullFlow      = "flow.Flow"
	fullEndpoint  = "flow.Endpoint"
)

// wrappers maps the supported wrapper messages to their value's kind.
var wrappers = map[protoreflect.FullName]string{
	"google.protobuf.BoolValue":   "bool",
	"google.protobuf.Int32Value":  "int32",
	"google.protobuf.UInt32Value": "uint32",
}

var pkgAlias = map[string]string{
	"github.com/flowbus/flowbus/flow":                    "flowpb",
	"google.golang.org/protobuf/types/known/timestamppb": "timestamppb",
	"google.golang.org/protobuf/types/known/wrapperspb":  "wrapperspb",
	"google.golang.org/protobuf/types/known/anypb":       "anypb",
}

type gen struct {
	buf   bytes.Buffer
	msgs  []protoreflect.MessageDescriptor
	enums []protoreflect.EnumDescriptor
	seen  map[protoreflect.FullName]bool
}

func (g *gen) p(format string, args ...any) { fmt.Fprintf(&g.buf, format+"\n", args...) }

func isSpecial(md protoreflect.MessageDescriptor) bool {
	n := md.FullName()
	return n == fullTimestamp || n == fullAny || wrappers[n] != ""
}

func (g *gen) collect(md protoreflect.MessageDescriptor) {
	if g.seen[md.FullName()] {
		return
	}
	g.seen[md.FullName()] = true
	if isSpecial(md) {
		return
	}
	g.msgs = append(g.msgs, md)
	fields := md.Fields()
	for i := 0; i < fields.Len(); i++ {
		fd := fields.Get(i)
		switch fd.Kind() {
		case protoreflect.MessageKind:
			g.collect(fd.Message())
		case protoreflect.EnumKind:
			if !g.seen[fd.Enum().FullName()] {
				g.seen[fd.Enum().FullName()] = true
				g.enums = append(g.enums, fd.Enum())
			}
		case protoreflect.BoolKind, protoreflect.Int32Kind, protoreflect.Uint32Kind,
			protoreflect.Int64Kind, protoreflect.Uint64Kind, protoreflect.StringKind:
		default:
			log.Fatalf("%s: unsupported kind %v", fd.FullName(), fd.Kind())
		}
		if fd.IsMap() {
			log.Fatalf("%s: maps are not supported", fd.FullName())
		}
	}
}

// goType returns the qualified Go type of a message or enum.
func goType(t reflect.Type) string {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	alias, ok := pkgAlias[t.PkgPath()]
	if !ok {
		log.Fatalf("no alias for package %s", t.PkgPath())
	}
	return alias + "." + t.Name()
}

func msgGoType(md protoreflect.MessageDescriptor) reflect.Type {
	mt, err := protoregistry.GlobalTypes.FindMessageByName(md.FullName())
	if err != nil {
		log.Fatalf("%s: %v", md.FullName(), err)
	}
	return reflect.TypeOf(mt.Zero().Interface())
}

func enumGoType(ed protoreflect.EnumDescriptor) string {
	et, err := protoregistry.GlobalTypes.FindEnumByName(ed.FullName())
	if err != nil {
		log.Fatalf("%s: %v", ed.FullName(), err)
	}
	return goType(reflect.TypeOf(et.New(0)))
}

// ident makes a Go identifier part from a full name.
func ident(n protoreflect.FullName) string {
	s := string(n)
	s = strings.TrimPrefix(s, "flow.")
	return strings.NewReplacer(".", "_").Replace(s)
}

// info describes one message's Go struct.
type info struct {
	md      protoreflect.MessageDescriptor
	goT     string
	field   map[protoreflect.FieldNumber]string // Go field name
	oneof   map[protoreflect.Name]string        // Go interface field name
	wrapper map[protoreflect.FieldNumber]string // oneof member wrapper type
	wfield  map[protoreflect.FieldNumber]string // oneof member wrapper's field
}

func structInfo(md protoreflect.MessageDescriptor) *info {
	rt := msgGoType(md)
	in := &info{md: md, goT: goType(rt), field: map[protoreflect.FieldNumber]string{},
		oneof: map[protoreflect.Name]string{}, wrapper: map[protoreflect.FieldNumber]string{},
		wfield: map[protoreflect.FieldNumber]string{}}
	st := rt.Elem()
	for i := 0; i < st.NumField(); i++ {
		sf := st.Field(i)
		if tag := sf.Tag.Get("protobuf"); tag != "" {
			n, err := strconv.Atoi(strings.Split(tag, ",")[1])
			if err != nil {
				log.Fatal(err)
			}
			in.field[protoreflect.FieldNumber(n)] = sf.Name
		}
		if tag := sf.Tag.Get("protobuf_oneof"); tag != "" {
			in.oneof[protoreflect.Name(tag)] = sf.Name
		}
	}
	mt, _ := protoregistry.GlobalTypes.FindMessageByName(md.FullName())
	fields := md.Fields()
	for i := 0; i < fields.Len(); i++ {
		fd := fields.Get(i)
		od := fd.ContainingOneof()
		if od == nil {
			continue
		}
		m := mt.New()
		m.Set(fd, m.NewField(fd))
		w := reflect.ValueOf(m.Interface()).Elem().FieldByName(in.oneof[od.Name()]).Elem().Type()
		in.wrapper[fd.Number()] = "*" + goType(w)
		in.wfield[fd.Number()] = w.Elem().Field(0).Name
	}
	return in
}

func main() {
	protobuf := flag.Bool("protobuf", false, "write codec's binary encoder instead")
	pbdecode := flag.Bool("pbdecode", false, "write codec's binary decoder instead")
	flag.Parse()
	out := "zz_generated.go"
	if flag.NArg() > 0 {
		out = flag.Arg(0)
	}
	g := &gen{seen: map[protoreflect.FullName]bool{}}
	g.collect((&flowpb.Flow{}).ProtoReflect().Descriptor())
	g.collect((&flowpb.LostEvent{}).ProtoReflect().Descriptor())
	if *protobuf {
		g.protobuf()
		g.write(out)
		return
	}
	if *pbdecode {
		g.pbDecode()
		g.write(out)
		return
	}

	g.p("// Code generated by flow/flowjson/internal/gen from flow.proto's descriptors. DO NOT EDIT.")
	g.p("")
	g.p("package flowjson")
	g.p("")
	g.p("import (")
	g.p("\t\"strconv\"")
	g.p("")
	g.p("\t\"google.golang.org/protobuf/types/known/timestamppb\"")
	g.p("\t\"google.golang.org/protobuf/types/known/wrapperspb\"")
	g.p("")
	g.p("\tflowpb \"github.com/flowbus/flowbus/flow\"")
	g.p(")")
	g.p("")
	g.p("var (")
	g.p("\t_ = timestamppb.Timestamp{}")
	g.p("\t_ = wrapperspb.BoolValue{}")
	g.p(")")
	for _, ed := range g.enums {
		g.enum(ed)
	}
	for _, md := range g.msgs {
		in := structInfo(md)
		g.encoder(in)
		g.decoder(in)
	}
	g.write(out)
}

func (g *gen) write(out string) {
	src, err := format.Source(g.buf.Bytes())
	if err != nil {
		os.WriteFile(out, g.buf.Bytes(), 0o644)
		log.Fatalf("format: %v", err)
	}
	if err := os.WriteFile(out, src, 0o644); err != nil {
		log.Fatal(err)
	}
}

func (g *gen) enum(ed protoreflect.EnumDescriptor) {
	id := ident(ed.FullName())
	vals := ed.Values()
	g.p("")
	g.p("// appendEnum%s appends the JSON of a %s: its name, or the bare number when unknown.", id, ed.FullName())
	g.p("func appendEnum%s(dst []byte, v int32) []byte {", id)
	g.p("\tswitch v {")
	done := map[protoreflect.EnumNumber]bool{}
	for i := 0; i < vals.Len(); i++ {
		v := vals.Get(i)
		if done[v.Number()] {
			continue
		}
		done[v.Number()] = true
		g.p("\tcase %d:", v.Number())
		g.p("\t\treturn append(dst, `\"%s\"`...)", v.Name())
	}
	g.p("\t}")
	g.p("\treturn strconv.AppendInt(dst, int64(v), 10)")
	g.p("}")
	g.p("")
	g.p("// parseEnum%s returns the number of a %s value name.", id, ed.FullName())
	g.p("func parseEnum%s(name []byte) (int32, bool) {", id)
	g.p("\tswitch string(name) {")
	for i := 0; i < vals.Len(); i++ {
		v := vals.Get(i)
		g.p("\tcase %q:", v.Name())
		g.p("\t\treturn %d, true", v.Number())
	}
	g.p("\t}")
	g.p("\treturn 0, false")
	g.p("}")
}

// key is the `"name":` prefix of a field.
func key(fd protoreflect.FieldDescriptor) string {
	return "`\"" + string(fd.Name()) + "\":`"
}

func (g *gen) encoder(in *info) {
	md := in.md
	id := ident(md.FullName())
	g.p("")
	g.p("// append%s appends the JSON object of a %s (a nil one is {}).", id, md.FullName())
	// A Flow's endpoints and node labels go through a cache (memo.go).
	cached := md.FullName() == fullFlow
	if cached {
		g.p("// Its endpoints and node labels go through c, which may be nil.")
		g.p("func append%s(dst []byte, m *%s, c *encodeCache) ([]byte, error) {", id, in.goT)
	} else {
		g.p("func append%s(dst []byte, m *%s) ([]byte, error) {", id, in.goT)
	}
	g.p("\tif m == nil {")
	g.p("\t\treturn append(dst, \"{}\"...), nil")
	g.p("\t}")
	g.p("\tvar err error")
	g.p("\t_ = err")
	g.p("\tdst = append(dst, '{')")
	fields := md.Fields()
	for i := 0; i < fields.Len(); i++ {
		fd := fields.Get(i)
		if od := fd.ContainingOneof(); od != nil {
			if od.Fields().Get(0) != fd {
				continue
			}
			g.p("\tswitch o := m.%s.(type) {", in.oneof[od.Name()])
			for j := 0; j < od.Fields().Len(); j++ {
				ofd := od.Fields().Get(j)
				if ofd.Kind() != protoreflect.MessageKind || isSpecial(ofd.Message()) {
					log.Fatalf("%s: only plain message oneof members are supported", ofd.FullName())
				}
				g.p("\tcase %s:", in.wrapper[ofd.Number()])
				g.p("\t\tif o != nil {")
				g.p("\t\t\tdst = append(dst, %s...)", key(ofd))
				g.p("\t\t\tif dst, err = append%s(dst, o.%s); err != nil {", ident(ofd.Message().FullName()), in.wfield[ofd.Number()])
				g.p("\t\t\t\treturn dst, fieldError(%q, err)", ofd.Name())
				g.p("\t\t\t}")
				g.p("\t\t\tdst = append(dst, ',')")
				g.p("\t\t}")
			}
			g.p("\t}")
			continue
		}
		name := in.field[fd.Number()]
		f := "m." + name
		if fd.IsList() && fd.Kind() == protoreflect.StringKind {
			call := "appendStrings"
			if cached && fd.Name() == "node_labels" {
				call = "c.appendNodeLabels"
			}
			g.guarded(fmt.Sprintf("len(%s) > 0", f), fd, fmt.Sprintf("%s(dst, %s)", call, f))
			continue
		}
		if fd.IsList() {
			if fd.Kind() != protoreflect.MessageKind || isSpecial(fd.Message()) {
				log.Fatalf("%s: unsupported list", fd.FullName())
			}
			g.p("\tif len(%s) > 0 {", f)
			g.p("\t\tdst = append(dst, %s...)", key(fd))
			g.p("\t\tdst = append(dst, '[')")
			g.p("\t\tfor i, v := range %s {", f)
			g.p("\t\t\tif i > 0 {")
			g.p("\t\t\t\tdst = append(dst, ',')")
			g.p("\t\t\t}")
			g.p("\t\t\tif dst, err = append%s(dst, v); err != nil {", ident(fd.Message().FullName()))
			g.p("\t\t\t\treturn dst, fieldError(%q, err)", fd.Name())
			g.p("\t\t\t}")
			g.p("\t\t}")
			g.p("\t\tdst = append(dst, \"],\"...)")
			g.p("\t}")
			continue
		}
		switch fd.Kind() {
		case protoreflect.BoolKind:
			g.p("\tif %s {", f)
			g.p("\t\tdst = append(dst, `\"%s\":true,`...)", fd.Name())
			g.p("\t}")
		case protoreflect.Int32Kind:
			g.p("\tif %s != 0 {", f)
			g.p("\t\tdst = append(dst, %s...)", key(fd))
			g.p("\t\tdst = strconv.AppendInt(dst, int64(%s), 10)", f)
			g.p("\t\tdst = append(dst, ',')")
			g.p("\t}")
		case protoreflect.Uint32Kind:
			g.p("\tif %s != 0 {", f)
			g.p("\t\tdst = append(dst, %s...)", key(fd))
			g.p("\t\tdst = strconv.AppendUint(dst, uint64(%s), 10)", f)
			g.p("\t\tdst = append(dst, ',')")
			g.p("\t}")
		case protoreflect.Int64Kind:
			g.p("\tif %s != 0 {", f)
			g.p("\t\tdst = append(dst, `\"%s\":\"`...)", fd.Name())
			g.p("\t\tdst = strconv.AppendInt(dst, int64(%s), 10)", f)
			g.p("\t\tdst = append(dst, \"\\\",\"...)")
			g.p("\t}")
		case protoreflect.Uint64Kind:
			g.p("\tif %s != 0 {", f)
			g.p("\t\tdst = append(dst, `\"%s\":\"`...)", fd.Name())
			g.p("\t\tdst = strconv.AppendUint(dst, uint64(%s), 10)", f)
			g.p("\t\tdst = append(dst, \"\\\",\"...)")
			g.p("\t}")
		case protoreflect.StringKind:
			g.guarded(f+` != ""`, fd, fmt.Sprintf("appendString(dst, %s)", f))
		case protoreflect.EnumKind:
			g.p("\tif %s != 0 {", f)
			g.p("\t\tdst = append(dst, %s...)", key(fd))
			g.p("\t\tdst = appendEnum%s(dst, int32(%s))", ident(fd.Enum().FullName()), f)
			g.p("\t\tdst = append(dst, ',')")
			g.p("\t}")
		case protoreflect.MessageKind:
			g.p("\tif %s != nil {", f)
			g.p("\t\tdst = append(dst, %s...)", key(fd))
			mn := fd.Message().FullName()
			switch {
			case mn == fullTimestamp:
				g.p("\t\tif dst, err = appendTimestamp(dst, %s.Seconds, %s.Nanos); err != nil {", f, f)
				g.p("\t\t\treturn dst, fieldError(%q, err)", fd.Name())
				g.p("\t\t}")
			case mn == fullAny:
				g.p("\t\tif dst, err = appendAny(dst, %s); err != nil {", f)
				g.p("\t\t\treturn dst, fieldError(%q, err)", fd.Name())
				g.p("\t\t}")
			case wrappers[mn] == "bool":
				g.p("\t\tdst = strconv.AppendBool(dst, %s.Value)", f)
			case wrappers[mn] == "int32":
				g.p("\t\tdst = strconv.AppendInt(dst, int64(%s.Value), 10)", f)
			case wrappers[mn] == "uint32":
				g.p("\t\tdst = strconv.AppendUint(dst, uint64(%s.Value), 10)", f)
			case cached && mn == fullEndpoint:
				g.p("\t\tif dst, err = c.appendEndpoint(dst, %s); err != nil {", f)
				g.p("\t\t\treturn dst, fieldError(%q, err)", fd.Name())
				g.p("\t\t}")
			default:
				g.p("\t\tif dst, err = append%s(dst, %s); err != nil {", ident(mn), f)
				g.p("\t\t\treturn dst, fieldError(%q, err)", fd.Name())
				g.p("\t\t}")
			}
			g.p("\t\tdst = append(dst, ',')")
			g.p("\t}")
		}
	}
	g.p("\treturn closeObject(dst), nil")
	g.p("}")
}

// guarded writes a field whose value call appends, when cond holds: its
// key, its value (an error wrapped with the field's name), a comma.
func (g *gen) guarded(cond string, fd protoreflect.FieldDescriptor, call string) {
	g.p("\tif %s {", cond)
	g.p("\t\tdst = append(dst, %s...)", key(fd))
	g.p("\t\tif dst, err = %s; err != nil {", call)
	g.p("\t\t\treturn dst, fieldError(%q, err)", fd.Name())
	g.p("\t\t}")
	g.p("\t\tdst = append(dst, ',')")
	g.p("\t}")
}

// keepList writes the statement that keeps list f of m as storage for the
// decode, keepf. A decoder's strings share the input it read (a line's
// copy, a message's slab): a list of strings is cleared to its capacity,
// so that old strings beyond the new length do not keep that alive.
func (g *gen) keepList(fd protoreflect.FieldDescriptor, f string) {
	g.p("\tkeep%s := m.%s[:0]", f, f)
	if fd.Kind() == protoreflect.StringKind {
		g.p("\tclear(keep%s[:cap(keep%s)])", f, f)
	}
}

// resetUnused writes the statements that reset the elements a message's
// lists of messages keep as storage beyond their length, at indent: a
// decoder's strings share the buffer it read, which old elements in pooled
// storage must not keep alive. Decoders run them when they return a
// complete message; the elements within the length are the message's own.
func (g *gen) resetUnused(in *info, indent string) {
	fields := in.md.Fields()
	for i := 0; i < fields.Len(); i++ {
		fd := fields.Get(i)
		if !fd.IsList() || fd.Kind() != protoreflect.MessageKind {
			continue
		}
		f := in.field[fd.Number()]
		g.p("%sfor _, x := range m.%s[len(m.%s):cap(m.%s)] {", indent, f, f, f)
		g.p("%s\tif x != nil {", indent)
		g.p("%s\t\t*x = %s{}", indent, goType(msgGoType(fd.Message())))
		g.p("%s\t}", indent)
		g.p("%s}", indent)
	}
}

// caseNames lists the names the decoder accepts for a field.
func caseNames(fd protoreflect.FieldDescriptor) string {
	names := []string{strconv.Quote(string(fd.Name()))}
	if fd.JSONName() != string(fd.Name()) {
		names = append(names, strconv.Quote(fd.JSONName()))
	}
	return strings.Join(names, ", ")
}

func (g *gen) decoder(in *info) {
	md := in.md
	id := ident(md.FullName())
	fields := md.Fields()
	g.p("")
	g.p("// members%s are the members' keys of a %s object as Hubble's exporter", id, md.FullName())
	g.p("// writes them (proto names), quoted and with their colon, in field order.")
	g.p("var members%s = [...]string{", id)
	for i := 0; i < fields.Len(); i++ {
		g.p("\t`%s`,", strconv.Quote(string(fields.Get(i).Name()))+":")
	}
	g.p("}")
	g.p("")
	g.p("// decode%s decodes a %s object into m with Reset semantics, reusing", id, md.FullName())
	g.p("// m's nested messages and lists as storage.")
	g.p("func (d *decoder) decode%s(m *%s) error {", id, in.goT)
	// Keep storage.
	for i := 0; i < fields.Len(); i++ {
		fd := fields.Get(i)
		if od := fd.ContainingOneof(); od != nil {
			if od.Fields().Get(0) == fd {
				g.p("\told%s := m.%s", in.oneof[od.Name()], in.oneof[od.Name()])
			}
			continue
		}
		name := in.field[fd.Number()]
		if fd.IsList() {
			g.keepList(fd, name)
		} else if fd.Kind() == protoreflect.MessageKind && fd.Message().FullName() != fullAny {
			g.p("\told%s := m.%s", name, name)
		}
	}
	// A composite literal rather than Reset: Reset also stores the
	// message's type information with an atomic exchange, a full memory
	// barrier per message that the whole-process profile charged about a
	// tenth of the file source's CPU (the first touch of cold, reused
	// storage); ProtoReflect stores it again when it finds it unset.
	g.p("\t*m = %s{}", in.goT)
	for i := 0; i < fields.Len(); i++ {
		fd := fields.Get(i)
		if fd.IsList() {
			name := in.field[fd.Number()]
			g.p("\tm.%s = keep%s", name, name)
		}
	}
	words := (fields.Len() + 63) / 64
	g.p("\tvar seen [%d]uint64", words)
	if md.Oneofs().Len() > 0 {
		g.p("\tvar seenOneof uint64")
	}
	g.p("\tif err := d.objectStart(); err != nil {")
	g.p("\t\treturn err")
	g.p("\t}")
	g.p("\tnext := 0")
	g.p("\tfor n := 0; ; n++ {")
	g.p("\t\tidx, key, more, err := d.member(n, members%s[:], next)", id)
	g.p("\t\tif err != nil {")
	g.p("\t\t\treturn err")
	g.p("\t\t}")
	g.p("\t\tif !more {")
	g.resetUnused(in, "\t\t\t")
	g.p("\t\t\treturn nil")
	g.p("\t\t}")
	g.p("\t\tif idx < 0 {")
	g.p("\t\t\tswitch string(key) {")
	for i := 0; i < fields.Len(); i++ {
		g.p("\t\t\tcase %s:", caseNames(fields.Get(i)))
		g.p("\t\t\t\tidx = %d", i)
	}
	g.p("\t\t\tdefault:")
	g.p("\t\t\t\treturn errFallback")
	g.p("\t\t\t}")
	g.p("\t\t}")
	g.p("\t\tnext = idx + 1")
	g.p("\t\tif seen[idx/64]&(1<<(idx%%64)) != 0 {")
	g.p("\t\t\treturn errFallback")
	g.p("\t\t}")
	g.p("\t\tseen[idx/64] |= 1 << (idx %% 64)")
	g.p("\t\tif d.null() {")
	g.p("\t\t\tcontinue")
	g.p("\t\t}")
	g.p("\t\tswitch idx {")
	for i := 0; i < fields.Len(); i++ {
		fd := fields.Get(i)
		g.p("\t\tcase %d: // %s", i, fd.Name())
		if od := fd.ContainingOneof(); od != nil {
			oi := od.Index()
			ofield := in.oneof[od.Name()]
			w := in.wrapper[fd.Number()]
			wf := in.wfield[fd.Number()]
			mt := goType(msgGoType(fd.Message()))
			g.p("\t\t\tif seenOneof&(1<<%d) != 0 {", oi)
			g.p("\t\t\t\treturn errFallback")
			g.p("\t\t\t}")
			g.p("\t\t\tseenOneof |= 1 << %d", oi)
			g.p("\t\t\tw, ok := old%s.(%s)", ofield, w)
			g.p("\t\t\tif !ok || w == nil {")
			g.p("\t\t\t\tw = &%s{}", strings.TrimPrefix(w, "*"))
			g.p("\t\t\t}")
			g.p("\t\t\tif w.%s == nil {", wf)
			g.p("\t\t\t\tw.%s = new(%s)", wf, mt)
			g.p("\t\t\t}")
			g.p("\t\t\tif err := d.decode%s(w.%s); err != nil {", ident(fd.Message().FullName()), wf)
			g.p("\t\t\t\treturn err")
			g.p("\t\t\t}")
			g.p("\t\t\tm.%s = w", ofield)
			continue
		}
		name := in.field[fd.Number()]
		f := "m." + name
		if fd.IsList() {
			g.p("\t\t\tif err := d.arrayStart(); err != nil {")
			g.p("\t\t\t\treturn err")
			g.p("\t\t\t}")
			g.p("\t\t\tfor i := 0; ; i++ {")
			g.p("\t\t\t\tmore, err := d.elem(i)")
			g.p("\t\t\t\tif err != nil {")
			g.p("\t\t\t\t\treturn err")
			g.p("\t\t\t\t}")
			g.p("\t\t\t\tif !more {")
			g.p("\t\t\t\t\tbreak")
			g.p("\t\t\t\t}")
			switch {
			case fd.Kind() == protoreflect.StringKind:
				g.p("\t\t\t\ts, err := d.str()")
				g.p("\t\t\t\tif err != nil {")
				g.p("\t\t\t\t\treturn err")
				g.p("\t\t\t\t}")
				g.p("\t\t\t\t%s = append(%s, s)", f, f)
			default:
				mt := goType(msgGoType(fd.Message()))
				g.p("\t\t\t\tvar x %s", "*"+mt)
				g.p("\t\t\t\tif k := len(%s); k < cap(%s) {", f, f)
				g.p("\t\t\t\t\t%s = %s[:k+1]", f, f)
				g.p("\t\t\t\t\tx = %s[k]", f)
				g.p("\t\t\t\t} else {")
				g.p("\t\t\t\t\t%s = append(%s, nil)", f, f)
				g.p("\t\t\t\t}")
				g.p("\t\t\t\tif x == nil {")
				g.p("\t\t\t\t\tx = new(%s)", mt)
				g.p("\t\t\t\t\t%s[len(%s)-1] = x", f, f)
				g.p("\t\t\t\t}")
				g.p("\t\t\t\tif err := d.decode%s(x); err != nil {", ident(fd.Message().FullName()))
				g.p("\t\t\t\t\treturn err")
				g.p("\t\t\t\t}")
			}
			g.p("\t\t\t}")
			continue
		}
		switch fd.Kind() {
		case protoreflect.BoolKind:
			g.p("\t\t\tv, err := d.boolean()")
		case protoreflect.Int32Kind:
			g.p("\t\t\tv, err := d.int32()")
		case protoreflect.Uint32Kind:
			g.p("\t\t\tv, err := d.uint32()")
		case protoreflect.Int64Kind:
			g.p("\t\t\tv, err := d.int64()")
		case protoreflect.Uint64Kind:
			g.p("\t\t\tv, err := d.uint64()")
		case protoreflect.StringKind:
			g.p("\t\t\tv, err := d.str()")
		case protoreflect.EnumKind:
			g.p("\t\t\tnum, err := d.enum(parseEnum%s)", ident(fd.Enum().FullName()))
			g.p("\t\t\tv := %s(num)", enumGoType(fd.Enum()))
		case protoreflect.MessageKind:
			mn := fd.Message().FullName()
			if mn == fullAny {
				// Any needs the type resolver: protojson decodes the line.
				g.p("\t\t\treturn errFallback")
				continue
			}
			mt := goType(msgGoType(fd.Message()))
			g.p("\t\t\tx := old%s", name)
			g.p("\t\t\tif x == nil {")
			g.p("\t\t\t\tx = new(%s)", mt)
			g.p("\t\t\t}")
			switch {
			case mn == fullTimestamp:
				g.p("\t\t\terr := d.timestamp(x)")
			case wrappers[mn] == "bool":
				g.p("\t\t\t*x = %s{}", mt)
				g.p("\t\t\tvar err error")
				g.p("\t\t\tx.Value, err = d.boolean()")
			case wrappers[mn] == "int32":
				g.p("\t\t\t*x = %s{}", mt)
				g.p("\t\t\tvar err error")
				g.p("\t\t\tx.Value, err = d.int32()")
			case wrappers[mn] == "uint32":
				g.p("\t\t\t*x = %s{}", mt)
				g.p("\t\t\tvar err error")
				g.p("\t\t\tx.Value, err = d.uint32()")
			default:
				g.p("\t\t\terr := d.decode%s(x)", ident(mn))
			}
			g.p("\t\t\tv := x")
		}
		g.p("\t\t\tif err != nil {")
		g.p("\t\t\t\treturn err")
		g.p("\t\t\t}")
		g.p("\t\t\t%s = v", f)
	}
	g.p("\t\t}")
	g.p("\t}")
	g.p("}")
}
