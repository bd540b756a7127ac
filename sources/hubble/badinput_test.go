package hubble_test

import (
	"fmt"
	"io"
	"net"
	"os"
	"runtime"
	"runtime/debug"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/encoding"

	"github.com/flowbus/flowbus/internal/observerserver"
)

// garbageListener accepts connections on sock and answers each with
// payload, then closes it.
func garbageListener(t *testing.T, sock string, payload []byte) (stop func()) {
	lis := unixListener(t, sock)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := lis.Accept()
			if err != nil {
				return
			}
			_, _ = c.Write(payload)
			c.Close()
		}
	}()
	return func() {
		lis.Close()
		wg.Wait()
		os.Remove(sock)
	}
}

// rawCodec sends []byte messages as they are, to put bytes that are not a
// GetFlowsResponse in a well-formed gRPC stream.
type rawCodec struct{}

func (rawCodec) Marshal(v any) ([]byte, error) { return v.([]byte), nil }
func (rawCodec) Unmarshal(data []byte, v any) error {
	*(v.(*[]byte)) = data
	return nil
}
func (rawCodec) Name() string { return "proto" }

var _ encoding.Codec = rawCodec{}

// serveRaw serves observer.Observer/GetFlows with a handler that sends msg
// and ends the stream.
func serveRaw(t *testing.T, sock string, msg []byte) (stop func()) {
	g := grpc.NewServer(grpc.ForceServerCodec(rawCodec{}))
	g.RegisterService(&grpc.ServiceDesc{
		ServiceName: "observer.Observer",
		HandlerType: (*any)(nil),
		Streams: []grpc.StreamDesc{{
			StreamName:    "GetFlows",
			ServerStreams: true,
			Handler: func(_ any, stream grpc.ServerStream) error {
				var req []byte
				if err := stream.RecvMsg(&req); err != nil {
					return err
				}
				return stream.SendMsg(msg)
			},
		}},
	}, struct{}{})
	lis := unixListener(t, sock)
	done := make(chan struct{})
	go func() { defer close(done); _ = g.Serve(lis) }()
	return func() { g.Stop(); <-done; os.Remove(sock) }
}

// cutProxy forwards a unix socket to another; the first connection's
// server-to-client direction is cut after cut bytes (both sides closed),
// later connections are forwarded whole.
func cutProxy(t *testing.T, sock, upstream string, cut int64) *atomic.Int32 {
	lis := unixListener(t, sock)
	t.Cleanup(func() { lis.Close() })
	var conns atomic.Int32
	go func() {
		for {
			c, err := lis.Accept()
			if err != nil {
				return
			}
			n := conns.Add(1)
			u, err := net.Dial("unix", upstream)
			if err != nil {
				c.Close()
				continue
			}
			go func() { _, _ = io.Copy(u, c); u.Close() }()
			go func() {
				if n == 1 {
					_, _ = io.CopyN(c, u, cut)
				} else {
					_, _ = io.Copy(c, u)
				}
				c.Close()
				u.Close()
			}()
		}
	}()
	return &conns
}

// TestBadInput: an unreachable address, a peer that is not gRPC, a message
// that is not a GetFlowsResponse and a stream cut in the middle of a
// message each give a counted error and a retry, never a crash; the source
// is unready meanwhile, and recovers once a real server answers.
func TestBadInput(t *testing.T) {
	fs := testFlows(t, 2000, 11, base)
	for _, tc := range []struct {
		name string
		bad  func(t *testing.T, sock string) (stop func())
	}{
		{"unreachable", func(*testing.T, string) func() { return func() {} }},
		{"not gRPC", func(t *testing.T, sock string) func() {
			return garbageListener(t, sock, []byte("HTTP/1.1 400 Bad Request\r\n\r\n\x00\xff garbage"))
		}},
		{"HTTP/2 preface then garbage", func(t *testing.T, sock string) func() {
			return garbageListener(t, sock, append([]byte("\x00\x00\x12\x04\x00\x00\x00\x00\x00"), make([]byte, 64)...))
		}},
		{"not a GetFlowsResponse", func(t *testing.T, sock string) func() {
			return serveRaw(t, sock, []byte{0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f, 0x01})
		}},
		// A flow whose source endpoint holds a label longer than the
		// endpoint.
		{"truncated label", func(t *testing.T, sock string) func() {
			return serveRaw(t, sock, []byte{0x0a, 0x05, 0x42, 0x03, 0x22, 0x05, 'a'})
		}},
		{"invalid UTF-8 uuid", func(t *testing.T, sock string) func() {
			return serveRaw(t, sock, []byte{0x0a, 0x04, 0x92, 0x02, 0x01, 0xff})
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sock := socketPath(t)
			stopBad := tc.bad(t, sock)
			id, c := newCapture(t)
			r := start(t, pipelineYAML(fmt.Sprintf("address: unix://%s\nsince: %s\nreconnect: {min: 10ms, max: 50ms}", sock, since(base)), id, ""))
			r.waitMetric(t, "flowbus_hubble_source_stream_errors_total", 3)
			if v := r.metric("flowbus_hubble_source_connected"); v != 0 {
				t.Fatalf("connected = %v while failing", v)
			}
			if decodes := r.metric("flowbus_hubble_source_decode_errors_total"); decodes < 3 && tc.name != "unreachable" && tc.name != "not gRPC" && tc.name != "HTTP/2 preface then garbage" {
				t.Fatalf("decode errors = %v, want every failed stream counted", decodes)
			}
			stopBad()
			srv := observerserver.New(observerserver.Options{Capacity: 4095})
			putFlows(srv, fs)
			serve(t, srv, unixListener(t, sock), nil)
			c.waitFlows(t, len(fs))
			r.stop(t)
			if !slices.Equal(c.uuids, uuidsOf(fs)) {
				t.Fatal("flows differ after recovering")
			}
		})
	}

	t.Run("cut mid-message", func(t *testing.T) {
		up := socketPath(t)
		srv := observerserver.New(observerserver.Options{Capacity: 4095})
		putFlows(srv, fs)
		serve(t, srv, unixListener(t, up), nil)
		sock := socketPath(t)
		// Past the HTTP/2 handshake, inside the flows.
		conns := cutProxy(t, sock, up, 200_000+7)
		id, c := newCapture(t)
		r := start(t, pipelineYAML(fmt.Sprintf("address: unix://%s\nsince: %s\nreconnect: {min: 10ms, max: 50ms}", sock, since(base)), id, ""))
		c.waitFlows(t, len(fs))
		r.stop(t)
		if conns.Load() < 2 {
			t.Fatalf("%d connections: the stream was not cut", conns.Load())
		}
		if r.metric("flowbus_hubble_source_stream_errors_total") < 1 {
			t.Fatal("the cut stream was not counted")
		}
		checkUnique(t, c.uuids)
		if !slices.Equal(c.uuids, uuidsOf(fs)) {
			t.Fatalf("got %d flows, want each of the %d once, in order", len(c.uuids), len(fs))
		}
	})
}

