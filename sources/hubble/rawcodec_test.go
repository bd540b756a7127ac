package hubble

import (
	"bytes"
	"testing"

	"google.golang.org/grpc/mem"

	"github.com/flowbus/flowbus/pipeline"
)

// countingPool is a gRPC buffer pool that counts the buffers given back.
type countingPool struct{ put int }

func (p *countingPool) Get(n int) *[]byte { b := make([]byte, n); return &b }
func (p *countingPool) Put(*[]byte)       { p.put++ }

// TestRawCodecCopy: a message received as one buffer or split across
// several is copied into the batch whole and stays intact while later
// messages are copied in, and gRPC gets its buffers back once copied.
func TestRawCodecCopy(t *testing.T) {
	b := pipeline.NewBatch()
	defer b.Release()
	pool := new(countingPool)
	var got []string
	var want [][]byte
	buffers := 0
	for i, n := range []int{1100, 0, 1, 8 << 10, 8<<10 + 1, 3000, 64 << 10, 700, 64, 1100} {
		for split := range 3 {
			msg := bytes.Repeat([]byte{byte(i + 1)}, n)
			msg = append(msg, byte(len(want)))
			// One to three buffers, as gRPC hands over a message split
			// across frames.
			var data mem.BufferSlice
			for part, rest := 0, msg; part <= split; part++ {
				k := len(rest)
				if part < split {
					k = len(rest) / 2
				}
				// gRPC's buffers are pooled whatever their length.
				pb := make([]byte, k, k+4096)
				copy(pb, rest)
				data = append(data, mem.NewBuffer(&pb, pool))
				rest = rest[k:]
				buffers++
			}
			var r rawResponse
			if err := (rawCodec{}).Unmarshal(data, &r); err != nil {
				t.Fatal(err)
			}
			data.Free() // as gRPC does when Unmarshal returns
			got = append(got, r.copyInto(b))
			want = append(want, bytes.Clone(msg))
		}
	}
	for i := range want {
		if got[i] != string(want[i]) {
			t.Fatalf("message %d changed: %d bytes, want %d", i, len(got[i]), len(want[i]))
		}
	}
	if pool.put != buffers {
		t.Fatalf("%d of %d buffers given back to gRPC's pool", pool.put, buffers)
	}
}
