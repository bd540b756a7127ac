package encode

import (
	"bytes"
	"testing"

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

// TestProtobufMatchesMarshal: the envelope written by hand equals
// proto.Marshal of the GetFlowsResponse.
func TestProtobufMatchesMarshal(t *testing.T) {
	events := []pipeline.Event{
		{Flow: randflow.Enriched(), NodeName: "n"},
		{Lost: &flowpb.LostEvent{NumEventsLost: 3}, Time: &timestamppb.Timestamp{Seconds: 5}},
	}
	for i := range 2000 {
		events = append(events, randomEvent(randflow.New(uint64(i), false)))
	}
	var buf []byte
	for i, e := range events {
		want, wantErr := proto.MarshalOptions{Deterministic: true}.Marshal(Envelope(&e))
		var err error
		buf, err = Protobuf{}.Append(buf[:0], &e)
		if (err != nil) != (wantErr != nil) {
			t.Fatalf("event %d: error %v, proto.Marshal %v", i, err, wantErr)
		}
		if err == nil && !bytes.Equal(buf, want) {
			t.Fatalf("event %d: bytes differ\n got %x\nwant %x", i, buf, want)
		}
	}
	if _, err := (Protobuf{}).Append(nil, &pipeline.Event{}); err == nil {
		t.Fatal("empty event encoded")
	}
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
	}{{"json", JSON{}}, {"json-reference", ReferenceJSON{}}, {"protobuf", Protobuf{}}}
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
