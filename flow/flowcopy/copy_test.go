package flowcopy_test

import (
	"math/rand/v2"
	"strings"
	"testing"
	"unsafe"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/anypb"

	flowpb "github.com/flowbus/flowbus/flow"
	"github.com/flowbus/flowbus/flow/flowcopy"
	"github.com/flowbus/flowbus/internal/sinktest"
	"github.com/flowbus/flowbus/internal/testflow"
)

// scribble overwrites, in place, every list element and byte of m and of
// the messages it reaches, as a source reusing its storage would.
func scribble(m protoreflect.Message) {
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		switch {
		case fd.IsList():
			l := v.List()
			for i := range l.Len() {
				switch {
				case fd.Message() != nil:
					scribble(l.Get(i).Message())
				case fd.Kind() == protoreflect.StringKind:
					l.Set(i, protoreflect.ValueOfString("scribbled"))
				}
			}
		case fd.Message() != nil:
			scribble(v.Message())
		case fd.Kind() == protoreflect.BytesKind:
			for i := range v.Bytes() {
				v.Bytes()[i] = 0xDE
			}
		}
		return true
	})
}

// TestCopy: a copy equals its source, reusing storage of any earlier shape,
// and shares nothing mutable with it.
func TestCopy(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	dst := new(flowpb.Flow)
	for i := range 2000 {
		src := testflow.Random(r)
		if i%7 == 0 {
			any, err := anypb.New(&flowpb.TCPFlags{SYN: true})
			if err != nil {
				t.Fatal(err)
			}
			src.Extensions = any
		}
		want := proto.Clone(src)
		flowcopy.Flow(dst, src)
		if !proto.Equal(dst, want) {
			t.Fatalf("flow %d: copy\n%v\nwant\n%v", i, dst, want)
		}
		scribble(src.ProtoReflect())
		if !proto.Equal(dst, want) {
			t.Fatalf("flow %d: the copy shares storage with its source:\n%v", i, dst)
		}
	}
	lost := &flowpb.LostEvent{Source: flowpb.LostEventSource_PERF_EVENT_RING_BUFFER, NumEventsLost: 7}
	var dl flowpb.LostEvent
	flowcopy.LostEvent(&dl, lost)
	if !proto.Equal(&dl, lost) {
		t.Fatalf("lost event: %v", &dl)
	}
}

// eachString calls f with every string of m, recursively (list elements
// included, empty ones too where set).
func eachString(m protoreflect.Message, f func(string)) {
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		switch {
		case fd.IsMap():
			panic("eachString: map field " + string(fd.FullName()))
		case fd.IsList():
			l := v.List()
			for i := range l.Len() {
				if fd.Message() != nil {
					eachString(l.Get(i).Message(), f)
				} else if fd.Kind() == protoreflect.StringKind {
					f(l.Get(i).String())
				}
			}
		case fd.Message() != nil:
			eachString(v.Message(), f)
		case fd.Kind() == protoreflect.StringKind:
			f(v.String())
		}
		return true
	})
}

// marker is a Strings that clones each string and records the copies it
// made, by address.
type marker struct {
	made  map[*byte]bool
	calls int
}

func (m *marker) Copy(s string) string {
	m.calls++
	c := strings.Clone(s)
	m.made[unsafe.StringData(c)] = true
	return c
}

