package hubble

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// The source makes its one gRPC call, GetFlows, without grpc-go's client.
// GetFlows is a server stream of one message per flow, and grpc-go's client
// spends about 1.7 µs of CPU on each message on top of the copy the source
// makes anyway (BenchmarkGRPCFloor, its client against a call's on the same
// server): a goroutine that reads the frames, a buffer per DATA frame
// (allocated when under 1 KiB), a hand-off per frame over a channel to the
// goroutine that parses the messages, which then hands each to the source.
// A call reads the frames on the goroutine that takes the messages and
// hands each message over straight from the frame it arrived in. It speaks
// HTTP/2 with golang.org/x/net/http2's Framer and hpack, and does itself
// what a server-streaming call needs of gRPC: the request's headers and
// message, the messages' framing (a flag byte and a 4-byte length), flow
// control, and the status in the trailers. Each call has a connection of
// its own, closed with it: a broken stream is re-established on a new one.

const (
	// streamWindow is the flow-control window the source gives the
	// server, for the stream and for the connection: how far the server
	// may send ahead of what the source has taken into its batches (about
	// 4,000 enriched flows). The source gives it back a quarter at a time.
	streamWindow = 4 << 20
	// maxMessage is the largest response the source takes: flows can be
	// large (L7 headers), and Hubble's CLI allows as much.
	maxMessage = 64 << 20
	// readBuffer is the size of the source's read buffer. A GetFlows
	// stream brings one message of about a kilobyte per flow, and a server
	// sends them in writes of up to its write buffer (256 KiB for this
	// project's server); reading them in buffers of that size instead of
	// 32 KiB takes fewer system calls per flow: 0.1–0.5 µs less of the
	// source's CPU per flow in alternated runs of the stream benchmarks.
	readBuffer = 256 << 10
	// maxFrame is the largest frame the source reads: HTTP/2's default,
	// which it does not raise.
	maxFrame = 16 << 10
	// connectTimeout bounds connecting, the TLS handshake and sending the
	// request.
	connectTimeout = 20 * time.Second
	// initialWindow is HTTP/2's window until a peer's settings say
	// otherwise.
	initialWindow = 65535
	userAgent     = "flowbus"
)

// endpoint is where a call connects.
type endpoint struct {
	network, address string // "unix" and a path, or "tcp" and HOST:PORT
	authority        string // the request's :authority
	tls              *tls.Config
}

// parseEndpoint reads the address key: unix:///PATH or HOST:PORT. tc, when
// not nil, makes the connection TLS; its server name defaults to the host.
func parseEndpoint(addr string, tc *tls.Config) (endpoint, error) {
	var ep endpoint
	host := "localhost" // a unix socket's :authority and TLS server name
	switch {
	case addr == "":
		return ep, errors.New("address is empty")
	case strings.HasPrefix(addr, "unix://"):
		path := addr[len("unix://"):]
		if path == "" {
			return ep, fmt.Errorf("address %q: no socket path", addr)
		}
		ep = endpoint{network: "unix", address: path, authority: "localhost"}
	case strings.Contains(addr, "://"):
		return ep, fmt.Errorf("address %q: want unix:///PATH or HOST:PORT", addr)
	default:
		h, port, err := net.SplitHostPort(addr)
		if err != nil || h == "" || port == "" {
			return ep, fmt.Errorf("address %q: want unix:///PATH or HOST:PORT", addr)
		}
		ep = endpoint{network: "tcp", address: addr, authority: addr}
		host = h
	}
	if tc != nil {
		tc = tc.Clone()
		tc.NextProtos = []string{"h2"}
		if tc.ServerName == "" {
			tc.ServerName = host
		}
		ep.tls = tc
	}
	return ep, nil
}