// TestSlowSinkBlock: with when_full: block, a slow sink holds the server
// back through gRPC flow control: what the server has sent stays within a
// bounded distance of what the sink has taken, and the heap stays flat.
func TestSlowSinkBlock(t *testing.T) {
	fs := testFlows(t, 4096, 12, base)
	srv := observerserver.New(observerserver.Options{Capacity: 1<<16 - 1})
	for i := 0; i < 60000; i++ {
		srv.PutFlow(fs[i%len(fs)])
	}
	sock := socketPath(t)
	serve(t, srv, unixListener(t, sock), nil)
	id, c := newCapture(t)
	r := start(t, pipelineYAML(fmt.Sprintf("address: unix://%s\nsince: %s", sock, since(base)), id,
		"delay: 100ms\nbuffer: {events: 1024, when_full: block}"))
	var maxAhead, maxHeap, minHeap, maxRSS, minRSS uint64
	minHeap, minRSS = ^uint64(0), ^uint64(0)
	var ms runtime.MemStats
	for i := 0; i < 30; i++ {
		time.Sleep(100 * time.Millisecond)
		ahead := srv.Sent() - uint64(c.count())
		maxAhead = max(maxAhead, ahead)
		if i >= 5 {
			// Free memory goes back to the OS first, so that RSS is
			// what the process holds, not what earlier tests in the
			// same process left for the runtime to reuse.
			debug.FreeOSMemory()
			runtime.ReadMemStats(&ms)
			maxHeap, minHeap = max(maxHeap, ms.HeapInuse), min(minHeap, ms.HeapInuse)
			rss := rssBytes(t)
			maxRSS, minRSS = max(maxRSS, rss), min(minRSS, rss)
		}
	}
	got := c.count()
	r.stop(t)
	t.Logf("sink took %d flows in 3s; the server was at most %d flows ahead; heap in use %d..%d MiB, RSS %d..%d MiB",
		got, maxAhead, minHeap>>20, maxHeap>>20, minRSS>>20, maxRSS>>20)
	if got >= 60000 {
		t.Fatal("the sink was not slow: the test shows nothing")
	}
	// Bound: the source's flow-control window (4 MiB, about 3,700 of
	// these flows), the socket's buffers, one batch being filled, one
	// being decoded, and the sink's buffer.
	if maxAhead > 20000 {
		t.Fatalf("the server ran %d flows ahead of the sink: no backpressure", maxAhead)
	}
	if maxHeap-minHeap > 64<<20 || maxRSS-minRSS > 64<<20 {
		t.Fatalf("memory grew while the sink was slow: heap in use %d..%d MiB, RSS %d..%d MiB", minHeap>>20, maxHeap>>20, minRSS>>20, maxRSS>>20)
	}
}

// rssBytes is the process's resident set size.
func rssBytes(t *testing.T) uint64 {
	b, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		t.Fatal(err)
	}
	var size, resident uint64
	if _, err := fmt.Sscan(string(b), &size, &resident); err != nil {
		t.Fatal(err)
	}
	return resident * uint64(os.Getpagesize())
}
