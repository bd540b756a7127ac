// Package fieldmask implements the `fieldmask` transform: it trims every
// flow to a set of field paths, with the semantics of Hubble's exporter
// field mask (`hubble-export-fieldmask`), or removes a set of paths.
//
// Its keys: `flowbus components fieldmask`, or docs/components.md.
//
// Include follows Hubble (pkg/hubble/parser/fieldmask): the paths are
// validated against flow.Flow and normalised (a path under another one is
// redundant); a leaf path keeps its field as it is, set or not; an interior
// path keeps the named sub-fields of its message. Hubble copies into a
// preallocated flow, so an interior message that is not a oneof member is
// always present in its output, empty if the flow had none: flowbus does the
// same. An interior path through a oneof member (l4.TCP.source_port) is only
// followed when that member is the active one; otherwise the oneof is left
// empty. (Hubble's exporter would show a stale or empty member there, left
// over in its reused flow; flowbus writes nothing.)
//
// The envelope's time and node_name are read from the masked flow, as in
// Hubble's exporter: a mask without `time` or `node_name` leaves them out of
// the envelope too. The same holds for exclude.
//
// Masking works in place on the event's flow with precomputed field
// descriptors, and allocates nothing unless it has to create an absent
// interior message.
package fieldmask

import (
	"reflect"
	"slices"
	"strconv"
	"strings"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"gopkg.in/yaml.v3"

	flowpb "github.com/flowbus/flowbus/flow"
	"github.com/flowbus/flowbus/flow/fieldpath"
	"github.com/flowbus/flowbus/pipeline"
	"github.com/flowbus/flowbus/pipeline/config"
)

func init() {
	pipeline.RegisterTransform(pipeline.Spec{
		Type:        "fieldmask",
		Summary:     "trims every flow to a set of field paths (Hubble's exporter field mask), or removes a set of paths",
		Description: `Set exactly one of include and exclude. Include has the semantics of Hubble's hubble-export-fieldmask: a leaf path keeps its field, an interior path keeps the named sub-fields, and the envelope's time and node_name are read from the masked flow, so a mask without them leaves them out of the envelope.`,
		Example: `type: fieldmask
inputs: [flows]
include: [time, node_name, source.namespace, source.pod_name, destination.namespace, destination.pod_name, verdict]
`,
	}, pipeline.DropsNone, FromOptions)
}

// Options is the YAML configuration of a fieldmask transform.
type Options struct {
	Include []Path `yaml:"include" type:"list of field paths" doc:"keep only these flow fields (source.pod_name, l4.TCP.destination_port)"`
	Exclude []Path `yaml:"exclude" type:"list of field paths" doc:"clear these flow fields, keep the rest"`
}

// Path is a field path read from the configuration, checked against
// flow.Flow when decoded.
type Path struct {
	fieldpath.Path
	Node *yaml.Node
}

// UnmarshalConfig implements config.Unmarshaler.
func (p *Path) UnmarshalConfig(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode || n.ShortTag() != "!!str" {
		return config.Errorf(n, "expected a field path like source.pod_name")
	}
	fp, err := fieldpath.Parse(n.Value)
	if err != nil {
		return config.Errorf(n, "%v", err)
	}
	p.Path, p.Node = fp, n
	return nil
}

// FromOptions builds a fieldmask transform from its decoded options.
func FromOptions(b *pipeline.Build, o *Options) (*Mask, error) {
	switch {
	case len(o.Include) > 0 && len(o.Exclude) > 0:
		return nil, b.Errorf("", "set include or exclude, not both")
	case len(o.Include) == 0 && len(o.Exclude) == 0:
		return nil, b.Errorf("", "set include or exclude to a non-empty list of field paths")
	}
	if len(o.Include) > 0 {
		return NewInclude(paths(o.Include)), nil
	}
	return NewExclude(paths(o.Exclude)), nil
}

func paths(ps []Path) []fieldpath.Path {
	out := make([]fieldpath.Path, len(ps))
	for i, p := range ps {
		out[i] = p.Path
	}
	return out
}

// Mask is a fieldmask transform.
type Mask struct {
	include *level           // include mode: the tree of kept fields
	exclude []fieldpath.Path // exclude mode: the paths to clear
}

// level is one message of the include tree.
type level struct {
	// goFields are the indexes of the Go struct fields that the mask
	// drops: the generated field of a proto field, or the interface field
	// of a oneof none of whose members is kept. Zeroing them through
	// reflect is several times faster than protoreflect's Clear, and does
	// not allocate.
	goFields []int
	// oneofs are oneofs with some members kept: the active member is
	// cleared unless kept.
	oneofs []oneof
	// clear lists dropped fields without a known Go field, cleared through
	// protoreflect (none for generated flow messages).
	clear []protoreflect.FieldDescriptor
	// sub lists the interior paths through this message.
	sub []sub
	// goOK is set when every part of this level and the levels under it
	// maps to generated Go struct fields, so that applyGo can be used:
	// it follows sub-messages with reflect.Value.Field and Elem, where
	// protoreflect's Mutable looks up a pointer type in a global map.
	goOK bool
}