// call is one server-streaming gRPC call on a connection of its own.
type call struct {
	conn net.Conn
	w    *bufio.Writer
	fr   *http2.Framer
	stop func() bool // keeps ctx's end from closing conn, once the call is closed

	// Sending: the windows the server gives, the frame size it takes.
	peerWindow     int64 // its initial stream window
	sendWindow     int64 // what the stream may still send
	connSendWindow int64
	maxSendFrame   int

	// Receiving.
	unacked, connUnacked uint32 // bytes received, not yet given back
	headers              bool   // the response's headers arrived
	goAway               string // why the server is going away, once it said

	// The message being read: its 5-byte prefix, then its bytes.
	prefix  [5]byte
	prefixN int
	size    int    // the message's length; -1 while reading a prefix
	part    []byte // its bytes so far, when it spans frames
}

// open connects to ep and sends the request of the call to path (a
// marshalled message). Until the call is closed, ctx's end closes its
// connection.
func open(ctx context.Context, ep endpoint, path string, req []byte) (*call, error) {
	cctx, cancel := context.WithTimeout(ctx, connectTimeout)
	defer cancel()
	conn, err := dial(cctx, ep)
	if err != nil {
		return nil, err
	}
	c := newCall(ctx, conn)
	if dl, ok := cctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
	}
	if err := c.send(ep.scheme(), ep.authority, path, req); err != nil {
		c.close()
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, err
	}
	_ = conn.SetDeadline(time.Time{})
	return c, nil
}

// dial connects to ep, with TLS when ep says so.
func dial(ctx context.Context, ep endpoint) (net.Conn, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, ep.network, ep.address)
	if err != nil {
		return nil, status.Errorf(codes.Unavailable, "connect: %v", err)
	}
	if ep.tls == nil {
		return conn, nil
	}
	tc := tls.Client(conn, ep.tls)
	if err := tc.HandshakeContext(ctx); err != nil {
		conn.Close()
		return nil, status.Errorf(codes.Unavailable, "TLS handshake: %v", err)
	}
	if p := tc.ConnectionState().NegotiatedProtocol; p != "" && p != "h2" {
		tc.Close()
		return nil, status.Errorf(codes.Unavailable, "TLS: the server chose protocol %q, not HTTP/2 (h2)", p)
	}
	return tc, nil
}

func (ep endpoint) scheme() string {
	if ep.tls != nil {
		return "https"
	}
	return "http"
}

// newCall makes a call on conn, whose closing it takes on; ctx's end
// closes conn until the call is closed.
func newCall(ctx context.Context, conn net.Conn) *call {
	c := &call{
		conn:           conn,
		w:              bufio.NewWriterSize(conn, 16<<10),
		peerWindow:     initialWindow,
		sendWindow:     initialWindow,
		connSendWindow: initialWindow,
		maxSendFrame:   maxFrame,
		size:           -1,
	}
	c.fr = http2.NewFramer(c.w, bufio.NewReaderSize(conn, readBuffer))
	c.fr.SetReuseFrames()
	c.fr.SetMaxReadFrameSize(maxFrame)
	c.fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	c.fr.MaxHeaderListSize = 1 << 20
	c.stop = context.AfterFunc(ctx, func() { conn.Close() })
	return c
}

// close closes the call's connection.
func (c *call) close() {
	c.stop()
	c.conn.Close()
}

