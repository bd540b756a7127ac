package hubble

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"testing"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// grpcMessages frames msgs as gRPC does on the wire.
func grpcMessages(msgs ...[]byte) []byte {
	var b []byte
	for _, m := range msgs {
		b = append(b, 0)
		b = binary.BigEndian.AppendUint32(b, uint32(len(m)))
		b = append(b, m...)
	}
	return b
}

// TestCallData: messages arrive whole when the stream is cut into DATA
// frames of eleven sizes, from a byte to the whole stream: prefixes and
// messages split across frames, several in one, empty messages.
func TestCallData(t *testing.T) {
	var msgs [][]byte
	for i, n := range []int{1100, 0, 1, 4, 5, 16 << 10, 16<<10 + 1, 3000, 0, 64 << 10, 700, 1100} {
		msgs = append(msgs, bytes.Repeat([]byte{byte(i + 1)}, n))
	}
	wire := grpcMessages(msgs...)
	for _, chunk := range []int{1, 2, 3, 5, 6, 7, 1000, 1105, 4096, maxFrame, len(wire)} {
		t.Run(fmt.Sprint(chunk), func(t *testing.T) {
			c := &call{size: -1}
			var got [][]byte
			deliver := func(m []byte) error {
				got = append(got, bytes.Clone(m))
				return nil
			}
			for w := wire; len(w) > 0; {
				n := min(chunk, len(w))
				// The frame's buffer is reused for the next frame, as the
				// Framer's is.
				frame := bytes.Clone(w[:n])
				if err := c.data(frame, deliver); err != nil {
					t.Fatal(err)
				}
				clear(frame)
				w = w[n:]
			}
			if c.midMessage() {
				t.Fatal("mid-message after the last frame")
			}
			if len(got) != len(msgs) {
				t.Fatalf("%d messages, want %d", len(got), len(msgs))
			}
			for i := range msgs {
				if !bytes.Equal(got[i], msgs[i]) {
					t.Fatalf("message %d: %d bytes, differs from the %d sent", i, len(got[i]), len(msgs[i]))
				}
			}
		})
	}
}

// peer is the server's side of a call's connection in the tests: it reads
// what the call sends and writes frames of the test's choosing.
type peer struct {
	conn net.Conn
	fr   *http2.Framer
	// what it read: the request's message, and every frame type after it
	request []byte
	frames  []string
	hangUp  bool // close the connection after the script
	err     error
	done    chan struct{}
}

// wait waits for the peer to finish and returns its error.
func (p *peer) wait() error {
	<-p.done
	return p.err
}

// connPair is a connection over loopback TCP and its other end: unlike
// net.Pipe's, its writes do not wait for the reader.
func connPair(t *testing.T) (net.Conn, net.Conn) {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer lis.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, _ := lis.Accept()
		accepted <- c
	}()
	cc, err := net.Dial("tcp", lis.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	sc := <-accepted
	if sc == nil {
		t.Fatal("accept failed")
	}
	return cc, sc
}

// newTestCall makes a call over a pipe to a peer and sends its request
// (req, with the peer's window opened by grant first if not nil). The
// peer then runs script, and reads on until the call closes or, with
// hangUp, closes the connection.
func newTestCall(t *testing.T, req []byte, grant func(fr *http2.Framer), script func(fr *http2.Framer), hangUp bool) (*call, *peer) {
	t.Helper()
	cc, sc := connPair(t)
	p := &peer{conn: sc, fr: http2.NewFramer(sc, sc), done: make(chan struct{}), hangUp: hangUp}
	p.fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	go func() { defer close(p.done); p.err = p.run(grant, script) }()
	c := newCall(context.Background(), cc)
	t.Cleanup(func() {
		c.close()
		if err := p.wait(); err != nil {
			t.Errorf("peer: %v", err)
		}
	})
	if err := c.send("http", "localhost", "/observer.Observer/GetFlows", req); err != nil {
		t.Fatalf("send: %v", err)
	}
	return c, p
}

