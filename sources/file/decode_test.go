package file

import (
	"bufio"
	"os"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/flowbus/flowbus/codec"
	"github.com/flowbus/flowbus/pipeline"
)

// TestDecodersAgree decodes the test corpora with both line decoders, the
// flowjson one into reused batch slots, and compares kinds, lossiness,
// errors and events.
func TestDecodersAgree(t *testing.T) {
	for _, path := range []string{"testdata/export.jsonl", "testdata/malformed.jsonl"} {
		f, err := os.Open(path)
		if err != nil {
			t.Fatal(err)
		}
		ref, fast := newProtojsonDecoder(), newFlowjsonDecoder()
		reused := pipeline.NewBatch()
		sc := bufio.NewScanner(f)
		sc.Buffer(nil, 1<<20)
		n := 0
		for sc.Scan() {
			for range 2 { // twice: the second pass decodes into stale storage
				line := sc.Bytes()
				want := pipeline.NewBatch()
				we := want.Next()
				wk, wl, werr := ref.decode(line, we)
				reused.Truncate(0)
				ge := reused.Next()
				gk, gl, gerr := fast.decode(line, ge)
				if gk != wk || gl != wl || (gerr != nil) != (werr != nil) {
					t.Fatalf("%s:%d: got %v %v %v, want %v %v %v", path, n+1, gk, gl, gerr, wk, wl, werr)
				}
				if werr == nil && (wk == kindFlow || wk == kindLost) {
					if !proto.Equal(codec.Envelope(ge), codec.Envelope(we)) {
						t.Fatalf("%s:%d: events differ\n got %v\nwant %v", path, n+1, codec.Envelope(ge), codec.Envelope(we))
					}
				}
				want.Release()
			}
			n++
		}
		if err := sc.Err(); err != nil {
			t.Fatal(err)
		}
		f.Close()
		reused.Release()
		t.Logf("%s: %d lines agree", path, n)
	}
}

// BenchmarkDecoders compares the line decoders on the enriched drop flow of
// the corpus, decoding into reused batch slots.
func BenchmarkDecoders(b *testing.B) {
	lines := wantLines(&testing.T{}, "testdata/export.jsonl")
	line := []byte(strings.TrimSuffix(lines[6], "\n"))
	for _, c := range []struct {
		name string
		dec  lineDecoder
	}{{"protojson", newProtojsonDecoder()}, {"flowjson", newFlowjsonDecoder()}} {
		b.Run(c.name, func(b *testing.B) {
			batch := pipeline.NewBatch()
			b.SetBytes(int64(len(line)))
			b.ReportAllocs()
			for b.Loop() {
				batch.Truncate(0)
				if _, _, err := c.dec.decode(line, batch.Next()); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
