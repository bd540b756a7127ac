package observerserver

import (
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/mem"

	"github.com/flowbus/flowbus/flow/observer"
	"github.com/flowbus/flowbus/internal/grpcpool"

	// The "proto" codec, registered by its package, does all the rest.
	_ "google.golang.org/grpc/encoding/proto"
)

// wireCodec is the gRPC codec of a server that serves a Server (see
// ServerOptions): gRPC's protobuf codec, except for the responses GetFlows
// sends. Such a response is an otherwise empty GetFlowsResponse whose
// unknown fields are the encoded response (see out), and its unknown
// fields are exactly what proto.Marshal writes for it: the codec copies
// them into a buffer of grpcpool's, without protobuf-go's size pass and
// reflection over the message. The buffer is gRPC's from then on, as with
// gRPC's own codec: its transport writes it after SendMsg has returned.
type wireCodec struct{}

func (wireCodec) Name() string { return "proto" }

func (wireCodec) Marshal(v any) (mem.BufferSlice, error) {
	r, ok := v.(*observer.GetFlowsResponse)
	if !ok || r.ResponseTypes != nil || r.NodeName != "" || r.Time != nil {
		return encoding.GetCodecV2("proto").Marshal(v)
	}
	b := r.ProtoReflect().GetUnknown()
	if mem.IsBelowBufferPoolingThreshold(len(b)) {
		return mem.BufferSlice{mem.SliceBuffer(append([]byte(nil), b...))}, nil
	}
	buf := grpcpool.Default.Get(len(b))
	copy(*buf, b)
	return mem.BufferSlice{mem.NewBuffer(buf, grpcpool.Default)}, nil
}

func (wireCodec) Unmarshal(data mem.BufferSlice, v any) error {
	return encoding.GetCodecV2("proto").Unmarshal(data, v)
}
