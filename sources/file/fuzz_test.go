package file

import (
	"bytes"
	"os"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/flowbus/flowbus/codec"
	"github.com/flowbus/flowbus/pipeline"
)

// FuzzDecodeLine: decoding any line never panics, and a line that decodes
// to an event re-encodes to a line that decodes to the same event, and
// re-encodes to the same bytes.
func FuzzDecodeLine(f *testing.F) {
	for _, path := range []string{"testdata/export.jsonl", "testdata/malformed.jsonl"} {
		data, err := os.ReadFile(path)
		if err != nil {
			f.Fatal(err)
		}
		for _, l := range bytes.Split(data, []byte("\n")) {
			f.Add(l)
		}
	}
	dec := newFlowjsonDecoder()
	ref := newProtojsonDecoder()
	reused := pipeline.NewBatch() // stale storage for the flowjson decoder
	f.Fuzz(func(t *testing.T, line []byte) {
		b := pipeline.NewBatch()
		defer b.Release()
		ev := b.Next()
		reused.Truncate(0)
		fev := reused.Next()
		kind, lossy, err := dec.decode(line, fev)
		rkind, rlossy, rerr := ref.decode(line, ev)
		if kind != rkind || lossy != rlossy || (err != nil) != (rerr != nil) {
			t.Fatalf("decoders disagree on %q: flowjson %v %v %v, protojson %v %v %v", line, kind, lossy, err, rkind, rlossy, rerr)
		}
		if err != nil || (kind != kindFlow && kind != kindLost) {
			return
		}
		if !proto.Equal(codec.Envelope(ev), codec.Envelope(fev)) {
			t.Fatalf("decoders disagree on %q:\nflowjson  %v\nprotojson %v", line, codec.Envelope(fev), codec.Envelope(ev))
		}
		out, err := codec.JSON{}.Append(nil, ev)
		if err != nil {
			t.Fatalf("encode: %v", err)
		}
		ev2 := b.Next()
		kind2, lossy, err := dec.decode(bytes.TrimSuffix(out, []byte("\n")), ev2)
		if err != nil || kind2 != kind || lossy {
			t.Fatalf("re-decode of %s: kind %v lossy %v err %v", out, kind2, lossy, err)
		}
		if !proto.Equal(codec.Envelope(ev), codec.Envelope(ev2)) {
			t.Fatalf("round trip changed the event:\n%s", out)
		}
		out2, _ := codec.JSON{}.Append(nil, ev2)
		if !bytes.Equal(out, out2) {
			t.Fatalf("re-encoding differs:\n%s\n%s", out, out2)
		}
	})
}
