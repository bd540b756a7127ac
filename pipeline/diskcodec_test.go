package pipeline

import (
	"testing"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	flowpb "github.com/flowbus/flowbus/flow"
)

func diskTestBatch() *Batch {
	b := NewBatch()
	for i := 0; i < 3; i++ {
		e := b.Next()
		f := e.FlowStorage()
		f.Time = &timestamppb.Timestamp{Seconds: 1764777600 + int64(i), Nanos: 5}
		f.Uuid = "u"
		f.Verdict = flowpb.Verdict_DROPPED
		f.IP = &flowpb.IP{Source: "10.0.0.1", Destination: "10.0.0.2"}
		e.Time, e.NodeName, e.SampleRate = f.Time, "n1", uint32(i)
	}
	e := b.Next()
	e.Lost = &flowpb.LostEvent{Source: flowpb.LostEventSource_PERF_EVENT_RING_BUFFER, NumEventsLost: 7}
	e.Time = &timestamppb.Timestamp{Seconds: 9, Nanos: 999999999}
	return b
}

func TestDiskRecordRoundTrip(t *testing.T) {
	b := diskTestBatch()
	defer b.Release()
	rec, err := appendDiskBatch(nil, 1764777600123456, 42, b)
	if err != nil {
		t.Fatal(err)
	}
	if epoch, base, count, _, err := diskHeader(rec[:12]); err != nil || epoch != 1764777600123456 || base != 42 || count != 4 {
		t.Fatalf("header of a cut record: %d %d %d %v", epoch, base, count, err)
	}
	got := NewBatch()
	defer got.Release()
	epoch, base, err := decodeDiskBatch(rec, got)
	if err != nil || epoch != 1764777600123456 || base != 42 || got.Len() != 4 {
		t.Fatalf("decode: %d %d %d %v", epoch, base, got.Len(), err)
	}
	for i := range b.Events {
		w, g := &b.Events[i], &got.Events[i]
		if !proto.Equal(w.Flow, g.Flow) || !proto.Equal(w.Lost, g.Lost) || !proto.Equal(w.Time, g.Time) ||
			w.NodeName != g.NodeName || w.SampleRate != g.SampleRate {
			t.Errorf("event %d: %+v, want %+v", i, g, w)
		}
		if g.Flow != nil && g.Time != g.Flow.Time {
			t.Errorf("event %d: the envelope time does not alias the flow's", i)
		}
	}
	for _, cut := range []int{0, 1, 5, len(rec) / 2, len(rec) - 1} {
		if _, _, err := decodeDiskBatch(rec[:cut], NewBatch()); err == nil {
			t.Errorf("a record cut at %d of %d bytes decoded", cut, len(rec))
		}
	}
}

// FuzzDiskRecord: the decoder of disk buffer records never panics, and
// what it accepts encodes back to a record that decodes the same.
func FuzzDiskRecord(f *testing.F) {
	b := diskTestBatch()
	rec, _ := appendDiskBatch(nil, 1764777600123456, 42, b)
	b.Release()
	f.Add(rec)
	f.Add(rec[:len(rec)/2])
	f.Add([]byte{1, 0, 1, 0})
	f.Add([]byte{1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0})
	f.Fuzz(func(t *testing.T, data []byte) {
		got := NewBatch()
		defer got.Release()
		epoch, base, err := decodeDiskBatch(data, got)
		if err != nil {
			return
		}
		again, err := appendDiskBatch(nil, epoch, base, got)
		if err != nil {
			return // e.g. invalid UTF-8 in a string, refused by proto.Marshal
		}
		back := NewBatch()
		defer back.Release()
		if _, _, err := decodeDiskBatch(again, back); err != nil || back.Len() != got.Len() {
			t.Fatalf("re-encoded record: %d events, %v (first decode: %d)", back.Len(), err, got.Len())
		}
	})
}
