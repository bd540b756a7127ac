package hubble

import (
	"fmt"
	"strings"
	"unsafe"

	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/mem"

	// The "proto" codec, registered by its package, marshals the request.
	_ "google.golang.org/grpc/encoding/proto"
)

// rawResponse receives one GetFlowsResponse as its bytes.
type rawResponse struct {
	msg string
	// slab is where the messages' copies are carved from, one allocation
	// for many messages: a flow's strings point into it, so a slab lives
	// as long as one of its flows is still in use (or pooled, until its
	// storage is reused). A strings.Builder only appends, so what it holds
	// is never written again, and it allocates without clearing memory
	// that the copies overwrite at once (clearing a 64 KiB slab cost about
	// 0.1 µs per flow).
	slab strings.Builder
}

// Slabs: a message copy comes from a slab of slabSize bytes unless it is
// larger than slabMax, which gets an allocation of its own. A slab holds
// about 60 enriched flows.
const (
	slabSize = 64 << 10
	slabMax  = slabSize / 8
)

// copyOf copies data, n bytes, into r's slab (or its own allocation) and
// returns the copy.
func (r *rawResponse) copyOf(data mem.BufferSlice, n int) string {
	if n > slabMax {
		b := make([]byte, n)
		data.CopyTo(b)
		return unsafe.String(&b[0], n)
	}
	if n > r.slab.Cap()-r.slab.Len() {
		r.slab = strings.Builder{}
		r.slab.Grow(slabSize)
	}
	start := r.slab.Len()
	for _, b := range data {
		r.slab.Write(b.ReadOnlyData())
	}
	return r.slab.String()[start : start+n]
}

// rawCodec is the gRPC codec of the GetFlows stream. It marshals the
// request with gRPC's protobuf codec, and hands each response over as its
// bytes, copied once into a string (carved from a larger slab, see
// rawResponse), so that protobuf-go never builds the
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
	r.msg = r.copyOf(data, n)
	return nil
}