// send writes the connection's preface and settings, and the request: its
// headers and its one message, ending the client's side of the stream.
func (c *call) send(scheme, authority, path string, req []byte) error {
	if _, err := c.w.WriteString(http2.ClientPreface); err != nil {
		return c.connError(err)
	}
	if err := c.fr.WriteSettings(
		http2.Setting{ID: http2.SettingEnablePush, Val: 0},
		http2.Setting{ID: http2.SettingInitialWindowSize, Val: streamWindow},
	); err != nil {
		return c.connError(err)
	}
	if err := c.fr.WriteWindowUpdate(0, streamWindow-initialWindow); err != nil {
		return c.connError(err)
	}
	var block bytes.Buffer
	enc := hpack.NewEncoder(&block)
	// Nothing goes into the server's table: the request is the only one.
	enc.SetMaxDynamicTableSizeLimit(0)
	for _, f := range [...]hpack.HeaderField{
		{Name: ":method", Value: "POST"},
		{Name: ":scheme", Value: scheme},
		{Name: ":path", Value: path},
		{Name: ":authority", Value: authority},
		{Name: "content-type", Value: "application/grpc"},
		{Name: "te", Value: "trailers"},
		{Name: "user-agent", Value: userAgent},
	} {
		if err := enc.WriteField(f); err != nil {
			return status.Errorf(codes.Internal, "encode the request's headers: %v", err)
		}
	}
	b := block.Bytes()
	n := min(len(b), maxFrame)
	if err := c.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: b[:n], EndHeaders: n == len(b)}); err != nil {
		return c.connError(err)
	}
	for b = b[n:]; len(b) > 0; b = b[n:] {
		n = min(len(b), maxFrame)
		if err := c.fr.WriteContinuation(1, n == len(b), b[:n]); err != nil {
			return c.connError(err)
		}
	}
	msg := make([]byte, 5+len(req))
	binary.BigEndian.PutUint32(msg[1:], uint32(len(req)))
	copy(msg[5:], req)
	for len(msg) > 0 {
		n := int(min(c.sendWindow, c.connSendWindow, int64(c.maxSendFrame), int64(len(msg))))
		if n <= 0 {
			// Wait for the server to open its window.
			if err := c.w.Flush(); err != nil {
				return c.connError(err)
			}
			f, err := c.fr.ReadFrame()
			if err != nil {
				return c.connError(err)
			}
			if err := c.frame(f, nil); err != nil {
				return err
			}
			continue
		}
		if err := c.fr.WriteData(1, n == len(msg), msg[:n]); err != nil {
			return c.connError(err)
		}
		c.sendWindow -= int64(n)
		c.connSendWindow -= int64(n)
		msg = msg[n:]
	}
	if err := c.w.Flush(); err != nil {
		return c.connError(err)
	}
	return nil
}

// recv reads the response until the stream ends, passing each message to
// deliver, whose slice is valid until it returns. It returns io.EOF when
// the server ended the stream with status OK, deliver's error when it
// fails, and the stream's status or the connection's failure otherwise.
func (c *call) recv(deliver func(msg []byte) error) error {
	for {
		f, err := c.fr.ReadFrame()
		if err != nil {
			return c.connError(err)
		}
		if err := c.frame(f, deliver); err != nil {
			return err
		}
	}
}

// frame handles one frame. deliver is nil while the request is being sent.
func (c *call) frame(f http2.Frame, deliver func([]byte) error) error {
	switch f := f.(type) {
	case *http2.DataFrame:
		if f.StreamID != 1 {
			return c.protocolError("DATA on stream %d", f.StreamID)
		}
		if !c.headers || deliver == nil {
			return status.Error(codes.Internal, "the server sent data before the response's headers")
		}
		c.unacked += f.Length
		c.connUnacked += f.Length
		if c.unacked > streamWindow || c.connUnacked > streamWindow {
			return c.protocolError("the server sent more than the window it was given")
		}
		if err := c.data(f.Data(), deliver); err != nil {
			return err
		}
		if f.StreamEnded() {
			return status.Error(codes.Internal, "the server ended the stream without trailers")
		}
		return c.giveBack()
	case *http2.MetaHeadersFrame:
		if f.StreamID != 1 {
			return c.protocolError("HEADERS on stream %d", f.StreamID)
		}
		if !c.headers {
			c.headers = true
			if err := responseHeaders(f); err != nil {
				return err
			}
			if !f.StreamEnded() {
				return nil
			}
		} else if !f.StreamEnded() {
			return status.Error(codes.Internal, "the server sent headers twice before its trailers")
		}
		return c.trailers(f)
	case *http2.SettingsFrame:
		if f.IsAck() {
			return nil
		}
		if err := f.ForeachSetting(c.setting); err != nil {
			return err
		}
		if err := c.fr.WriteSettingsAck(); err != nil {
			return c.connError(err)
		}
		return c.flush()
	case *http2.WindowUpdateFrame:
		switch f.StreamID {
		case 0:
			c.connSendWindow += int64(f.Increment)
		case 1:
			c.sendWindow += int64(f.Increment)
		}
	case *http2.PingFrame:
		if f.IsAck() {
			return nil
		}
		if err := c.fr.WritePing(true, f.Data); err != nil {
			return c.connError(err)
		}
		return c.flush()
	case *http2.GoAwayFrame:
		c.goAway = fmt.Sprintf("the server is going away (GOAWAY %v %q)", f.ErrCode, f.DebugData())
		if f.LastStreamID < 1 {
			return status.Error(codes.Unavailable, c.goAway+" and did not take the stream")
		}
	case *http2.RSTStreamFrame:
		if f.StreamID == 1 {
			return status.Errorf(resetCode(f.ErrCode), "the server reset the stream (%v)", f.ErrCode)
		}
	}
	return nil
}