// TestCopyStrings: Flow shares every string of its source; FlowOwned
// passes every non-empty string through its copier, once, and holds only
// the copier's copies.
func TestCopyStrings(t *testing.T) {
	for _, tc := range []struct {
		name    string
		owned   bool
		inPlace bool // dst is src, a clone of the source
	}{
		{"Flow", false, false},
		{"FlowOwned", true, false},
		{"FlowOwned in place", true, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := rand.New(rand.NewPCG(3, 4))
			dst := new(flowpb.Flow)
			for i := range 1000 {
				src := testflow.Random(r)
				if i%5 == 0 {
					any, err := anypb.New(&flowpb.TCPFlags{SYN: true})
					if err != nil {
						t.Fatal(err)
					}
					src.Extensions = any
				}
				srcData := map[*byte]bool{}
				nonEmpty := 0
				eachString(src.ProtoReflect(), func(s string) {
					if s != "" {
						srcData[unsafe.StringData(s)] = true
						nonEmpty++
					}
				})
				m := &marker{made: map[*byte]bool{}}
				switch {
				case tc.inPlace:
					dst = proto.Clone(src).(*flowpb.Flow)
					flowcopy.FlowOwned(dst, dst, m)
				case tc.owned:
					flowcopy.FlowOwned(dst, src, m)
				default:
					flowcopy.Flow(dst, src)
				}
				if !proto.Equal(dst, src) {
					t.Fatalf("flow %d: copy\n%v\nwant\n%v", i, dst, src)
				}
				if tc.owned && m.calls != nonEmpty {
					t.Fatalf("flow %d: %d strings copied, want the %d non-empty ones", i, m.calls, nonEmpty)
				}
				eachString(dst.ProtoReflect(), func(s string) {
					switch p := unsafe.StringData(s); {
					case s == "":
					case tc.owned && !m.made[p]:
						t.Fatalf("flow %d: string %q is not the copier's", i, s)
					case !tc.owned && !srcData[p]:
						t.Fatalf("flow %d: string %q is not shared with the source", i, s)
					}
				})
			}
		})
	}
	t.Run("LostEventOwned", func(t *testing.T) {
		lost := &flowpb.LostEvent{Source: flowpb.LostEventSource_PERF_EVENT_RING_BUFFER, NumEventsLost: 7}
		var dl flowpb.LostEvent
		flowcopy.LostEventOwned(&dl, lost, &marker{made: map[*byte]bool{}})
		if !proto.Equal(&dl, lost) {
			t.Fatalf("lost event: %v", &dl)
		}
	})
}

// buffer is a Strings that copies into one buffer, reused from its start
// after reset: it allocates only to grow.
type buffer struct{ b []byte }

func (b *buffer) reset() { b.b = b.b[:0] }

func (b *buffer) Copy(s string) string {
	if cap(b.b)-len(b.b) < len(s) {
		b.b = make([]byte, 0, 2*cap(b.b)+len(s))
	}
	n := len(b.b)
	b.b = append(b.b, s...)
	return unsafe.String(&b.b[n], len(s))
}

// TestCopyAllocs: copying flows of the same shape allocates nothing once
// the destination (and the copier's storage) has that shape.
func TestCopyAllocs(t *testing.T) {
	var a, b flowpb.Flow
	sinktest.Flow(&a, 0)
	sinktest.Flow(&b, 1)
	var buf buffer
	for _, tc := range []struct {
		name string
		copy func(dst, src *flowpb.Flow)
	}{
		{"Flow", flowcopy.Flow},
		{"FlowOwned", func(dst, src *flowpb.Flow) {
			buf.reset()
			flowcopy.FlowOwned(dst, src, &buf)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dst := new(flowpb.Flow)
			tc.copy(dst, &a)
			tc.copy(dst, &b)
			n := testing.AllocsPerRun(100, func() {
				tc.copy(dst, &b)
				tc.copy(dst, &a)
			})
			if n != 0 {
				t.Fatalf("%v allocations per copy, want 0", n)
			}
		})
	}
}

func BenchmarkCopy(b *testing.B) {
	var src flowpb.Flow
	sinktest.Flow(&src, 0)
	dst := new(flowpb.Flow)
	b.ReportAllocs()
	for b.Loop() {
		flowcopy.Flow(dst, &src)
	}
}

func BenchmarkCopyOwned(b *testing.B) {
	var src flowpb.Flow
	sinktest.Flow(&src, 0)
	dst := new(flowpb.Flow)
	var buf buffer
	b.ReportAllocs()
	for b.Loop() {
		buf.reset()
		flowcopy.FlowOwned(dst, &src, &buf)
	}
}
