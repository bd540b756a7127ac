// Package randflow builds sample and random flow.Flow and flow.LostEvent messages for
// codec tests: every field of the schema can be set, with hostile values
// (control characters, HTML characters, U+2028, non-ASCII, extreme
// integers, unknown enum numbers, empty-but-set messages, zero wrappers,
// Any extensions) and, when asked, values protojson refuses (invalid UTF-8,
// out-of-range timestamps, unresolvable Any types).
package randflow

import (
	"math"
	"math/rand/v2"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/timestamppb"

	flowpb "github.com/flowbus/flowbus/flow"
)

// Builder makes random messages from a seeded source.
type Builder struct {
	R *rand.Rand
	// Invalid allows values that make protojson fail (rarely chosen).
	Invalid bool
}

// New returns a Builder seeded with seed.
func New(seed uint64, invalid bool) *Builder {
	return &Builder{R: rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)), Invalid: invalid}
}

// Flow returns a random flow.
func (b *Builder) Flow() *flowpb.Flow {
	f := new(flowpb.Flow)
	b.fill(f.ProtoReflect(), 0)
	return f
}

// LostEvent returns a random lost event.
func (b *Builder) LostEvent() *flowpb.LostEvent {
	l := new(flowpb.LostEvent)
	b.fill(l.ProtoReflect(), 0)
	return l
}

var pieces = []string{
	"", "a", "default", "kube-system", "10.0.0.1", "fd00::1", "k8s:app=frontend",
	"reserved:host", "GET", "http://x/?a=1&b=<2>", "<script>", "&amp;", "\"quoted\"",
	`back\slash`, "/slash/", "tab\there", "new\nline", "\r\b\f", "\x00", "\x01\x1f", "\x7f",
	"é", "日本語", "🙂", "\u2028", "\u2029", "\u00a0", "\ufeff", "\U0010ffff", "a\u2028b<c>&d",
	"kind/kind-worker", "a4100bd7-9732-442e-bbc8-beb5c7212f44",
}

// String returns a random string of hostile pieces.
func (b *Builder) String() string {
	n := b.R.IntN(4)
	s := ""
	for range n {
		s += pieces[b.R.IntN(len(pieces))]
	}
	if b.Invalid && b.R.IntN(200) == 0 {
		s += string([]byte{0xff, 0xc3})[:1+b.R.IntN(2)]
	}
	return s
}

func (b *Builder) pick(vals ...int64) int64 {
	if b.R.IntN(3) == 0 {
		return b.R.Int64()
	}
	return vals[b.R.IntN(len(vals))]
}

// Timestamp returns a random timestamp in protojson's range, with 0, 3, 6
// or 9 significant fractional digits (or out of range, when Invalid).
func (b *Builder) Timestamp() *timestamppb.Timestamp {
	const lo, hi = -62135596800, 253402300799
	t := &timestamppb.Timestamp{}
	switch b.R.IntN(6) {
	case 0:
		t.Seconds = lo + b.R.Int64N(hi-lo+1)
	case 1:
		t.Seconds = []int64{lo, hi, 0, -1, 951782400, 4107542400}[b.R.IntN(6)]
	default:
		t.Seconds = 1700000000 + b.R.Int64N(1e8)
	}
	switch b.R.IntN(5) {
	case 0:
	case 1:
		t.Nanos = b.R.Int32N(1000) * 1e6
	case 2:
		t.Nanos = b.R.Int32N(1e6) * 1e3
	case 3:
		t.Nanos = b.R.Int32N(1e9)
	case 4:
		t.Nanos = []int32{1, 999999999, 100000000, 10, 1000}[b.R.IntN(5)]
	}
	if b.Invalid && b.R.IntN(100) == 0 {
		if b.R.IntN(2) == 0 {
			t.Seconds = hi + 1 + b.R.Int64N(1e6)
		} else {
			t.Nanos = -1
		}
	}
	return t
}

