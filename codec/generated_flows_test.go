package codec

import (
	"bytes"
	"testing"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/flowbus/flowbus/flow/flowjson"
	"github.com/flowbus/flowbus/flow/observer"
	"github.com/flowbus/flowbus/pipeline"
	"github.com/flowbus/flowbus/sources/generate"
)

// TestGeneratedFlows runs 20,000 flows of the generate source (every
// protocol, L7 kinds, drops, IPv6, in reused storage) through both
// encoders and the fast decoder: JSON is byte-identical to the protojson
// reference, protobuf to proto.Marshal, and the decoded line equals both
// protojson's decoding and the original flow.
func TestGeneratedFlows(t *testing.T) {
	n := 20000
	if testing.Short() {
		n = 4000
	}
	g := generate.NewGenerator(42)
	b := pipeline.NewBatch()
	defer b.Release()
	dec := new(observer.ExportEvent)
	var got, want []byte
	now := int64(1764000000123456789)
	for i := range n {
		b.Truncate(0)
		e := b.Next()
		g.Fill(e, now+int64(i)*1000)
		var err error
		want, err = ReferenceJSON{}.Append(want[:0], e)
		if err != nil {
			t.Fatalf("flow %d: reference: %v", i, err)
		}
		if got, err = (JSON{}).Append(got[:0], e); err != nil || !bytes.Equal(got, want) {
			t.Fatalf("flow %d: json %v\n got %s\nwant %s", i, err, got, want)
		}
		checkProtobuf(t, e)

		line := want[:len(want)-1]
		if err := flowjson.Unmarshal(line, dec); err != nil {
			t.Fatalf("flow %d: decode: %v", i, err)
		}
		var ref observer.ExportEvent
		if err := protojson.Unmarshal(line, &ref); err != nil {
			t.Fatal(err)
		}
		if !proto.Equal(dec, &ref) || !proto.Equal(dec.GetFlow(), e.Flow) {
			t.Fatalf("flow %d: decoded differs\n got %v\nwant %v", i, dec, e.Flow)
		}
	}
}

// BenchmarkJSONGenerated encodes a stream of the generate source's flows
// (4,096 of them, over and over), as the JSON a sink writes: one op is one
// flow. Unlike BenchmarkEncoders, whose one flow repeats, it sees the
// endpoints and kinds a node's flows vary over.
func BenchmarkJSONGenerated(b *testing.B) {
	g := generate.NewGenerator(1)
	bt := pipeline.NewBatch()
	defer bt.Release()
	for i := range 4096 {
		g.Fill(bt.Next(), int64(1764000000123456789)+int64(i)*1000)
	}
	var buf []byte
	size := 0
	for i := range bt.Events {
		buf, _ = JSON{}.Append(buf[:0], &bt.Events[i])
		size += len(buf)
	}
	b.SetBytes(int64(size / len(bt.Events)))
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		buf, _ = JSON{}.Append(buf[:0], &bt.Events[i])
		if i++; i == len(bt.Events) {
			i = 0
		}
	}
}
