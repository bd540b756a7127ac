package codec

import (
	"bytes"
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	flowpb "github.com/flowbus/flowbus/flow"
	"github.com/flowbus/flowbus/flow/flowjson/randflow"
	"github.com/flowbus/flowbus/pipeline"
)

func randomEvent(b *randflow.Builder) pipeline.Event {
	if b.R.IntN(5) == 0 {
		return pipeline.Event{Lost: b.LostEvent(), NodeName: b.String(), Time: b.Timestamp(), Reported: true}
	}
	f := b.Flow()
	return pipeline.Event{Flow: f, NodeName: f.NodeName, Time: f.Time}
}

// TestJSONMatchesReference: the fast JSON encoder writes the reference's
// bytes (or fails where it fails) for random events, appending to a
// non-empty buffer.
func TestJSONMatchesReference(t *testing.T) {
	n := 10000
	if testing.Short() {
		n = 2000
	}
	failed := 0
	for i := range n {
		e := randomEvent(randflow.New(uint64(i), i%3 == 0))
		want, wantErr := ReferenceJSON{}.Append([]byte("x"), &e)
		got, err := JSON{}.Append([]byte("x"), &e)
		if (err != nil) != (wantErr != nil) {
			t.Fatalf("event %d: error %v, reference %v", i, err, wantErr)
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("event %d:\n got %s\nwant %s", i, got, want)
		}
		if err != nil {
			failed++
		}
	}
	t.Logf("%d events, %d rejected by both", n, failed)
}

// checkProtobuf compares Protobuf with proto.Marshal of the envelope.
func checkProtobuf(t testing.TB, e *pipeline.Event) {
	want, wantErr := ReferenceProtobuf{}.Append([]byte("x"), e)
	got, err := Protobuf{}.Append([]byte("x"), e)
	if (err != nil) != (wantErr != nil) {
		t.Fatalf("error %v, proto.Marshal %v\n%v", err, wantErr, Envelope(e))
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("bytes differ\n got %x\nwant %x", got, want)
	}
}

// TestProtobufMatchesMarshal: the generated encoder writes proto.Marshal's
// bytes for random events (including invalid UTF-8, which both refuse),
// unknown fields at every level, and large nested messages.
func TestProtobufMatchesMarshal(t *testing.T) {
	events := []pipeline.Event{
		{Flow: randflow.Enriched(), NodeName: "n"},
		{Flow: randflow.L3L4()},
		{Flow: &flowpb.Flow{}},
		{Flow: &flowpb.Flow{L4: &flowpb.Layer4{Protocol: &flowpb.Layer4_TCP{}}, Source: &flowpb.Endpoint{Workloads: []*flowpb.Workload{nil}}}},
		{Flow: &flowpb.Flow{Uuid: strings.Repeat("u", 20000)}},
		{Flow: &flowpb.Flow{Source: &flowpb.Endpoint{PodName: strings.Repeat("p", 200)}}},
		{Flow: &flowpb.Flow{Uuid: strings.Repeat("u", 100)}, Time: &timestamppb.Timestamp{Seconds: -1, Nanos: -1}},
		{Lost: &flowpb.LostEvent{NumEventsLost: 3}, Time: &timestamppb.Timestamp{Seconds: 5}},
		{Lost: &flowpb.LostEvent{}},
	}
	// Unknown fields at the top and nested (field 999 varint 1, field 1000
	// bytes "zz").
	unknown := []byte{0xb8, 0x3e, 0x01, 0xc2, 0x3e, 0x02, 'z', 'z'}
	withUnknown := randflow.Enriched()
	withUnknown.ProtoReflect().SetUnknown(unknown)
	withUnknown.Source.ProtoReflect().SetUnknown(unknown)
	withUnknown.Time.ProtoReflect().SetUnknown(unknown)
	withUnknown.L4.GetTCP().Flags.ProtoReflect().SetUnknown(unknown)
	events = append(events, pipeline.Event{Flow: withUnknown, Time: withUnknown.Time})
	for i := range 5000 {
		events = append(events, randomEvent(randflow.New(uint64(i), i%2 == 0)))
	}
	for i := range events {
		checkProtobuf(t, &events[i])
	}
	if _, err := (Protobuf{}).Append(nil, &pipeline.Event{}); err == nil {
		t.Fatal("empty event encoded")
	}
}

