package file

import (
	"bufio"
	"context"
	"errors"
	"io"
)

// maxLineBytes bounds one line; a longer line is skipped as malformed
// rather than held in memory.
const maxLineBytes = 64 << 20

// readBufferBytes is the bufio buffer: lines shorter than this are returned
// without copying.
const readBufferBytes = 256 << 10

// errLineTooLong reports a line longer than maxLineBytes, which was skipped.
var errLineTooLong = errors.New("line longer than 64 MiB")

// lineReader splits its input into lines of any length up to maxLineBytes.
// At the end of the input an unfinished line stays pending, so that a
// followed file can complete it later; finish returns it.
type lineReader struct {
	br      *bufio.Reader
	long    []byte // the current line when it spans buffer refills
	used    bool   // long was returned and must be cleared before reuse
	tooLong bool   // skipping the rest of an overlong line
	n       int64  // bytes consumed from br
}

func newLineReader(r io.Reader) *lineReader {
	return &lineReader{br: bufio.NewReaderSize(r, readBufferBytes)}
}

// reset starts over on r, dropping any pending partial line.
func (r *lineReader) reset(src io.Reader) {
	r.br.Reset(src)
	r.long, r.used, r.tooLong, r.n = r.long[:0], false, false, 0
}

// next returns the next complete line without its '\n' (and without a
// trailing '\r'). The slice is valid until the next call. It returns
// errLineTooLong once for a line it skipped, and the reader's error (io.EOF
// at the end of the input) when no complete line is left.
func (r *lineReader) next() ([]byte, error) {
	if r.used {
		r.long, r.used = r.long[:0], false
	}
	for {
		chunk, err := r.br.ReadSlice('\n')
		r.n += int64(len(chunk))
		switch {
		case err == nil:
			line := chunk
			if len(r.long) > 0 || r.tooLong {
				r.keep(chunk)
				line, r.used = r.long, true
			}
			if r.tooLong {
				r.tooLong = false
				return nil, errLineTooLong
			}
			return trimEOL(line), nil
		case errors.Is(err, bufio.ErrBufferFull):
			r.keep(chunk)
		default:
			r.keep(chunk)
			return nil, err
		}
	}
}

// keep appends a piece of an unfinished line.
func (r *lineReader) keep(chunk []byte) {
	if r.tooLong {
		return
	}
	if len(r.long)+len(chunk) > maxLineBytes+2 { // + "\r\n"
		r.tooLong = true
		r.long = r.long[:0]
		return
	}
	r.long = append(r.long, chunk...)
}

// finish returns the pending unfinished line at the end of the input, if
// any, and forgets it.
func (r *lineReader) finish() ([]byte, error) {
	if r.used {
		r.long, r.used = r.long[:0], false
	}
	if r.tooLong {
		r.tooLong = false
		return nil, errLineTooLong
	}
	if len(r.long) == 0 {
		return nil, io.EOF
	}
	r.used = true
	return trimEOL(r.long), nil
}

// pendingBytes is the length of the unfinished line held, counted in n.
func (r *lineReader) pendingBytes() int64 {
	if r.used || r.tooLong {
		return 0
	}
	return int64(len(r.long))
}

func trimEOL(b []byte) []byte {
	if n := len(b); n > 0 && b[n-1] == '\n' {
		b = b[:n-1]
	}
	if n := len(b); n > 0 && b[n-1] == '\r' {
		b = b[:n-1]
	}
	return b
}

// cancelReader reads from a blocking reader (stdin, a FIFO) in a helper
// goroutine so that a read can be abandoned when ctx ends. The helper reads
// into its own buffer, never into a caller's slice after Read returned.
type cancelReader struct {
	ctx  context.Context
	req  chan struct{}
	res  chan readResult
	buf  []byte
	rest []byte // data received but not yet handed out
	err  error  // the error that came with rest
}

type readResult struct {
	n   int
	err error
}

func newCancelReader(ctx context.Context, r io.Reader) *cancelReader {
	c := &cancelReader{
		ctx: ctx,
		req: make(chan struct{}),
		res: make(chan readResult),
		buf: make([]byte, 64<<10),
	}
	go func() {
		for {
			select {
			case <-ctx.Done():
				return
			case <-c.req:
			}
			n, err := r.Read(c.buf)
			select {
			case c.res <- readResult{n, err}:
			case <-ctx.Done():
				return
			}
		}
	}()
	return c
}

// Read implements io.Reader; it returns ctx.Err() once ctx is done.
func (c *cancelReader) Read(p []byte) (int, error) {
	if len(c.rest) > 0 || c.err != nil {
		n := copy(p, c.rest)
		c.rest = c.rest[n:]
		if len(c.rest) > 0 {
			return n, nil
		}
		err := c.err
		c.err = nil
		return n, err
	}
	select {
	case c.req <- struct{}{}:
	case <-c.ctx.Done():
		return 0, c.ctx.Err()
	}
	select {
	case r := <-c.res:
		n := copy(p, c.buf[:r.n])
		if n < r.n {
			c.rest, c.err = c.buf[n:r.n], r.err
			return n, nil
		}
		return n, r.err
	case <-c.ctx.Done():
		return 0, c.ctx.Err()
	}
}