func (p *peer) run(grant, script func(fr *http2.Framer)) error {
	defer p.conn.Close()
	preface := make([]byte, len(http2.ClientPreface))
	if _, err := io.ReadFull(p.conn, preface); err != nil || string(preface) != http2.ClientPreface {
		return fmt.Errorf("preface %q: %v", preface, err)
	}
	granted := false
	for {
		f, err := p.fr.ReadFrame()
		if err != nil {
			return fmt.Errorf("read the request: %w", err)
		}
		switch f := f.(type) {
		case *http2.MetaHeadersFrame:
			for _, want := range []string{":method=POST", ":path=/observer.Observer/GetFlows", "content-type=application/grpc", "te=trailers"} {
				k, v, _ := strings.Cut(want, "=")
				if got := headerValue(f, k); got != v {
					return fmt.Errorf("request header %s = %q, want %q", k, got, v)
				}
			}
			if grant != nil && !granted {
				granted = true
				grant(p.fr)
			}
		case *http2.DataFrame:
			p.request = append(p.request, f.Data()...)
			if !f.StreamEnded() {
				continue
			}
			script(p.fr)
			if p.hangUp {
				return nil
			}
			for {
				f, err := p.fr.ReadFrame()
				if err != nil {
					return nil
				}
				p.frames = append(p.frames, f.Header().Type.String())
			}
		}
	}
}

// writeHeaders writes a header block of name, value pairs on stream 1.
func writeHeaders(fr *http2.Framer, end bool, kv ...string) {
	var b bytes.Buffer
	enc := hpack.NewEncoder(&b)
	for i := 0; i+1 < len(kv); i += 2 {
		_ = enc.WriteField(hpack.HeaderField{Name: kv[i], Value: kv[i+1]})
	}
	_ = fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: b.Bytes(), EndHeaders: true, EndStream: end})
}

var okHeaders = []string{":status", "200", "content-type", "application/grpc"}

