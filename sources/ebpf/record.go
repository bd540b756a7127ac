package ebpf

import (
	"bufio"
	"encoding/gob"
	"fmt"
	"os"
)

// recorder writes raw samples as a cilium-monitor stream.
type recorder interface {
	Sample(cpu int, data []byte) error
	Lost(cpu int, n uint64) error
	Close() error
}

// monitorPayload has the field names and kinds of Cilium's monitor
// payload, which is all gob matches on (hubble.md §5.14).
type monitorPayload struct {
	Data []byte
	CPU  int
	Lost uint64
	Type int
}

// Payload types of the monitor protocol.
const (
	payloadRecordLost  = 2
	payloadEventSample = 9
)

// gobRecorder writes one gob stream, as Cilium's monitor socket does.
type gobRecorder struct {
	f   *os.File
	w   *bufio.Writer
	enc *gob.Encoder
}

func newRecorder(path string) (recorder, error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return nil, err
	}
	w := bufio.NewWriterSize(f, 64<<10)
	return &gobRecorder{f: f, w: w, enc: gob.NewEncoder(w)}, nil
}

func (r *gobRecorder) Sample(cpu int, data []byte) error {
	return r.enc.Encode(&monitorPayload{Data: data, CPU: cpu, Type: payloadEventSample})
}

func (r *gobRecorder) Lost(cpu int, n uint64) error {
	return r.enc.Encode(&monitorPayload{CPU: cpu, Lost: n, Type: payloadRecordLost})
}

func (r *gobRecorder) Close() error {
	ferr := r.w.Flush()
	cerr := r.f.Close()
	if ferr != nil {
		return fmt.Errorf("flush: %w", ferr)
	}
	return cerr
}