// setting applies one of the server's settings.
func (c *call) setting(s http2.Setting) error {
	if err := s.Valid(); err != nil {
		return c.protocolError("setting %v: %v", s, err)
	}
	switch s.ID {
	case http2.SettingInitialWindowSize:
		c.sendWindow += int64(s.Val) - c.peerWindow
		c.peerWindow = int64(s.Val)
	case http2.SettingMaxFrameSize:
		c.maxSendFrame = int(s.Val)
	}
	return nil
}

// data takes a DATA frame's payload: the messages in it, and the parts of
// those that span frames.
func (c *call) data(d []byte, deliver func([]byte) error) error {
	for len(d) > 0 {
		if c.size < 0 {
			var p []byte
			if c.prefixN == 0 && len(d) >= len(c.prefix) {
				p, d = d[:len(c.prefix)], d[len(c.prefix):]
			} else {
				k := copy(c.prefix[c.prefixN:], d)
				c.prefixN += k
				d = d[k:]
				if c.prefixN < len(c.prefix) {
					return nil
				}
				p, c.prefixN = c.prefix[:], 0
			}
			if err := c.begin(p); err != nil {
				return err
			}
			if c.size == 0 {
				c.size = -1
				if err := deliver(nil); err != nil {
					return err
				}
				continue
			}
		}
		if len(c.part) == 0 && len(d) >= c.size {
			msg := d[:c.size]
			d = d[c.size:]
			c.size = -1
			if err := deliver(msg); err != nil {
				return err
			}
			continue
		}
		k := min(c.size-len(c.part), len(d))
		c.part = append(c.part, d[:k]...)
		d = d[k:]
		if len(c.part) == c.size {
			c.size = -1
			err := deliver(c.part)
			c.part = c.part[:0]
			if cap(c.part) > 1<<20 {
				c.part = nil
			}
			if err != nil {
				return err
			}
		}
	}
	return nil
}

// begin reads a message's prefix.
func (c *call) begin(p []byte) error {
	switch p[0] {
	case 0:
	case 1:
		return status.Error(codes.Internal, "the server sent a compressed message, though no compression was offered")
	default:
		return status.Errorf(codes.Internal, "a message's prefix has flags %#x", p[0])
	}
	n := binary.BigEndian.Uint32(p[1:])
	if n > maxMessage {
		return status.Errorf(codes.ResourceExhausted, "a message of %d bytes, more than the %d the source takes", n, maxMessage)
	}
	c.size = int(n)
	return nil
}

// midMessage reports whether a message has begun and not ended.
func (c *call) midMessage() bool { return c.size >= 0 || c.prefixN > 0 }

// giveBack gives the window taken by the data received back to the server
// once it is a quarter of the window.
func (c *call) giveBack() error {
	if c.unacked < streamWindow/4 && c.connUnacked < streamWindow/4 {
		return nil
	}
	if err := c.fr.WriteWindowUpdate(1, c.unacked); err != nil {
		return c.connError(err)
	}
	if err := c.fr.WriteWindowUpdate(0, c.connUnacked); err != nil {
		return c.connError(err)
	}
	c.unacked, c.connUnacked = 0, 0
	return c.flush()
}