func (b *Builder) any() *anypb.Any {
	if b.Invalid && b.R.IntN(4) == 0 {
		return &anypb.Any{TypeUrl: "type.googleapis.com/flow.NoSuchType", Value: []byte{8, 1}}
	}
	inner := &flowpb.Emitter{Name: b.String(), Version: b.String()}
	if !b.Invalid {
		inner = &flowpb.Emitter{Name: "ext<1>", Version: "v\u2028"}
	}
	a, err := anypb.New(inner)
	if err != nil {
		// The inner message has invalid UTF-8; marshal it leniently.
		raw, _ := proto.MarshalOptions{}.Marshal(&flowpb.Emitter{})
		return &anypb.Any{TypeUrl: "type.googleapis.com/flow.Emitter", Value: raw}
	}
	return a
}

func (b *Builder) scalar(fd protoreflect.FieldDescriptor) protoreflect.Value {
	switch fd.Kind() {
	case protoreflect.BoolKind:
		return protoreflect.ValueOfBool(b.R.IntN(2) == 0)
	case protoreflect.Int32Kind:
		return protoreflect.ValueOfInt32(int32(b.pick(0, 1, -1, 129, math.MaxInt32, math.MinInt32)))
	case protoreflect.Uint32Kind:
		return protoreflect.ValueOfUint32(uint32(b.pick(0, 1, 80, 443, 65535, math.MaxUint32)))
	case protoreflect.Int64Kind:
		return protoreflect.ValueOfInt64(b.pick(0, 1, -1, math.MaxInt64, math.MinInt64))
	case protoreflect.Uint64Kind:
		v := b.pick(0, 1, 42, -1, math.MaxInt64)
		return protoreflect.ValueOfUint64(uint64(v))
	case protoreflect.StringKind:
		return protoreflect.ValueOfString(b.String())
	case protoreflect.EnumKind:
		vals := fd.Enum().Values()
		if b.R.IntN(5) == 0 {
			return protoreflect.ValueOfEnum(protoreflect.EnumNumber(b.pick(250, -5, 1000, math.MaxInt32, math.MinInt32)))
		}
		return protoreflect.ValueOfEnum(vals.Get(b.R.IntN(vals.Len())).Number())
	}
	panic("randflow: unsupported kind " + fd.Kind().String())
}

func (b *Builder) message(m protoreflect.Message, depth int) {
	switch m.Descriptor().FullName() {
	case "google.protobuf.Timestamp":
		t := b.Timestamp()
		m.Set(m.Descriptor().Fields().ByName("seconds"), protoreflect.ValueOfInt64(t.Seconds))
		m.Set(m.Descriptor().Fields().ByName("nanos"), protoreflect.ValueOfInt32(t.Nanos))
	case "google.protobuf.Any":
		a := b.any()
		m.Set(m.Descriptor().Fields().ByName("type_url"), protoreflect.ValueOfString(a.TypeUrl))
		m.Set(m.Descriptor().Fields().ByName("value"), protoreflect.ValueOfBytes(a.Value))
	default:
		if b.R.IntN(8) != 0 { // sometimes empty but set
			b.fill(m, depth+1)
		}
	}
}

// fill sets a random subset of m's fields.
func (b *Builder) fill(m protoreflect.Message, depth int) {
	p := 70 - 15*depth
	fields := m.Descriptor().Fields()
	oneofDone := map[protoreflect.Name]bool{}
	for i := 0; i < fields.Len(); i++ {
		fd := fields.Get(i)
		if b.R.IntN(100) >= p {
			continue
		}
		if fd.Message() != nil && fd.Message().FullName() == "google.protobuf.Any" && b.R.IntN(10) != 0 {
			continue // rare, as in real flows
		}
		if od := fd.ContainingOneof(); od != nil {
			if oneofDone[od.Name()] {
				continue
			}
			oneofDone[od.Name()] = true
			fd = od.Fields().Get(b.R.IntN(od.Fields().Len()))
		}
		switch {
		case fd.IsList():
			list := m.Mutable(fd).List()
			for range 1 + b.R.IntN(3) {
				if fd.Kind() == protoreflect.MessageKind {
					v := list.NewElement()
					b.message(v.Message(), depth)
					list.Append(v)
				} else {
					list.Append(b.scalar(fd))
				}
			}
		case fd.Kind() == protoreflect.MessageKind:
			v := m.NewField(fd)
			b.message(v.Message(), depth)
			m.Set(fd, v)
		default:
			m.Set(fd, b.scalar(fd))
		}
	}
}
