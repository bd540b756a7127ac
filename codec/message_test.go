package codec

import (
	"errors"
	"testing"

	"google.golang.org/protobuf/proto"

	flowpb "github.com/flowbus/flowbus/flow"
	"github.com/flowbus/flowbus/flow/flowjson/randflow"
	"github.com/flowbus/flowbus/pipeline"
)

// TestDecodeRoundTrip: what the encoders write decodes to the same
// envelope, for flows and LostEvents, by header and by sniffing, into a
// reused slot.
func TestDecodeRoundTrip(t *testing.T) {
	d := NewDecoder()
	b := pipeline.NewBatch()
	defer b.Release()
	for i := range 2000 {
		e := randomEvent(randflow.New(uint64(i), i%2 == 0))
		e.Reported = false
		for _, enc := range []Encoder{JSON{}, Protobuf{}} {
			data, err := enc.Append(nil, &e)
			if err != nil {
				continue // invalid UTF-8: the sinks refuse it too
			}
			for j, ct := range []string{enc.ContentType(), enc.ContentType() + "; charset=utf-8", ""} {
				b.Truncate(0)
				ev := b.Next()
				decode := d.Decode
				if j == 1 {
					// A buffer of its own, handed over.
					data = append([]byte(nil), data...)
					decode = d.DecodeOwned
				}
				kind, err := decode(ct, data, ev)
				if err != nil {
					t.Fatalf("event %d, %q: %v", i, ct, err)
				}
				want := KindFlow
				if e.Lost != nil {
					want = KindLost
				}
				if kind != want {
					t.Fatalf("event %d, %q: kind %d, want %d", i, ct, kind, want)
				}
				if got, want := Envelope(ev), Envelope(&e); !proto.Equal(got, want) {
					t.Fatalf("event %d, %q:\n got %v\nwant %v", i, ct, got, want)
				}
			}
		}
	}
}

// TestDecodeOwned: Decode copies the message once and its flow outlives a
// rewritten buffer; DecodeOwned decodes a protobuf flow from the buffer
// itself into a reused slot without allocating.
func TestDecodeOwned(t *testing.T) {
	d := NewDecoder()
	b := pipeline.NewBatch()
	defer b.Release()
	f := randflow.Enriched()
	data, err := Protobuf{}.Append(nil, &pipeline.Event{Flow: f, NodeName: f.NodeName, Time: f.Time})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name   string
		decode func(string, []byte, *pipeline.Event) (Kind, error)
		allocs float64
	}{
		{"Decode", d.Decode, 1},
		{"DecodeOwned", d.DecodeOwned, 0},
	} {
		allocs := testing.AllocsPerRun(100, func() {
			b.Truncate(0)
			if _, err := tc.decode(ContentTypeProtobuf, data, b.Next()); err != nil {
				t.Fatal(err)
			}
		})
		if allocs != tc.allocs {
			t.Errorf("%s: %v allocations per message, want %v", tc.name, allocs, tc.allocs)
		}
	}
	own := append([]byte(nil), data...)
	b.Truncate(0)
	ev := b.Next()
	if _, err := d.Decode(ContentTypeProtobuf, own, ev); err != nil {
		t.Fatal(err)
	}
	clear(own)
	if ev.Flow.GetSource().GetPodName() != f.GetSource().GetPodName() || ev.NodeName != f.NodeName {
		t.Errorf("Decode's flow changed with its input buffer: pod %q, node %q", ev.Flow.GetSource().GetPodName(), ev.NodeName)
	}
}

func TestDecodeErrors(t *testing.T) {
	d := NewDecoder()
	ev := &pipeline.Event{}
	flow, _ := Protobuf{}.Append(nil, &pipeline.Event{Flow: &flowpb.Flow{Uuid: "u"}})
	for _, tc := range []struct {
		name, ct string
		data     []byte
		kind     Kind
		err      bool
	}{
		{"truncated protobuf", ContentTypeProtobuf, flow[:len(flow)-1], KindOther, true},
		{"not json", ContentTypeJSON, []byte("{\"flow\":"), KindOther, true},
		{"json that is not an object", ContentTypeJSON, []byte("[1]"), KindOther, true},
		{"unknown content type", "text/plain", []byte("hello"), KindOther, true},
		{"empty protobuf envelope", ContentTypeProtobuf, nil, KindOther, false},
		{"node status only", ContentTypeJSON, []byte(`{"node_status":{},"node_name":"n"}`), KindOther, false},
		{"unknown json field", ContentTypeJSON, []byte(`{"flow":{"uuid":"u","newer":1}}`), KindFlow, false},
	} {
		kind, err := d.Decode(tc.ct, tc.data, ev)
		if kind != tc.kind || (err != nil) != tc.err {
			t.Errorf("%s: kind %d, error %v; want kind %d, error %v", tc.name, kind, err, tc.kind, tc.err)
		}
	}
	if _, err := d.Decode("text/plain", nil, ev); !errors.Is(err, ErrContentType) {
		t.Errorf("unknown content type: %v, want ErrContentType", err)
	}
}

// FuzzDecode: any message either fails to decode or decodes to what
// proto/protojson decode, and never panics.
func FuzzDecode(f *testing.F) {
	for _, e := range []pipeline.Event{
		{Flow: randflow.Enriched(), NodeName: "n"},
		{Lost: &flowpb.LostEvent{NumEventsLost: 3}},
	} {
		for _, enc := range []Encoder{JSON{}, Protobuf{}} {
			data, _ := enc.Append(nil, &e)
			f.Add(enc.ContentType(), data)
			f.Add("", data)
		}
	}
	f.Fuzz(func(t *testing.T, ct string, data []byte) {
		d := NewDecoder()
		b := pipeline.NewBatch()
		defer b.Release()
		ev := b.Next()
		kind, err := d.Decode(ct, data, ev)
		if err != nil {
			return
		}
		switch kind {
		case KindFlow:
			if ev.Flow == nil || ev.Lost != nil {
				t.Fatalf("flow kind with flow %v, lost %v", ev.Flow, ev.Lost)
			}
		case KindLost:
			if ev.Lost == nil || ev.Flow != nil {
				t.Fatalf("lost kind with flow %v, lost %v", ev.Flow, ev.Lost)
			}
		}
		// A second decode into the same slot gives the same result.
		first := proto.Clone(Envelope(ev))
		b.Truncate(0)
		ev = b.Next()
		if k2, err := d.Decode(ct, data, ev); err != nil || k2 != kind {
			t.Fatalf("second decode: kind %d, %v", k2, err)
		}
		if kind != KindOther && !proto.Equal(first, Envelope(ev)) {
			t.Fatalf("second decode differs:\n%v\n%v", first, Envelope(ev))
		}
	})
}
