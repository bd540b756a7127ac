// Package monitor reads and writes Cilium's monitor stream: the gob-encoded
// payloads the agent serves on its monitor socket (protocol 1.2), as
// read by the cilium-monitor source and recorded by the ebpf source.
package monitor

import (
	"bufio"
	"bytes"
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
//
// A stream whose type definitions are exactly those gob writes for Payload
// (Cilium's agent and the Recorder both write them) has its values decoded
// by hand, without gob's per-message allocation; any other stream, and any
// value the hand decoder does not take, goes through encoding/gob.
type Reader struct {
	fr   *frameReader
	mode int
	id   int64        // Payload's type id in the stream (fast mode)
	defs []byte       // the stream's type-definition messages
	dec  *gob.Decoder // gob mode
	rr   replayReader
}

const (
	modeStart = iota // no value read yet
	modeFast         // values decoded by hand
	modeGob          // values decoded by encoding/gob
)

// payloadTmplA and payloadTmplB are the type definition gob writes for
// Payload, around its type id: a definition message is
// -id ‖ tmplA ‖ id ‖ tmplB. Gob numbers types per process, so a stream
// from another process has the same definition with its own id.
var payloadTmplA, payloadTmplB = func() ([]byte, []byte) {
	var b bytes.Buffer
	if err := gob.NewEncoder(&b).Encode(&Payload{}); err != nil {
		panic(err)
	}
	data := b.Bytes()
	n, k, _ := gobUint(data)
	body := data[k : k+int(n)]
	id, k, _ := gobInt(body)
	body = body[k:]
	i := bytes.Index(body, []byte("Payload\x01"))
	if id >= 0 || i < 0 {
		panic("unexpected gob type definition for Payload")
	}
	a := body[:i+len("Payload\x01")]
	inner, k, _ := gobInt(body[len(a):])
	if inner != -id {
		panic("unexpected gob type definition for Payload")
	}
	return a, body[len(a)+k:]
}()

// isPayloadDef reports whether defs is exactly gob's definition of Payload
// with type id id.
func isPayloadDef(defs []byte, id int64) bool {
	var b []byte
	b = appendGobInt(b, -id)
	b = append(b, payloadTmplA...)
	b = appendGobInt(b, id)
	b = append(b, payloadTmplB...)
	n, k, ok := gobUint(defs)
	return ok && n == uint64(len(b)) && bytes.Equal(defs[k:], b)
}

func appendGobUint(b []byte, x uint64) []byte {
	if x < 0x80 {
		return append(b, byte(x))
	}
	var buf [8]byte
	n := 0
	for v := x; v > 0; v >>= 8 {
		n++
	}
	for i := 0; i < n; i++ {
		buf[i] = byte(x >> (8 * (n - 1 - i)))
	}
	return append(append(b, byte(-n)), buf[:n]...)
}

func appendGobInt(b []byte, i int64) []byte {
	var u uint64
	if i < 0 {
		u = (^uint64(i) << 1) | 1
	} else {
		u = uint64(i) << 1
	}
	return appendGobUint(b, u)
}

// NewReader returns a Reader of the stream r.
func NewReader(r io.Reader) *Reader {
	fr := &frameReader{br: bufio.NewReaderSize(r, 64<<10)}
	return &Reader{fr: fr, rr: replayReader{fr: fr}}
}

// Next decodes the next payload into p, reusing p.Data's storage. It
// returns io.EOF at the clean end of the stream, io.ErrUnexpectedEOF if
// the stream ends inside a payload, and another error for a corrupt
// stream, after which the Reader cannot go on.
func (r *Reader) Next(p *Payload) error {
	// Gob leaves out zero fields, so clear what the last payload set.
	p.Data, p.CPU, p.Lost, p.Type = p.Data[:0], 0, 0, 0
	if r.mode == modeGob {
		return r.gobNext(p)
	}
	for {
		msg, err := r.fr.message()
		if err != nil {
			if r.mode == modeStart && len(r.defs) > 0 {
				// Let gob judge the definitions read so far first.
				return r.toGob(nil, p)
			}
			return err
		}
		body := msg[gobUintLen(msg[0]):]
		id, k, ok := gobInt(body)
		if !ok {
			return r.toGob(msg, p)
		}
		if id < 0 { // a type definition
			if r.mode == modeFast {
				return r.toGob(msg, p)
			}
			r.defs = append(r.defs, msg...)
			continue
		}
		if r.mode == modeStart {
			if !isPayloadDef(r.defs, id) {
				return r.toGob(msg, p)
			}
			r.mode, r.id = modeFast, id
		}
		if id != r.id || !decodePayload(body[k:], p) {
			p.Data, p.CPU, p.Lost, p.Type = p.Data[:0], 0, 0, 0
			return r.toGob(msg, p)
		}
		return nil
	}
}

// toGob hands the stream to encoding/gob from msg on, after replaying the
// type definitions seen so far.
func (r *Reader) toGob(msg []byte, p *Payload) error {
	r.mode = modeGob
	r.rr.pend = append(append(r.rr.pend[:0], r.defs...), msg...)
	r.dec = gob.NewDecoder(&r.rr)
	return r.gobNext(p)
}

func (r *Reader) gobNext(p *Payload) error {
	err := r.dec.Decode(p)
	if err == nil || !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) {
		return err // nil, or gob's diagnosis of corrupt data
	}
	if ferr := r.fr.err; ferr != nil && ferr != io.EOF {
		return ferr // the framing's diagnosis is the more precise one
	}
	if errors.Is(err, io.EOF) && (r.fr.inMessage() || r.Buffered() > 0) {
		return io.ErrUnexpectedEOF
	}
	return err
}