// FuzzProtobuf: flows decoded from fuzzed wire bytes (with unknown fields
// kept) encode to proto.Marshal's bytes. Seeds: testdata/fuzz/FuzzProtobuf.
func FuzzProtobuf(f *testing.F) {
	for _, fl := range []*flowpb.Flow{randflow.Enriched(), randflow.L3L4()} {
		b, _ := proto.Marshal(fl)
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, wire []byte) {
		var fl flowpb.Flow
		if proto.Unmarshal(wire, &fl) != nil {
			return
		}
		checkProtobuf(t, &pipeline.Event{Flow: &fl, NodeName: fl.NodeName, Time: fl.Time})
		var l flowpb.LostEvent
		if proto.Unmarshal(wire, &l) == nil {
			checkProtobuf(t, &pipeline.Event{Lost: &l})
		}
	})
}

func TestNew(t *testing.T) {
	for name, want := range map[string]string{"": ContentTypeJSON, "json": ContentTypeJSON, "protobuf": ContentTypeProtobuf} {
		e, err := New(name)
		if err != nil || e.ContentType() != want {
			t.Fatalf("New(%q) = %v, %v", name, e, err)
		}
	}
	if _, err := New("xml"); err == nil {
		t.Fatal("New(xml) succeeded")
	}
}

func BenchmarkEncoders(b *testing.B) {
	flows := []struct {
		name string
		f    *flowpb.Flow
	}{{"L3L4", randflow.L3L4()}, {"Enriched", randflow.Enriched()}}
	encoders := []struct {
		name string
		enc  Encoder
	}{{"json", JSON{}}, {"json-reference", ReferenceJSON{}}, {"protobuf", Protobuf{}}, {"protobuf-reference", ReferenceProtobuf{}}, {"protobuf-size+marshalappend", encoderFunc(protogoAppend)}}
	for _, fl := range flows {
		e := pipeline.Event{Flow: fl.f, NodeName: fl.f.NodeName, Time: fl.f.Time}
		for _, enc := range encoders {
			b.Run(fl.name+"/"+enc.name, func(b *testing.B) {
				buf, err := enc.enc.Append(nil, &e)
				if err != nil {
					b.Fatal(err)
				}
				b.SetBytes(int64(len(buf)))
				b.ReportAllocs()
				for b.Loop() {
					buf, _ = enc.enc.Append(buf[:0], &e)
				}
			})
		}
	}
}

// protogoAppend is the encoder Protobuf replaced (proto.Size, then
// MarshalAppend with the cached sizes), kept for the benchmark.
func protogoAppend(dst []byte, e *pipeline.Event) ([]byte, error) {
	opts := proto.MarshalOptions{UseCachedSize: true}
	if e.NodeName != "" {
		dst = protowire.AppendTag(dst, fieldNodeName, protowire.BytesType)
		dst = protowire.AppendString(dst, e.NodeName)
	}
	if e.Time != nil {
		dst = protowire.AppendTag(dst, fieldTime, protowire.BytesType)
		dst = protowire.AppendVarint(dst, uint64(proto.Size(e.Time)))
		dst, _ = opts.MarshalAppend(dst, e.Time)
	}
	dst = protowire.AppendTag(dst, fieldFlow, protowire.BytesType)
	dst = protowire.AppendVarint(dst, uint64(proto.Size(e.Flow)))
	return opts.MarshalAppend(dst, e.Flow)
}

type encoderFunc func([]byte, *pipeline.Event) ([]byte, error)

func (f encoderFunc) Append(dst []byte, e *pipeline.Event) ([]byte, error) { return f(dst, e) }
func (encoderFunc) ContentType() string                                    { return ContentTypeProtobuf }

func TestProtogoAppend(t *testing.T) {
	e := pipeline.Event{Flow: randflow.Enriched(), NodeName: "n"}
	e.Time = e.Flow.Time
	got, _ := protogoAppend(nil, &e)
	want, _ := Protobuf{}.Append(nil, &e)
	if !bytes.Equal(got, want) {
		t.Fatal("benchmark baseline differs")
	}
}

// TestEncodersDoNotAllocate: appending to a buffer with room allocates
// nothing, for flows and lost events.
func TestEncodersDoNotAllocate(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector drops pooled encoder caches")
	}
	f := randflow.Enriched()
	events := []pipeline.Event{
		{Flow: f, NodeName: f.NodeName, Time: f.Time},
		{Lost: &flowpb.LostEvent{Source: flowpb.LostEventSource_OBSERVER_EVENTS_QUEUE, NumEventsLost: 12}, NodeName: "n", Time: f.Time},
	}
	buf := make([]byte, 0, 64<<10)
	for _, enc := range []Encoder{JSON{}, Protobuf{}} {
		for i := range events {
			if allocs := testing.AllocsPerRun(100, func() {
				if _, err := enc.Append(buf[:0], &events[i]); err != nil {
					t.Fatal(err)
				}
			}); allocs != 0 {
				t.Errorf("%T event %d: %v allocations", enc, i, allocs)
			}
		}
	}
}
