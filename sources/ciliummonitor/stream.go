package ciliummonitor

import (
	"bufio"
	"encoding/gob"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
)

// Payload is one value of Cilium's monitor stream (protocol 1.2,
// pkg/monitor/payload): a perf sample, a perf lost record, or an agent
// event. Gob matches fields by name, so this type reads and writes the
// same stream as Cilium's.
type Payload struct {
	Data []byte
	CPU  int
	Lost uint64
	Type int
}

// Payload types.
const (
	// PayloadLost is a perf ring overflow: Lost samples were dropped on
	// CPU.
	PayloadLost = 2
	// PayloadSample is a perf sample (or an agent event): Data starts
	// with the message type byte.
	PayloadSample = 9
)

// MaxMessageSize bounds one gob message of the stream. Samples are at
// most 64 KiB of packet plus a header, and access-log records a few KiB;
// a larger length prefix means a corrupt stream, and is refused before
// anything is allocated for it.
const MaxMessageSize = 8 << 20

// ErrMessageTooBig is returned by Reader.Next for a gob message longer
// than MaxMessageSize.
var ErrMessageTooBig = errors.New("monitor stream: gob message larger than 8 MiB")

// Reader reads payloads from a monitor stream: one gob stream per
// connection or file.
type Reader struct {
	fr  *frameReader
	dec *gob.Decoder
}

// NewReader returns a Reader of the stream r.
func NewReader(r io.Reader) *Reader {
	fr := &frameReader{br: bufio.NewReaderSize(r, 64<<10)}
	return &Reader{fr: fr, dec: gob.NewDecoder(fr)}
}

// Next decodes the next payload into p, reusing p.Data's storage. It
// returns io.EOF at the clean end of the stream, io.ErrUnexpectedEOF if
// the stream ends inside a payload, and another error for a corrupt
// stream, after which the Reader cannot go on.
func (r *Reader) Next(p *Payload) error {
	// Gob leaves out zero fields, so clear what the last payload set.
	p.Data, p.CPU, p.Lost, p.Type = p.Data[:0], 0, 0, 0
	if err := r.dec.Decode(p); err != nil {
		if ferr := r.fr.err; ferr != nil && ferr != io.EOF {
			return ferr // the framing's diagnosis is the more precise one
		}
		if errors.Is(err, io.EOF) && (r.fr.inMessage() || r.fr.buffered() > 0) {
			return io.ErrUnexpectedEOF
		}
		return err
	}
	return nil
}

// Buffered reports how many bytes of the stream have been read but not
// decoded; 0 means the next Next may block.
func (r *Reader) Buffered() int { return r.fr.buffered() }

// Offset is the number of stream bytes handed to the decoder so far, for
// error messages.
func (r *Reader) Offset() int64 { return r.fr.offset }

// frameReader hands gob its messages one at a time, after checking each
// length prefix against MaxMessageSize.
type frameReader struct {
	br     *bufio.Reader
	msg    []byte // the current message, prefix included
	pos    int
	offset int64
	err    error
}

func (f *frameReader) inMessage() bool { return f.pos > 0 && f.pos < len(f.msg) }

func (f *frameReader) buffered() int { return len(f.msg) - f.pos + f.br.Buffered() }

func (f *frameReader) fill() error {
	if f.pos < len(f.msg) {
		return nil
	}
	if f.err != nil {
		return f.err
	}
	err := f.next()
	if err != nil {
		f.err = err
		f.msg, f.pos = f.msg[:0], 0
	}
	return err
}

// next reads the next message into f.msg.
func (f *frameReader) next() error {
	f.msg, f.pos = f.msg[:0], 0
	// Gob's unsigned integer: one byte below 128, else the negated byte
	// count followed by that many big-endian bytes.
	b, err := f.br.ReadByte()
	if err != nil {
		return err
	}
	f.msg = append(f.msg, b)
	var n uint64
	if b < 0x80 {
		n = uint64(b)
	} else {
		k := int(-int8(b))
		if k < 1 || k > 8 {
			return fmt.Errorf("monitor stream: invalid gob length prefix 0x%02x at offset %d", b, f.offset)
		}
		for i := 0; i < k; i++ {
			c, err := f.br.ReadByte()
			if err != nil {
				return unexpected(err)
			}
			f.msg = append(f.msg, c)
			n = n<<8 | uint64(c)
		}
	}
	if n == 0 { // gob never writes an empty message
		return fmt.Errorf("monitor stream: empty gob message at offset %d", f.offset)
	}
	if n > MaxMessageSize {
		return fmt.Errorf("%w (%d bytes at offset %d)", ErrMessageTooBig, n, f.offset)
	}
	start := len(f.msg)
	if cap(f.msg) < start+int(n) {
		m := make([]byte, start, start+int(n))
		copy(m, f.msg)
		f.msg = m
	}
	f.msg = f.msg[:start+int(n)]
	if _, err := io.ReadFull(f.br, f.msg[start:]); err != nil {
		return unexpected(err)
	}
	return nil
}

func unexpected(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}

func (f *frameReader) Read(p []byte) (int, error) {
	if err := f.fill(); err != nil {
		return 0, err
	}
	n := copy(p, f.msg[f.pos:])
	f.pos += n
	f.offset += int64(n)
	return n, nil
}

func (f *frameReader) ReadByte() (byte, error) {
	if err := f.fill(); err != nil {
		return 0, err
	}
	b := f.msg[f.pos]
	f.pos++
	f.offset++
	return b, nil
}

// Recorder writes payloads as a monitor stream, which the cilium-monitor
// source replays with `path:`. It is safe for concurrent use.
type Recorder struct {
	mu  sync.Mutex
	bw  *bufio.Writer
	enc *gob.Encoder
	c   io.Closer
	p   Payload
}

// NewRecorder returns a Recorder writing to w. Call Flush (or Close) to
// push buffered payloads out.
func NewRecorder(w io.Writer) *Recorder {
	bw := bufio.NewWriterSize(w, 64<<10)
	return &Recorder{bw: bw, enc: gob.NewEncoder(bw)}
}

// CreateRecorder creates (or truncates) the file path and returns a
// Recorder writing to it; Close closes the file.
func CreateRecorder(path string) (*Recorder, error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, fmt.Errorf("monitor recording: %w", err)
	}
	r := NewRecorder(f)
	r.c = f
	return r, nil
}

// Write appends p to the stream.
func (r *Recorder) Write(p *Payload) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if err := r.enc.Encode(p); err != nil {
		return fmt.Errorf("monitor recording: %w", err)
	}
	return nil
}

// Sample appends a perf sample read on cpu.
func (r *Recorder) Sample(cpu int, data []byte) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.p = Payload{Data: data, CPU: cpu, Type: PayloadSample}
	err := r.enc.Encode(&r.p)
	r.p.Data = nil
	if err != nil {
		return fmt.Errorf("monitor recording: %w", err)
	}
	return nil
}

// Lost appends a perf lost record: n samples lost on cpu.
func (r *Recorder) Lost(cpu int, n uint64) error {
	return r.Write(&Payload{CPU: cpu, Lost: n, Type: PayloadLost})
}

// Flush writes buffered payloads to the underlying writer.
func (r *Recorder) Flush() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if err := r.bw.Flush(); err != nil {
		return fmt.Errorf("monitor recording: %w", err)
	}
	return nil
}

// Close flushes and, for a Recorder from CreateRecorder, closes the file.
func (r *Recorder) Close() error {
	err := r.Flush()
	if r.c != nil {
		if cerr := r.c.Close(); err == nil && cerr != nil {
			err = fmt.Errorf("monitor recording: %w", cerr)
		}
	}
	return err
}