type oneof struct {
	od   protoreflect.OneofDescriptor
	keep map[protoreflect.FieldNumber]bool
	// goField is the oneof's interface field and keepTypes the wrapper
	// types of its kept members.
	goField   int
	keepTypes []reflect.Type
}

type sub struct {
	fd    protoreflect.FieldDescriptor
	oneof protoreflect.OneofDescriptor // fd's oneof, or nil
	next  *level
	// goField is the Go field holding the message (the interface, for a
	// oneof member, with wrapper its wrapper type).
	goField int
	wrapper reflect.Type
}

// node is the include tree while it is built: nil children means the field
// is kept whole.
type node map[protoreflect.Name]node

// NewInclude returns a mask that keeps only the given paths.
func NewInclude(ps []fieldpath.Path) *Mask {
	root := node{}
	for _, p := range ps {
		n := root
		fds := p.Fields()
		for i, fd := range fds {
			child, seen := n[fd.Name()]
			if seen && child == nil {
				break // an enclosing path already keeps this field whole
			}
			if i == len(fds)-1 {
				n[fd.Name()] = nil // keep whole; drops any deeper paths
				break
			}
			if !seen {
				child = node{}
				n[fd.Name()] = child
			}
			n = child
		}
	}
	return &Mask{include: compile(flowDesc, root)}
}

var flowDesc = (&flowpb.Flow{}).ProtoReflect().Descriptor()

func compile(md protoreflect.MessageDescriptor, n node) *level {
	l := &level{}
	goIndex := goFieldIndexes(md)
	fds := md.Fields()
	keptOneofs := map[protoreflect.OneofDescriptor]map[protoreflect.FieldNumber]bool{}
	for i := range fds.Len() {
		fd := fds.Get(i)
		od := fd.ContainingOneof()
		if od != nil && od.IsSynthetic() {
			od = nil
		}
		child, kept := n[fd.Name()]
		if kept && od != nil {
			if keptOneofs[od] == nil {
				keptOneofs[od] = map[protoreflect.FieldNumber]bool{}
			}
			keptOneofs[od][fd.Number()] = true
		}
		if kept && child != nil {
			s := sub{fd: fd, oneof: od, next: compile(fd.Message(), child), goField: -1}
			if od != nil {
				if gi, ok := goIndex.oneofs[od.Name()]; ok {
					s.goField, s.wrapper = gi, goIndex.wrapper(gi, fd)
				}
			} else if gi, ok := goIndex.fields[fd.Number()]; ok {
				s.goField = gi
			}
			l.sub = append(l.sub, s)
		}
		if kept || od != nil {
			continue // oneofs are handled below, once each
		}
		if gi, ok := goIndex.fields[fd.Number()]; ok {
			l.goFields = append(l.goFields, gi)
		} else {
			l.clear = append(l.clear, fd)
		}
	}
	ods := md.Oneofs()
	for i := range ods.Len() {
		od := ods.Get(i)
		if od.IsSynthetic() {
			continue
		}
		keep := keptOneofs[od]
		gi, ok := goIndex.oneofs[od.Name()]
		switch {
		case keep != nil:
			o := oneof{od: od, keep: keep, goField: -1}
			if ok {
				o.goField = gi
				members := od.Fields()
				for j := range members.Len() {
					if fd := members.Get(j); keep[fd.Number()] {
						o.keepTypes = append(o.keepTypes, goIndex.wrapper(gi, fd))
					}
				}
			}
			l.oneofs = append(l.oneofs, o)
		case ok:
			l.goFields = append(l.goFields, gi)
		default:
			members := od.Fields()
			for j := range members.Len() {
				l.clear = append(l.clear, members.Get(j))
			}
		}
	}
	l.goOK = goIndex.t != nil && len(l.clear) == 0
	for _, o := range l.oneofs {
		l.goOK = l.goOK && o.goField >= 0 && !slices.Contains(o.keepTypes, nil)
	}
	for _, s := range l.sub {
		l.goOK = l.goOK && s.goField >= 0 && s.next.goOK && (s.oneof == nil) == (s.wrapper == nil)
	}
	return l
}

// goIndex maps proto fields and oneofs to the fields of the Go struct that
// protoc-gen-go generates for a message, read from the struct tags
// (`protobuf:"bytes,5,opt,name=IP,proto3"`, `protobuf_oneof:"protocol"`).
type goIndex struct {
	t      reflect.Type // the struct; nil if not found
	fields map[protoreflect.FieldNumber]int
	oneofs map[protoreflect.Name]int
}

// wrapper returns the wrapper type protoc-gen-go made for the oneof member
// fd, held in the interface field gi (*flow.Layer4_TCP for l4.TCP), by
// setting the member on a new message. It returns nil if that fails.
func (x goIndex) wrapper(gi int, fd protoreflect.FieldDescriptor) reflect.Type {
	if x.t == nil || fd.Message() == nil {
		return nil
	}
	m, ok := reflect.New(x.t).Interface().(proto.Message)
	if !ok {
		return nil
	}
	m.ProtoReflect().Mutable(fd)
	w := reflect.ValueOf(m).Elem().Field(gi)
	if w.IsNil() || w.Elem().Kind() != reflect.Pointer || w.Elem().Elem().NumField() != 1 {
		return nil
	}
	return w.Elem().Type()
}

