package hubble

import (
	"fmt"
	"unsafe"

	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/mem"

	// The "proto" codec, registered by its package, marshals the request.
	_ "google.golang.org/grpc/encoding/proto"
)

// rawResponse receives one GetFlowsResponse as its bytes.
type rawResponse struct {
	msg string
}

// rawCodec is the gRPC codec of the GetFlows stream. It marshals the
// request with gRPC's protobuf codec, and hands each response over as its
// bytes, copied once into a string, so that protobuf-go never builds the
// message: the source decodes it into a batch's pooled flow
// (codec.UnmarshalGetFlowsResponse), whose strings then share that copy.
// Its name is "proto", so the wire format and content type are gRPC's
// default.
type rawCodec struct{}

func (rawCodec) Name() string { return "proto" }

func (rawCodec) Marshal(v any) (mem.BufferSlice, error) {
	return encoding.GetCodecV2("proto").Marshal(v)
}

func (rawCodec) Unmarshal(data mem.BufferSlice, v any) error {
	r, ok := v.(*rawResponse)
	if !ok {
		return fmt.Errorf("hubble source: cannot receive into %T", v)
	}
	n := data.Len()
	if n == 0 {
		r.msg = ""
		return nil
	}
	b := make([]byte, n)
	data.CopyTo(b)
	// b is never written again.
	r.msg = unsafe.String(&b[0], n)
	return nil
}