// decodePayload decodes the fields of a Payload value as gob writes them:
// field-number deltas, each followed by the field's value, then 0. It
// reports false for anything else.
func decodePayload(b []byte, p *Payload) bool {
	field := -1
	for {
		d, n, ok := gobUint(b)
		if !ok {
			return false
		}
		b = b[n:]
		if d == 0 {
			return len(b) == 0
		}
		if d > 4 {
			return false
		}
		field += int(d)
		switch field {
		case 0: // Data
			l, n, ok := gobUint(b)
			if !ok || l > uint64(len(b)-n) {
				return false
			}
			p.Data = append(p.Data[:0], b[n:n+int(l)]...)
			b = b[n+int(l):]
		case 1, 3: // CPU, Type
			i, n, ok := gobInt(b)
			if !ok {
				return false
			}
			if field == 1 {
				p.CPU = int(i)
			} else {
				p.Type = int(i)
			}
			b = b[n:]
		case 2: // Lost
			u, n, ok := gobUint(b)
			if !ok {
				return false
			}
			p.Lost = u
			b = b[n:]
		default:
			return false
		}
	}
}

// gobUint decodes gob's unsigned integer: one byte below 128, else the
// negated byte count followed by that many big-endian bytes.
func gobUint(b []byte) (v uint64, n int, ok bool) {
	if len(b) == 0 {
		return 0, 0, false
	}
	if b[0] < 0x80 {
		return uint64(b[0]), 1, true
	}
	k := int(-int8(b[0]))
	if k < 1 || k > 8 || len(b) < 1+k {
		return 0, 0, false
	}
	for _, c := range b[1 : 1+k] {
		v = v<<8 | uint64(c)
	}
	return v, 1 + k, true
}

// gobInt decodes gob's signed integer: an unsigned one whose low bit is
// the sign.
func gobInt(b []byte) (int64, int, bool) {
	u, n, ok := gobUint(b)
	i := int64(u >> 1)
	if u&1 != 0 {
		i = ^i
	}
	return i, n, ok
}

func gobUintLen(b0 byte) int {
	if b0 < 0x80 {
		return 1
	}
	return 1 + int(-int8(b0))
}

// replayReader gives gob the replayed messages, then the stream.
type replayReader struct {
	pend []byte
	fr   *frameReader
}

func (r *replayReader) Read(p []byte) (int, error) {
	if len(r.pend) > 0 {
		n := copy(p, r.pend)
		r.pend = r.pend[n:]
		return n, nil
	}
	return r.fr.Read(p)
}

func (r *replayReader) ReadByte() (byte, error) {
	if len(r.pend) > 0 {
		c := r.pend[0]
		r.pend = r.pend[1:]
		return c, nil
	}
	return r.fr.ReadByte()
}

// Buffered reports how many bytes of the stream have been read but not
// decoded; 0 means the next Next may block.
func (r *Reader) Buffered() int { return len(r.rr.pend) + r.fr.buffered() }

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

// message returns the rest of the current message, or the next whole
// message (length prefix included).
func (f *frameReader) message() ([]byte, error) {
	if err := f.fill(); err != nil {
		return nil, err
	}
	m := f.msg[f.pos:]
	f.pos = len(f.msg)
	f.offset += int64(len(m))
	return m, nil
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
