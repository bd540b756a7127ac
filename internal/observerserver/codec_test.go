package observerserver

import (
	"bytes"
	"testing"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	flowpb "github.com/flowbus/flowbus/flow"
	"github.com/flowbus/flowbus/flow/flowjson/randflow"
	"github.com/flowbus/flowbus/flow/observer"
)

// TestWireCodec checks that the server's codec writes what proto.Marshal
// writes, for the responses GetFlows sends and for any other message.
func TestWireCodec(t *testing.T) {
	f := randflow.Enriched()
	sl := &slot{kind: kindFlow, node: "node-1", timed: true, sec: 1700000000, nsec: 5}
	sl.flow = f
	var o out
	o.load(sl, &request{})
	loaded, err := o.message()
	if err != nil {
		t.Fatal(err)
	}
	small := &observer.GetFlowsResponse{}
	small.ProtoReflect().SetUnknown([]byte{0x8a, 0x3e, 0x01, 'n'}) // node_name "n"
	mixed := &observer.GetFlowsResponse{NodeName: "n"}
	mixed.ProtoReflect().SetUnknown([]byte{0xf8, 0x3e, 0x01}) // field 1007, varint 1
	for _, c := range []struct {
		name string
		msg  proto.Message
	}{
		{"loaded flow response", loaded},
		{"small unknown-only response", small},
		{"empty response", &observer.GetFlowsResponse{}},
		{"unknown fields and node name", mixed},
		{"lost events", &observer.GetFlowsResponse{NodeName: "n", Time: timestamppb.Now(),
			ResponseTypes: &observer.GetFlowsResponse_LostEvents{LostEvents: &flowpb.LostEvent{NumEventsLost: 3}}}},
		{"request", &observer.GetFlowsRequest{Follow: true, Number: 7}},
	} {
		t.Run(c.name, func(t *testing.T) {
			want, err := proto.Marshal(c.msg)
			if err != nil {
				t.Fatal(err)
			}
			got, err := wireCodec{}.Marshal(c.msg)
			if err != nil {
				t.Fatal(err)
			}
			defer got.Free()
			if b := got.Materialize(); !bytes.Equal(b, want) {
				t.Fatalf("codec wrote %d bytes %x, proto.Marshal %d bytes %x", len(b), b, len(want), want)
			}
		})
	}
}