func (c *call) flush() error {
	if err := c.w.Flush(); err != nil {
		return c.connError(err)
	}
	return nil
}

// responseHeaders checks the response's headers: HTTP status 200 and gRPC's
// content type, unless they carry a gRPC status already (a response of
// trailers only).
func responseHeaders(f *http2.MetaHeadersFrame) error {
	if f.StreamEnded() && headerValue(f, "grpc-status") != "" {
		return nil
	}
	if s := f.PseudoValue("status"); s != "200" {
		code := codes.Unknown
		if n, err := strconv.Atoi(s); err == nil {
			code = httpCode(n)
		}
		return status.Errorf(code, "the server answered HTTP status %q, not a gRPC response", s)
	}
	if ct := headerValue(f, "content-type"); !strings.HasPrefix(ct, "application/grpc") {
		return status.Errorf(codes.Unknown, "the server answered content-type %q, not a gRPC response", ct)
	}
	return nil
}

// trailers reads the stream's status from its trailers.
func (c *call) trailers(f *http2.MetaHeadersFrame) error {
	s := headerValue(f, "grpc-status")
	code, err := strconv.ParseUint(s, 10, 32)
	if err != nil {
		return status.Errorf(codes.Internal, "the stream ended with grpc-status %q", s)
	}
	if code == 0 {
		if c.midMessage() {
			return status.Error(codes.Internal, "the stream ended in the middle of a message")
		}
		return io.EOF
	}
	return status.Error(codes.Code(code), decodeMessage(headerValue(f, "grpc-message")))
}

func headerValue(f *http2.MetaHeadersFrame, name string) string {
	for _, h := range f.Fields {
		if h.Name == name {
			return h.Value
		}
	}
	return ""
}

// connError is the call's error when reading or writing the connection
// failed with err.
func (c *call) connError(err error) error {
	var ce http2.ConnectionError
	var se http2.StreamError
	if errors.As(err, &ce) || errors.As(err, &se) {
		return c.protocolError("%v", err)
	}
	msg := "connection lost"
	if c.goAway != "" {
		msg = c.goAway + ", connection closed"
	}
	if c.midMessage() {
		msg += " in the middle of a message"
	}
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return status.Error(codes.Unavailable, msg)
	}
	return status.Errorf(codes.Unavailable, "%s: %v", msg, err)
}

// protocolError is a breach of HTTP/2 by the server.
func (c *call) protocolError(format string, args ...any) error {
	return status.Errorf(codes.Internal, "HTTP/2 protocol error: "+format, args...)
}

// resetCode is the gRPC code of a stream reset with code e.
func resetCode(e http2.ErrCode) codes.Code {
	switch e {
	case http2.ErrCodeRefusedStream:
		return codes.Unavailable
	case http2.ErrCodeCancel:
		return codes.Canceled
	case http2.ErrCodeEnhanceYourCalm:
		return codes.ResourceExhausted
	case http2.ErrCodeInadequateSecurity:
		return codes.PermissionDenied
	}
	return codes.Internal
}

// httpCode is the gRPC code of an HTTP status other than 200 that carries
// no gRPC status.
func httpCode(s int) codes.Code {
	switch s {
	case 400:
		return codes.Internal
	case 401:
		return codes.Unauthenticated
	case 403:
		return codes.PermissionDenied
	case 404:
		return codes.Unimplemented
	case 429, 502, 503, 504:
		return codes.Unavailable
	}
	return codes.Unknown
}

// decodeMessage undoes grpc-message's percent-encoding.
func decodeMessage(s string) string {
	if !strings.Contains(s, "%") {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '%' && i+2 < len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+3], 16, 8); err == nil {
				b.WriteByte(byte(v))
				i += 2
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
