package hubble

import (
	"bytes"
	"testing"

	"google.golang.org/grpc/mem"
)

// TestRawCodecSlab: the messages received are copies that stay intact
// while later messages are received, small ones carved one after the
// other from a shared slab and large ones allocated alone.
func TestRawCodecSlab(t *testing.T) {
	r := new(rawResponse)
	var got []string
	var want [][]byte
	for i, n := range []int{1100, 0, 1, slabMax, slabMax + 1, 3000, slabSize, 700, 64, 1100} {
		for range 40 {
			msg := bytes.Repeat([]byte{byte(i + 1)}, n)
			msg = append(msg, byte(len(want)))
			// Two buffers, as gRPC hands over a message split across frames.
			h := len(msg) / 2
			data := mem.BufferSlice{mem.SliceBuffer(msg[:h]), mem.SliceBuffer(msg[h:])}
			if err := (rawCodec{}).Unmarshal(data, r); err != nil {
				t.Fatal(err)
			}
			got = append(got, r.msg)
			want = append(want, bytes.Clone(msg))
		}
	}
	for i := range want {
		if got[i] != string(want[i]) {
			t.Fatalf("message %d changed: %d bytes, want %d", i, len(got[i]), len(want[i]))
		}
	}
	if r.slab.Len() == 0 || r.slab.Cap() != slabSize {
		t.Fatalf("slab of %d/%d bytes, want a %d-byte slab in use", r.slab.Len(), r.slab.Cap(), slabSize)
	}
}
