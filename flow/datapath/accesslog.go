package datapath

import flowpb "github.com/flowbus/flowbus/flow"

// DecodeAccessLog decodes an L7 access-log record as the monitor socket
// carries it (the bytes after the message type byte 129: a gob-encoded
// record) into f.
func (d *Decoder) DecodeAccessLog(data []byte, f *flowpb.Flow) error {
	return malformed("access log: not yet supported")
}
