package hubble_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	flowpb "github.com/flowbus/flowbus/flow"
	"github.com/flowbus/flowbus/flow/observer"
	"github.com/flowbus/flowbus/internal/sinktest"
	"github.com/flowbus/flowbus/pipeline"
	"github.com/flowbus/flowbus/sinks/hubble"
)

// socketPath returns a unix socket path short enough for the 108-byte limit.
func socketPath(t testing.TB) string {
	dir, err := os.MkdirTemp("", "hsink")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return filepath.Join(dir, "hubble.sock")
}

// newSink builds and starts a sink from its YAML options (listen defaults
// to a fresh unix socket) and closes it when the test ends.
func newSink(t testing.TB, yml string) *hubble.Sink {
	t.Helper()
	if yml == "" || !contains(yml, "listen:") {
		yml = fmt.Sprintf("listen: unix://%s\n%s", socketPath(t), yml)
	}
	b := sinktest.Build("hubble", "")
	s, err := pipeline.Make(b, sinktest.Node(t, yml), hubble.New)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := s.Close(ctx); err != nil {
			t.Error(err)
		}
	})
	return s
}

func contains(s, sub string) bool {
	for i := 0; i+len(sub) <= len(s); i++ {
		if s[i:i+len(sub)] == sub {
			return true
		}
	}
	return false
}

// target is the gRPC target of a started sink.
func target(s *hubble.Sink) string {
	a := s.Addr()
	if a.Network() == "unix" {
		return "unix://" + a.String()
	}
	return a.String()
}

func dial(t testing.TB, s *hubble.Sink) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient(target(s), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// write writes flows first..first+n-1 (sinktest.Flow) in batches of 512 and
// releases each batch after Write, as the runtime does: under the
// flowbus_poison build the released flows are overwritten, so the ring must
// hold copies.
func write(t testing.TB, s *hubble.Sink, first, n int) {
	t.Helper()
	for i := first; i < first+n; i += 512 {
		b := sinktest.Batch(i, min(512, first+n-i))
		if failed, err := s.Write(context.Background(), b); failed != 0 || err != nil {
			t.Fatalf("write: %d failed, %v", failed, err)
		}
		b.Release()
	}
}

// want returns flow i as written by write.
func want(i int) *flowpb.Flow {
	f := new(flowpb.Flow)
	sinktest.Flow(f, i)
	return f
}

// collect reads a stream that ends, returning its responses.
func collect(t testing.TB, c observer.ObserverClient, req *observer.GetFlowsRequest) ([]*observer.GetFlowsResponse, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	st, err := c.GetFlows(ctx, req)
	if err != nil {
		return nil, err
	}
	var out []*observer.GetFlowsResponse
	for {
		r, err := st.Recv()
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return out, err
		}
		out = append(out, r)
	}
}

// uuids lists the flows' uuids of rs, and "lost:N" for lost events.
func uuids(rs []*observer.GetFlowsResponse) []string {
	var out []string
	for _, r := range rs {
		if l := r.GetLostEvents(); l != nil {
			out = append(out, fmt.Sprintf("lost:%s:%d", l.GetSource(), l.GetNumEventsLost()))
			continue
		}
		out = append(out, r.GetFlow().GetUuid())
	}
	return out
}

// ids returns the uuids of flows i in [from, to).
func ids(from, to int, keep func(int) bool) []string {
	var out []string
	for i := from; i < to; i++ {
		if keep == nil || keep(i) {
			out = append(out, want(i).GetUuid())
		}
	}
	return out
}

// rawCodec sends and receives bytes as they are.
type rawCodec struct{}

func (rawCodec) Marshal(v any) ([]byte, error) { return v.([]byte), nil }
func (rawCodec) Unmarshal(data []byte, v any) error {
	*(v.(*[]byte)) = append([]byte(nil), data...)
	return nil
}
func (rawCodec) Name() string { return "proto" }

// tlsClient is a client configuration trusting pki's CA, with its client
// certificate when withCert.
func tlsClient(t testing.TB, pki *sinktest.PKI, withCert bool) *tls.Config {
	t.Helper()
	ca, err := os.ReadFile(pki.CAFile)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(ca)
	c := &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	if withCert {
		cert, err := tls.LoadX509KeyPair(pki.ClientCert, pki.ClientKey)
		if err != nil {
			t.Fatal(err)
		}
		c.Certificates = []tls.Certificate{cert}
	}
	return c
}