// TestCallResponses: what the server sends becomes messages, io.EOF at a
// clean end, or an error with the gRPC code the server meant or its
// breach deserves.
func TestCallResponses(t *testing.T) {
	msgs := [][]byte{[]byte("one"), bytes.Repeat([]byte("x"), 20_000), []byte("three")}
	for _, tc := range []struct {
		name   string
		script func(fr *http2.Framer)
		msgs   int
		code   codes.Code // codes.OK: io.EOF
		text   string     // in the error
		hangUp bool       // the server closes the connection after the script
	}{
		{"ok", func(fr *http2.Framer) {
			_ = fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 1 << 20})
			_ = fr.WritePing(false, [8]byte{1, 2, 3})
			writeHeaders(fr, false, okHeaders...)
			wire := grpcMessages(msgs...)
			for len(wire) > 0 {
				n := min(len(wire), 7000)
				_ = fr.WriteData(1, false, wire[:n])
				wire = wire[n:]
			}
			writeHeaders(fr, true, "grpc-status", "0")
		}, 3, codes.OK, "", false},
		{"status with a message", func(fr *http2.Framer) {
			writeHeaders(fr, false, okHeaders...)
			_ = fr.WriteData(1, false, grpcMessages(msgs[0]))
			writeHeaders(fr, true, "grpc-status", "8", "grpc-message", "too many %25 flows%C3%A9")
		}, 1, codes.ResourceExhausted, "too many % flowsé", false},
		{"trailers only", func(fr *http2.Framer) {
			writeHeaders(fr, true, ":status", "200", "content-type", "application/grpc", "grpc-status", "12", "grpc-message", "unknown service observer.Observer")
		}, 0, codes.Unimplemented, "unknown service", false},
		{"HTTP 404", func(fr *http2.Framer) {
			writeHeaders(fr, true, ":status", "404", "content-type", "text/plain")
		}, 0, codes.Unimplemented, "HTTP status", false},
		{"not gRPC", func(fr *http2.Framer) {
			writeHeaders(fr, false, ":status", "200", "content-type", "text/html")
		}, 0, codes.Unknown, "content-type", false},
		{"reset", func(fr *http2.Framer) {
			writeHeaders(fr, false, okHeaders...)
			_ = fr.WriteRSTStream(1, http2.ErrCodeRefusedStream)
		}, 0, codes.Unavailable, "reset", false},
		{"going away before the stream", func(fr *http2.Framer) {
			_ = fr.WriteGoAway(0, http2.ErrCodeNo, []byte("draining"))
		}, 0, codes.Unavailable, "draining", false},
		{"going away after it", func(fr *http2.Framer) {
			writeHeaders(fr, false, okHeaders...)
			_ = fr.WriteGoAway(1, http2.ErrCodeNo, []byte("draining"))
			_ = fr.WriteData(1, false, grpcMessages(msgs[0]))
		}, 1, codes.Unavailable, "going away", true},
		{"going away gracefully", func(fr *http2.Framer) {
			writeHeaders(fr, false, okHeaders...)
			_ = fr.WriteGoAway(1, http2.ErrCodeNo, []byte("draining"))
			_ = fr.WriteData(1, false, grpcMessages(msgs[0]))
			writeHeaders(fr, true, "grpc-status", "0")
		}, 1, codes.OK, "", false},
		{"compressed", func(fr *http2.Framer) {
			writeHeaders(fr, false, okHeaders...)
			_ = fr.WriteData(1, false, []byte{1, 0, 0, 0, 1, 'x'})
		}, 0, codes.Internal, "compressed", false},
		{"too large", func(fr *http2.Framer) {
			writeHeaders(fr, false, okHeaders...)
			_ = fr.WriteData(1, false, []byte{0, 0x7f, 0, 0, 0})
		}, 0, codes.ResourceExhausted, "bytes", false},
		{"data before headers", func(fr *http2.Framer) {
			_ = fr.WriteData(1, false, grpcMessages(msgs[0]))
		}, 0, codes.Internal, "before the response's headers", false},
		{"ended mid-message", func(fr *http2.Framer) {
			writeHeaders(fr, false, okHeaders...)
			_ = fr.WriteData(1, false, grpcMessages(msgs[1])[:100])
			writeHeaders(fr, true, "grpc-status", "0")
		}, 0, codes.Internal, "middle of a message", false},
		{"cut mid-message", func(fr *http2.Framer) {
			writeHeaders(fr, false, okHeaders...)
			_ = fr.WriteData(1, false, grpcMessages(msgs[1])[:100])
		}, 0, codes.Unavailable, "middle of a message", true},
		{"no trailers", func(fr *http2.Framer) {
			writeHeaders(fr, false, okHeaders...)
			_ = fr.WriteData(1, true, grpcMessages(msgs[0]))
		}, 1, codes.Internal, "without trailers", false},
		{"another stream", func(fr *http2.Framer) {
			writeHeaders(fr, false, okHeaders...)
			_ = fr.WriteData(3, false, grpcMessages(msgs[0]))
		}, 0, codes.Internal, "stream 3", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, p := newTestCall(t, []byte("request"), nil, tc.script, tc.hangUp)
			var got [][]byte
			err := c.recv(func(m []byte) error {
				got = append(got, bytes.Clone(m))
				return nil
			})
			if tc.code == codes.OK {
				if !errors.Is(err, io.EOF) {
					t.Fatalf("recv: %v, want io.EOF", err)
				}
			} else if status.Code(err) != tc.code || !strings.Contains(err.Error(), tc.text) {
				t.Fatalf("recv: %v, want code %v and %q", err, tc.code, tc.text)
			}
			if len(got) != tc.msgs {
				t.Fatalf("%d messages, want %d", len(got), tc.msgs)
			}
			for i := range got {
				if !bytes.Equal(got[i], msgs[i]) {
					t.Fatalf("message %d differs", i)
				}
			}
			if string(p.request) != string(grpcMessages([]byte("request"))) {
				t.Fatalf("the server read request %q", p.request)
			}
			c.close()
			if err := p.wait(); err != nil {
				t.Fatalf("peer: %v", err)
			}
			if tc.name == "ok" {
				acks := strings.Join(p.frames, " ")
				if !strings.Contains(acks, "SETTINGS") || !strings.Contains(acks, "PING") {
					t.Fatalf("the call did not acknowledge the server's settings and ping: %s", acks)
				}
			}
		})
	}
}

