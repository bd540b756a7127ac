package nats

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"google.golang.org/protobuf/proto"

	"github.com/flowbus/flowbus/flow/observer"
	"github.com/flowbus/flowbus/internal/sinktest"
	"github.com/flowbus/flowbus/internal/sinkutil"
	"github.com/flowbus/flowbus/pipeline"
)

func counter(c prometheus.Counter) float64 {
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		panic(err)
	}
	return m.GetCounter().GetValue()
}

func newSink(t testing.TB, encoding, cfg string) *Sink {
	t.Helper()
	s, err := pipeline.Make(sinktest.Build("nats", encoding), sinktest.Node(t, cfg), New)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close(context.Background()) })
	if err := s.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	return s
}

func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func embeddedConfig(t testing.TB, port int, extra string) string {
	return fmt.Sprintf(`
url: embedded
embedded: {port: %d, store_dir: %s}
subject: hubble.flows.{{ verdict }}
lost_subject: hubble.lost
jetstream: {stream: HUBBLE, create: true, max_pending: 256}
%s`, port, t.TempDir(), extra)
}

func streamMsgs(t testing.TB, s *Sink) uint64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := s.jsc.Stream(ctx, "HUBBLE")
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return info.State.Msgs
}

func TestJetStreamAcksEveryMessage(t *testing.T) {
	s := newSink(t, "protobuf", embeddedConfig(t, -1, ""))
	b := sinktest.Batch(0, 500)
	sinktest.AddLost(b, 9, false)
	b.SetSeq(1764777600123456, 1)
	defer b.Release()
	failed, err := s.Write(context.Background(), b)
	if failed != 0 || err != nil {
		t.Fatalf("failed=%d err=%v", failed, err)
	}
	if a := counter(s.m.Acked); a != 501 {
		t.Errorf("acked %v, want 501", a)
	}
	if n := streamMsgs(t, s); n != 501 {
		t.Fatalf("stream has %d messages, want 501", n)
	}
	ctx := context.Background()
	st, _ := s.jsc.Stream(ctx, "HUBBLE")
	lost := 0
	for seq := uint64(1); seq <= 501; seq++ {
		m, err := st.GetMsg(ctx, seq)
		if err != nil {
			t.Fatal(err)
		}
		var env observer.GetFlowsResponse
		if err := proto.Unmarshal(m.Data, &env); err != nil {
			t.Fatal(err)
		}
		for k, v := range map[string]string{"content-type": "application/x-protobuf", "flowbus-schema": "observer.GetFlowsResponse", "flowbus-node": "node-1",
			"flowbus-seq": fmt.Sprintf("node-1/test/1764777600123456/%d", seq)} {
			if got := m.Header.Get(k); got != v {
				t.Errorf("seq %d header %s = %q, want %q", seq, k, got, v)
			}
		}
		if f := env.GetFlow(); f != nil {
			if m.Subject != "hubble.flows."+f.Verdict.String() {
				t.Errorf("subject %s for verdict %s", m.Subject, f.Verdict)
			}
			if id := m.Header.Get(jetstream.MsgIDHeader); id != f.Uuid {
				t.Errorf("Nats-Msg-Id %q, want uuid %q", id, f.Uuid)
			}
			var n int
			fmt.Sscanf(f.Uuid[len(f.Uuid)-12:], "%d", &n)
			if rate := m.Header.Get("flowbus-sample-rate"); (rate == "4") != (n%10 == 9) {
				t.Errorf("flow %d sample-rate %q", n, rate)
			}
		} else {
			lost++
			if m.Subject != "hubble.lost" || m.Header.Get(jetstream.MsgIDHeader) == "" {
				t.Errorf("LostEvent on %s with id %q", m.Subject, m.Header.Get(jetstream.MsgIDHeader))
			}
		}
	}
	if lost != 1 {
		t.Errorf("%d LostEvents in the stream, want 1", lost)
	}
}

func TestMsgIDDeduplicates(t *testing.T) {
	s := newSink(t, "json", embeddedConfig(t, -1, ""))
	b := sinktest.Batch(0, 300)
	defer b.Release()
	for i := 0; i < 2; i++ {
		if failed, err := s.Write(context.Background(), b); failed != 0 || err != nil {
			t.Fatalf("write %d: failed=%d err=%v", i, failed, err)
		}
	}
	if n := streamMsgs(t, s); n != 300 {
		t.Fatalf("stream has %d messages after a resend, want 300", n)
	}
	if a := counter(s.m.Acked); a != 600 {
		t.Errorf("acked %v, want 600 (duplicates are acknowledged)", a)
	}
}