func goFieldIndexes(md protoreflect.MessageDescriptor) goIndex {
	idx := goIndex{fields: map[protoreflect.FieldNumber]int{}, oneofs: map[protoreflect.Name]int{}}
	mt, err := protoregistry.GlobalTypes.FindMessageByName(md.FullName())
	if err != nil {
		return idx
	}
	t := reflect.TypeOf(mt.Zero().Interface())
	if t.Kind() != reflect.Pointer || t.Elem().Kind() != reflect.Struct {
		return idx
	}
	t = t.Elem()
	idx.t = t
	for i := range t.NumField() {
		sf := t.Field(i)
		if !sf.IsExported() {
			continue
		}
		if name, ok := sf.Tag.Lookup("protobuf_oneof"); ok {
			idx.oneofs[protoreflect.Name(name)] = i
			continue
		}
		tag, ok := sf.Tag.Lookup("protobuf")
		if !ok {
			continue
		}
		parts := strings.Split(tag, ",")
		if len(parts) < 2 {
			continue
		}
		num, err := strconv.Atoi(parts[1])
		if err != nil {
			continue
		}
		if fd := md.Fields().ByNumber(protoreflect.FieldNumber(num)); fd != nil && sf.Type.Kind() != reflect.Interface {
			idx.fields[fd.Number()] = i
		}
	}
	return idx
}

// NewExclude returns a mask that clears the given paths.
func NewExclude(ps []fieldpath.Path) *Mask {
	ps = slices.Clone(ps)
	// Clear deeper paths first so that a shorter path never hides them; the
	// result is the same in any order, this only avoids redundant work.
	slices.SortFunc(ps, func(a, b fieldpath.Path) int { return strings.Compare(a.String(), b.String()) })
	ps = slices.CompactFunc(ps, func(a, b fieldpath.Path) bool { return a.String() == b.String() })
	return &Mask{exclude: ps}
}

// Process masks every flow of b in place.
func (m *Mask) Process(b *pipeline.Batch) {
	for i := range b.Events {
		e := &b.Events[i]
		if e.Flow != nil {
			m.Apply(e)
		}
	}
}

// Apply masks e's flow and sets its envelope from the masked flow.
func (m *Mask) Apply(e *pipeline.Event) {
	f := e.Flow
	switch {
	case m.include != nil && m.include.goOK:
		m.include.applyGo(reflect.ValueOf(f).Elem())
	case m.include != nil:
		m.include.apply(f.ProtoReflect())
	default:
		for _, p := range m.exclude {
			p.Clear(f)
		}
	}
	e.Time = f.Time
	e.NodeName = f.NodeName
}

func (l *level) apply(m protoreflect.Message) {
	if len(l.goFields) > 0 {
		v := reflect.ValueOf(m.Interface()).Elem()
		for _, i := range l.goFields {
			v.Field(i).SetZero()
		}
	}
	for _, fd := range l.clear {
		m.Clear(fd)
	}
	for _, o := range l.oneofs {
		if fd := m.WhichOneof(o.od); fd != nil && !o.keep[fd.Number()] {
			m.Clear(fd)
		}
	}
	if m.GetUnknown() != nil {
		m.SetUnknown(nil)
	}
	for _, s := range l.sub {
		if s.oneof != nil {
			if m.WhichOneof(s.oneof) == s.fd {
				s.next.apply(m.Mutable(s.fd).Message())
			}
			continue
		}
		// Mutable creates the message when it is absent, as Hubble's
		// preallocated output flow always has it.
		s.next.apply(m.Mutable(s.fd).Message())
	}
}

// applyGo is apply on the generated struct v, through reflect only.
func (l *level) applyGo(v reflect.Value) {
	for _, i := range l.goFields {
		v.Field(i).SetZero()
	}
	for i := range l.oneofs {
		o := &l.oneofs[i]
		if fv := v.Field(o.goField); !fv.IsNil() && !slices.Contains(o.keepTypes, fv.Elem().Type()) {
			fv.SetZero()
		}
	}
	if m := v.Addr().Interface().(proto.Message).ProtoReflect(); m.GetUnknown() != nil {
		m.SetUnknown(nil)
	}
	for i := range l.sub {
		s := &l.sub[i]
		fv := v.Field(s.goField)
		if s.wrapper != nil {
			if fv.IsNil() || fv.Elem().Type() != s.wrapper {
				continue // not the active member
			}
			fv = fv.Elem().Elem().Field(0)
		}
		if fv.IsNil() {
			// Hubble's preallocated output flow always has the message.
			fv.Set(reflect.New(fv.Type().Elem()))
		}
		s.next.applyGo(fv.Elem())
	}
}