// TestCallSendWindow: a request larger than HTTP/2's initial window waits
// for the server's window updates and arrives whole.
func TestCallSendWindow(t *testing.T) {
	req := bytes.Repeat([]byte("filter"), 30_000) // 180 kB
	grant := func(fr *http2.Framer) {
		_ = fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 1 << 20})
		_ = fr.WriteWindowUpdate(0, 200_000)
	}
	c, p := newTestCall(t, req, grant, func(fr *http2.Framer) {
		writeHeaders(fr, true, ":status", "200", "content-type", "application/grpc", "grpc-status", "0")
	}, false)
	if err := c.recv(func([]byte) error { return nil }); !errors.Is(err, io.EOF) {
		t.Fatalf("recv: %v", err)
	}
	if !bytes.Equal(p.request, grpcMessages(req)) {
		t.Fatalf("the server read %d bytes of request, want %d", len(p.request), len(req)+5)
	}
}

// TestDecodeMessage: grpc-message's percent-encoding is undone, and a
// stray percent sign kept.
func TestDecodeMessage(t *testing.T) {
	for in, want := range map[string]string{
		"plain":          "plain",
		"a%20b%25c":      "a b%c",
		"%E2%9C%93 done": "✓ done",
		"100%":           "100%",
		"%zz%4":          "%zz%4",
	} {
		if got := decodeMessage(in); got != want {
			t.Errorf("decodeMessage(%q) = %q, want %q", in, got, want)
		}
	}
}

// scriptConn is a connection that reads a fixed server's side and throws
// away what the call writes.
type scriptConn struct {
	net.Conn
	r io.Reader
}

func (c *scriptConn) Read(b []byte) (int, error)  { return c.r.Read(b) }
func (c *scriptConn) Write(b []byte) (int, error) { return len(b), nil }
func (c *scriptConn) Close() error                { return nil }

// FuzzCallResponse: whatever a server sends, the call ends with an error
// (io.EOF at a clean end) and never delivers more than a message's limit.
func FuzzCallResponse(f *testing.F) {
	var b bytes.Buffer
	fr := http2.NewFramer(&b, nil)
	_ = fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 1 << 20})
	writeHeaders(fr, false, okHeaders...)
	wire := grpcMessages([]byte("one"), bytes.Repeat([]byte{0x0a}, 300), nil)
	_ = fr.WriteData(1, false, wire[:150])
	_ = fr.WritePing(false, [8]byte{7})
	_ = fr.WriteData(1, false, wire[150:])
	writeHeaders(fr, true, "grpc-status", "0")
	f.Add(b.Bytes())
	b.Reset()
	writeHeaders(fr, true, ":status", "200", "content-type", "application/grpc", "grpc-status", "5", "grpc-message", "no%20flows")
	f.Add(b.Bytes())
	b.Reset()
	writeHeaders(fr, false, okHeaders...)
	_ = fr.WriteGoAway(1, http2.ErrCodeNo, []byte("bye"))
	_ = fr.WriteRSTStream(1, http2.ErrCodeCancel)
	f.Add(b.Bytes())
	f.Fuzz(func(t *testing.T, server []byte) {
		c := newCall(context.Background(), &scriptConn{r: bytes.NewReader(server)})
		defer c.close()
		err := c.recv(func(m []byte) error {
			if len(m) > maxMessage {
				t.Fatalf("a message of %d bytes", len(m))
			}
			return nil
		})
		if err == nil {
			t.Fatal("recv ended without an error")
		}
	})
}