// TestServerRestartLosesNothing stops the embedded server while a Write is
// in flight and starts it again on the same port and store: the Write keeps
// retrying (block semantics), nothing fails, and the stream holds every flow
// exactly once.
func TestServerRestartLosesNothing(t *testing.T) {
	port := freePort(t)
	s := newSink(t, "json", embeddedConfig(t, port, "ack_timeout: 300ms\nbackoff: {min: 20ms, max: 200ms}\nmax_attempts: 100\n"))
	const batches, per = 30, 200
	write := func(i int) error {
		b := sinktest.Batch(i*per, per)
		defer b.Release()
		if failed, err := s.Write(context.Background(), b); failed != 0 || err != nil {
			return fmt.Errorf("batch %d: failed=%d err=%v", i, failed, err)
		}
		return nil
	}
	for i := 0; i < 10; i++ {
		if err := write(i); err != nil {
			t.Fatal(err)
		}
	}
	old := s.srv.srv
	old.Shutdown()
	old.WaitForShutdown()
	waitFor(t, "unready while the server is down", func() bool { return s.Ready() != nil })

	sent := counter(s.m.Sent)
	errs := make(chan error, 1)
	go func() {
		var first error
		for i := 10; i < 20; i++ {
			if err := write(i); err != nil && first == nil {
				first = err
			}
		}
		errs <- first
	}()
	// The Write in flight has published into the client's reconnect buffer,
	// and its acknowledgements have timed out at least once.
	waitFor(t, "publishes during the outage", func() bool { return counter(s.m.Sent) > sent })
	waitFor(t, "retries during the outage", func() bool { return counter(s.m.Retried) > 0 })

	srv, err := startEmbedded(s.embedded)
	if err != nil {
		t.Fatal(err)
	}
	s.srv.srv = srv
	if err := <-errs; err != nil {
		t.Fatal(err)
	}
	for i := 20; i < batches; i++ {
		if err := write(i); err != nil {
			t.Fatal(err)
		}
	}
	if n := streamMsgs(t, s); n != batches*per {
		t.Fatalf("stream has %d messages, want %d", n, batches*per)
	}
	if err := s.Ready(); err != nil {
		t.Errorf("Ready after restart: %v", err)
	}
	t.Logf("%v messages retried across the restart, %v acked", counter(s.m.Retried), counter(s.m.Acked))
}

