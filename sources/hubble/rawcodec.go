package hubble

import (
	"fmt"
	"unsafe"

	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/mem"

	"github.com/flowbus/flowbus/pipeline"

	// The "proto" codec, registered by its package, marshals the request.
	_ "google.golang.org/grpc/encoding/proto"
)

// rawResponse receives one GetFlowsResponse as its bytes, as gRPC read
// them: data holds a reference to gRPC's buffers until copyInto copies them
// into a batch and frees them.
type rawResponse struct {
	data mem.BufferSlice
}

// copyInto copies the message into storage that b owns (Batch.Alloc),
// frees gRPC's buffers, and returns the copy, which the flows decoded from
// it share their strings with: the copy is reused with the batch, so the
// source allocates nothing per message.
func (r rawResponse) copyInto(b *pipeline.Batch) string {
	n := r.data.Len()
	if n == 0 {
		r.data.Free()
		return ""
	}
	buf := b.Alloc(n)
	r.data.CopyTo(buf)
	r.data.Free()
	return unsafe.String(&buf[0], n)
}

// rawCodec is the gRPC codec of the GetFlows stream. It marshals the
// request with gRPC's protobuf codec, and hands each response over as its
// bytes, still in gRPC's buffers (a reference taken), so that protobuf-go
// never builds the message: the source copies it into the batch it goes
// to and decodes it into the batch's pooled flow
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
	// gRPC frees data when Unmarshal returns; the reference taken here
	// keeps the buffers for copyInto. The slice itself is the message's
	// own (gRPC makes one per message).
	data.Ref()
	r.data = data
	return nil
}
