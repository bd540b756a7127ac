package flowjson

import (
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	flowpb "github.com/flowbus/flowbus/flow"
	"github.com/flowbus/flowbus/flow/flowjson/randflow"
	"github.com/flowbus/flowbus/flow/observer"
)

// FuzzUnmarshal: no panics; the fast path (with strings kept in blocks
// shared across inputs, as a Decoder keeps them) accepts only what
// protojson accepts, with the same result; Unmarshal agrees with protojson.
// Seeds: testdata/fuzz/FuzzUnmarshal.
func FuzzUnmarshal(f *testing.F) {
	f.Add([]byte(`{"flow":{"uuid":"x","l4":{"TCP":{"flags":{"SYN":true}}}},"node_name":"n","time":"2024-01-01T10:00:00Z"}`))
	// Members out of field order and with JSON names, a repeated time, and
	// long strings (escaped or not) that cross the decoder's blocks.
	f.Add([]byte(`{"flow":{"uuid":"u","time":"2024-01-01T10:00:00Z","Summary":"s","source":{"pod_name":"p","ID":1},"sourceNames":["a"]},"time":"2024-01-01T10:00:00Z"}`))
	long := randflow.Enriched()
	long.Uuid = strings.Repeat("x", 1500)
	long.Summary = strings.Repeat("a&b", 400)
	for _, fl := range []*flowpb.Flow{randflow.Enriched(), long} {
		line, err := AppendExport(nil, fl, nil, fl.NodeName, fl.Time)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(line)
	}
	dec := new(observer.ExportEvent)
	f.Fuzz(func(t *testing.T, line []byte) {
		compareDecoders(t, line, dec)
	})
}

// FuzzEncode: for a random flow built from seed (with values protojson
// refuses allowed) and for the flow in wire (a binary flow.Flow, when it
// decodes), the encoder's output or error matches the reference and the
// line decodes back. Seeds: testdata/fuzz/FuzzEncode.
func FuzzEncode(f *testing.F) {
	f.Add(uint64(1), []byte{})
	dec := new(observer.ExportEvent)
	f.Fuzz(func(t *testing.T, seed uint64, wire []byte) {
		checkEvent(t, randomEvent(randflow.New(seed, true)), dec)
		var fl flowpb.Flow
		if proto.Unmarshal(wire, &fl) == nil {
			checkEvent(t, event{f: &fl, node: fl.NodeName, t: fl.Time}, dec)
		}
	})
}