func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// TestOutageReportsFailed: with the server down, a Write gives up after
// max_attempts with exactly the counted events failed.
func TestOutageReportsFailed(t *testing.T) {
	s := newSink(t, "json", embeddedConfig(t, freePort(t), "ack_timeout: 100ms\nbackoff: {min: 5ms, max: 10ms}\nmax_attempts: 3\n"))
	s.srv.srv.Shutdown()
	s.srv.srv.WaitForShutdown()
	b := sinktest.Batch(0, 40)
	defer b.Release()
	failed, err := s.Write(context.Background(), b)
	if err != nil || failed != 40 {
		t.Fatalf("failed=%d err=%v, want 40", failed, err)
	}
	if f := counter(s.m.Failed); f != 40 {
		t.Errorf("failed metric %v, want 40", f)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	s.retry.MaxAttempts = 1000
	failed, err = s.Write(ctx, b)
	if !errors.Is(err, context.DeadlineExceeded) || failed != 40 {
		t.Fatalf("cancelled: failed=%d err=%v", failed, err)
	}

	// A LostEvent still unacknowledged when the context ends counts as
	// failed, so the runtime reports its losses again.
	lost := pipeline.NewBatch()
	defer lost.Release()
	sinktest.AddLost(lost, 4, true)
	ctx2, cancel2 := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel2()
	failed, err = s.Write(ctx2, lost)
	if !errors.Is(err, context.DeadlineExceeded) || failed != 1 {
		t.Fatalf("cancelled LostEvent: failed=%d err=%v, want 1", failed, err)
	}

	// flowbus's own LostEvents are given up after max_attempts too (the
	// runtime reports their losses again at the next flush); the sink is
	// unready until one is delivered.
	s.retry.MaxAttempts = 2
	failed, err = s.Write(context.Background(), lost)
	if failed != 1 || err != nil {
		t.Fatalf("LostEvent during the outage: failed=%d err=%v, want 1", failed, err)
	}
	srv, err := startEmbedded(s.embedded)
	if err != nil {
		t.Fatal(err)
	}
	s.srv.srv = srv
	waitFor(t, "reconnection", func() bool { return s.nc.IsConnected() })
	if failed, err = s.Write(context.Background(), lost); failed != 0 || err != nil {
		t.Fatalf("LostEvent after the outage: failed=%d err=%v", failed, err)
	}
	if n := streamMsgs(t, s); n != 1 {
		t.Errorf("stream has %d messages, want the LostEvent only", n)
	}
}

func TestCorePublish(t *testing.T) {
	s := newSink(t, "json", fmt.Sprintf(`
url: embedded
embedded: {port: -1, store_dir: %s}
subject: flows.{{ source.namespace }}
`, t.TempDir()))
	sub, err := s.nc.SubscribeSync("flows.*")
	if err != nil {
		t.Fatal(err)
	}
	s.nc.Flush()
	b := sinktest.Batch(0, 50)
	sinktest.AddLost(b, 1, false)
	defer b.Release()
	if failed, err := s.Write(context.Background(), b); failed != 0 || err != nil {
		t.Fatal(failed, err)
	}
	for i := 0; i < 51; i++ {
		m, err := sub.NextMsg(5 * time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if m.Header.Get("content-type") != "application/json" || m.Header.Get(jetstream.MsgIDHeader) != "" {
			t.Errorf("headers %v", m.Header)
		}
		want := "flows.lost"
		if e := b.Events[i]; e.Flow != nil {
			want = "flows." + e.Flow.Source.Namespace
		}
		if m.Subject != want {
			t.Errorf("subject %s, want %s", m.Subject, want)
		}
		if !strings.HasPrefix(string(m.Data), `{"`) {
			t.Errorf("data %q", m.Data)
		}
	}
}

func TestDefaultSubjects(t *testing.T) {
	s, err := pipeline.Make(sinktest.Build("nats", "json"), sinktest.Node(t, `
url: nats://127.0.0.1:1
subject: hubble.flows.{{ verdict }}.{{ source.namespace }}
lost_subject: hubble.lost
jetstream: {stream: S}
`), New)
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(s.js.Subjects, " "); got != "hubble.flows.*.* hubble.lost" {
		t.Errorf("subjects %q", got)
	}
}

func TestConfigErrors(t *testing.T) {
	tests := []struct{ cfg, want string }{
		{"subject: x", `2:1: missing required key "url"`},
		{"url: embedded", `2:1: missing required key "subject"`},
		{"url: ''\nsubject: a", "2:6: nats: url is empty"},
		{"url: embedded\nsubject: a\nmax_attempts: 0", "4:15: nats: max_attempts must be at least 1"},
		{"url: embedded\nsubject: a\njetstream: {stream: s, max_pending: 0}", "4:37: nats: jetstream.max_pending must be at least 1"},
		{"url: embedded\nsubject: 'a.{{ verdict }}.>'", "3:27:"},
		{"url: embedded\nsubject: a\nembedded: {sync_interval: sometimes}", "sync_interval"},
		{"url: nats://x:1\nsubject: a\nembedded: {port: 1}", "need url: embedded"},
		{"url: embedded\nsubject: a\njetstream: {create: true}", "needs jetstream.stream"},
		{"url: embedded\nsubject: a\njetstream: {stream: s, storage: tape}", "storage"},
		{"url: embedded\nsubject: a\ntoken_file: /nonexistent/t", "token_file: cannot read the file it names: no such file or directory"},
		{"url: embedded\nsubject: a\ntoken_file: hunter2-secret", "4:13: nats: token_file: cannot read the file it names"},
		{"url: embedded\nsubject: a\nnkey_file: SUAhunter2seed", "4:12: nats: nkey_file: cannot read the file it names"},
		{"url: embedded\nsubject: a\ncredentials_file: hunter2-creds", "4:19: nats: credentials_file: cannot read the file it names"},
		{"url: embedded\nsubject: a\ntls: {key_file: hunter2-key, cert_file: c}", "nats: tls.cert_file: cannot read the file it names"},
		{"url: embedded\nsubject: a\nbogus: 1", "bogus"},
	}
	for _, tt := range tests {
		_, err := pipeline.Make(sinktest.Build("nats", "json"), sinktest.Node(t, "\n"+tt.cfg), New)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%q: error %v, want %q", tt.cfg, err, tt.want)
		}
		if err != nil && strings.Contains(err.Error(), "hunter2") {
			t.Errorf("%q: the error echoes a secret: %v", tt.cfg, err)
		}
	}
}

func TestRedact(t *testing.T) {
	if got := redact("nats://u:p@h:1,tls://tok@h2:2"); got != "nats://***@h:1,tls://***@h2:2" {
		t.Error(got)
	}
}

var (
	_ pipeline.Starter = (*Sink)(nil)
	_ pipeline.Readier = (*Sink)(nil)
	_                  = nats.CONNECTED
)

// TestNodeNamesKept: the sink remembers each node's header under a copy of
// the name, not under the event's string, whose storage the batch reuses
// (then a remembered name, and the header made from it, would read as
// another).
func TestNodeNamesKept(t *testing.T) {
	s := newSink(t, "json", fmt.Sprintf(`
url: embedded
embedded: {port: -1, store_dir: %s}
subject: nodes
`, t.TempDir()))
	sub, err := s.nc.SubscribeSync("nodes")
	if err != nil {
		t.Fatal(err)
	}
	s.nc.Flush()
	names := sinktest.WriteNodes(t, s, "node-a", "node-b", "node-a", "node-c")
	var kept []string
	for k, v := range s.nodes {
		kept = append(kept, k+"="+v[0])
	}
	slices.Sort(kept)
	if want := []string{"node-a=node-a", "node-b=node-b", "node-c=node-c"}; !slices.Equal(kept, want) {
		t.Errorf("nodes remembered as %q, want %q", kept, want)
	}
	for i, name := range names {
		m, err := sub.NextMsg(5 * time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if h := m.Header.Get(sinkutil.HeaderNode); h != name {
			t.Errorf("message %d: node header %q, want %q", i, h, name)
		}
	}
}
