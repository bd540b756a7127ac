//go:build flowbus_poison

package pipeline

import (
	"math"
	"unsafe"

	"google.golang.org/protobuf/reflect/protoreflect"

	flowpb "github.com/flowbus/flowbus/flow"
	"github.com/flowbus/flowbus/flow/flowcopy"
)

// The flowbus_poison build tag makes use after release visible: when the
// last reference to a batch is released, every Flow the batch holds (in its
// events and in the spare storage of its unused slots) is overwritten in
// place with values no source produces, before the batch goes back to the
// pool. A component that keeps a Flow, or any message, list or byte slice
// it reaches, past the release then reads the poison instead of plausible
// stale data, and a filler that puts shared storage into a Flow sees that
// storage overwritten. CI runs the whole suite with -tags flowbus_poison.
//
// The same goes for the strings of flows: every batch a source emits has
// its flows' strings (and its events' node names) moved into the batch's
// own storage (Batch.Alloc), as the hubble source's are in every build,
// and that storage is overwritten with 0xDE bytes when it is reused. A
// component that keeps such a string past its batch then reads invalid
// UTF-8 instead of the text it kept.

// Poison values: every string field becomes PoisonString, every integer
// field 0xDEADBEEF (negative for signed fields, so a Timestamp's nanos is out
// of range and fails to encode), every enum an undefined number, every
// float NaN, every bool flips, and every byte is 0xDE.
const (
	PoisonString = "\u2620 flowbus: flow used after its batch was released \u2620"
	poisonU32    = 0xDEADBEEF
	poisonU64    = 0xDEADBEEFDEADBEEF
	poisonByte   = 0xDE
)

const poisonEnabled = true

// poisonBatch overwrites every Flow b holds, once each (tests put one Flow
// into many events).
func poisonBatch(b *Batch) {
	all := b.Events[:cap(b.Events)]
	done := make(map[*flowpb.Flow]bool, len(all))
	for i := range all {
		for _, f := range [2]*flowpb.Flow{all[i].Flow, all[i].spare} {
			if f != nil && !done[f] {
				done[f] = true
				PoisonFlow(f)
			}
		}
	}
}

// poisonBytes overwrites b with poisonByte.
func poisonBytes(b []byte) {
	for i := range b {
		b[i] = poisonByte
	}
}

// arenaStrings moves the strings of b's flows and events into b's own
// storage (see the comment at the top of this file).
func arenaStrings(b *Batch) {
	own := flowcopy.StringsFunc(func(s string) string {
		buf := b.Alloc(len(s))
		copy(buf, s)
		return unsafe.String(&buf[0], len(buf))
	})
	done := make(map[*flowpb.Flow]bool, len(b.Events))
	for i := range b.Events {
		e := &b.Events[i]
		if e.NodeName != "" {
			e.NodeName = own(e.NodeName)
		}
		if f := e.Flow; f != nil && !done[f] {
			done[f] = true
			flowcopy.FlowOwned(f, f, own)
		}
	}
}

// PoisonFlow overwrites every field of f, recursively and in place. It exists only in the flowbus_poison build.
func PoisonFlow(f *flowpb.Flow) { poisonMessage(f.ProtoReflect()) }

// poisonMessage poisons every field of m: scalars whether set or not (but
// only the set member of a oneof), and the messages, lists and maps that
// are set.
func poisonMessage(m protoreflect.Message) {
	fds := m.Descriptor().Fields()
	for i := range fds.Len() {
		fd := fds.Get(i)
		if !m.Has(fd) {
			if fd.IsList() || fd.IsMap() || fd.Message() != nil || fd.ContainingOneof() != nil {
				continue
			}
		}
		v := m.Get(fd)
		switch {
		case fd.IsList():
			l := m.Mutable(fd).List()
			for i := range l.Len() {
				if fd.Message() != nil {
					poisonMessage(l.Get(i).Message())
				} else {
					l.Set(i, poisonScalar(fd, l.Get(i)))
				}
			}
		case fd.IsMap():
			mp := m.Mutable(fd).Map()
			vd := fd.MapValue()
			var keys []protoreflect.MapKey
			mp.Range(func(k protoreflect.MapKey, _ protoreflect.Value) bool {
				keys = append(keys, k)
				return true
			})
			for _, k := range keys {
				if vd.Message() != nil {
					poisonMessage(mp.Get(k).Message())
				} else {
					mp.Set(k, poisonScalar(vd, mp.Get(k)))
				}
			}
		case fd.Message() != nil:
			poisonMessage(v.Message())
		default:
			m.Set(fd, poisonScalar(fd, v))
		}
	}
}

func poisonScalar(fd protoreflect.FieldDescriptor, v protoreflect.Value) protoreflect.Value {
	switch fd.Kind() {
	case protoreflect.StringKind:
		return protoreflect.ValueOfString(PoisonString)
	case protoreflect.BytesKind:
		b := v.Bytes()
		for i := range b {
			b[i] = poisonByte
		}
		return protoreflect.ValueOfBytes(b)
	case protoreflect.BoolKind:
		return protoreflect.ValueOfBool(!v.Bool())
	case protoreflect.EnumKind:
		return protoreflect.ValueOfEnum(protoreflect.EnumNumber(int32(poisonU32 >> 1)))
	case protoreflect.Int32Kind, protoreflect.Sint32Kind, protoreflect.Sfixed32Kind:
		return protoreflect.ValueOfInt32(-int32(poisonU32 >> 1))
	case protoreflect.Uint32Kind, protoreflect.Fixed32Kind:
		return protoreflect.ValueOfUint32(poisonU32)
	case protoreflect.Int64Kind, protoreflect.Sint64Kind, protoreflect.Sfixed64Kind:
		return protoreflect.ValueOfInt64(-int64(poisonU64 >> 1))
	case protoreflect.Uint64Kind, protoreflect.Fixed64Kind:
		return protoreflect.ValueOfUint64(poisonU64)
	case protoreflect.FloatKind:
		return protoreflect.ValueOfFloat32(float32(math.NaN()))
	case protoreflect.DoubleKind:
		return protoreflect.ValueOfFloat64(math.NaN())
	}
	return v
}
