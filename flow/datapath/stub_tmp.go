package datapath

import (
	"fmt"

	flowpb "github.com/flowbus/flowbus/flow"
)

type addrCache struct{}

func malformed(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrMalformed}, args...)...)
}

func (d *Decoder) decodeL34(data []byte, f *flowpb.Flow) error  { return malformed("in progress") }
func (d *Decoder) decodeSock(data []byte, f *flowpb.Flow) error { return malformed("in progress") }

// DecodeAccessLog decodes an L7 access-log record as the monitor socket
// carries it (the bytes after the message type byte 129: a gob-encoded
// record) into f.
func (d *Decoder) DecodeAccessLog(data []byte, f *flowpb.Flow) error {
	return malformed("in progress")
}
