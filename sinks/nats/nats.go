// Package nats is the `nats` sink: it publishes events to NATS with
// github.com/nats-io/nats.go, either with core publish (at most once) or to
// a JetStream stream (at least once), and can start an embedded NATS server
// so that a pipeline runs on a machine with no broker installed.
//
// Its keys: `flowbus components nats`, or docs/components.md.
//
// JetStream delivery: every message is published asynchronously with a
// Nats-Msg-Id header (the flow's uuid; a generated id for LostEvents and
// flows without one), at most max_pending at a time, and every PubAck is
// checked. A message counts as delivered when the stream acknowledged it
// (a PubAck marked duplicate included).
//
// Batches in flight: for a batch from a memory buffer
// (pipeline.Batch.LateDelivery), Write publishes the messages and returns
// without waiting for their PubAcks, holding the source's Ack; the
// resolver goroutine awaits each batch's PubAcks in the order the batches
// were written, retries what failed as Write would, then resolves the
// batch: its Ack, and the counted events given up, which it reports
// through pipeline.LateLoser (the runtime moves them from delivered to lost
// and reports them in a LostEvent). max_pending bounds the messages of all
// batches in flight; Write waits for older batches to resolve when a new one
// does not fit. Batches from a disk buffer (which keeps a batch until Write
// returns) and flowbus's own LostEvents are written synchronously, after the
// batches in flight resolved, and so is a batch larger than max_pending.
// Close waits for the batches in flight (bounded by its context).
//
// Failed or unacknowledged publishes
// are retried with backoff; a retry carries the same Msg-Id, so the stream
// stores it once within its duplicate window. After max_attempts the message
// is reported lost (behind a disk buffer, the buffer keeps the batch and
// writes it again instead: nothing is lost, and the log says so; see
// pipeline.Batch.WrittenAgain). The attempts, the backoff and the giving up are
// internal/sinkutil.Retry, shared with the kafka sink: flowbus's own
// LostEvents get the same attempts (the runtime reports their losses again
// at the next flush), and while they fail (a lost_subject the stream does
// not capture) the sink is unready and each later LostEvent gets one
// attempt, so they never hold the flows back. The client reconnects forever
// and has no reconnect buffer with JetStream: while disconnected, publishes
// fail at once and Write retries them, so a Write in progress keeps going
// across a reconnect (a backoff ends as soon as the client is connected
// again), and with `when_full: block` an outage shorter than the retry
// budget loses nothing.
//
// Readiness: when no server accepts a connection at start, the sink starts
// unready and connects in the background (Start fails instead with
// `run --require-healthy`); Write waits for the connection. A server that
// refuses the credentials or TLS settings, or a stream that cannot be found
// or created, fails Start. While running, /readyz reports the sink unready
// while the client is not connected, while the server does not answer a
// PING (sent every ping_interval) within ack_timeout (a frozen server keeps
// the connection open), and while its LostEvents cannot be delivered.
//
// Core publish is at most once: a message counts as delivered when the
// server answered the flush that follows each batch. While disconnected,
// messages wait in the client's reconnect buffer (reconnect_buffer bytes);
// publishes that do not fit fail and are retried, then reported lost.
//
// Embedded server (`url: embedded`): the nats-server library runs in the
// process, bound to 127.0.0.1 only, with JetStream on and a file store in
// store_dir; it shuts down when the sink closes, and sinks with the same
// embedded settings share it. store_dir defaults to /var/lib/flowbus/nats
// for root and to $XDG_STATE_HOME/flowbus/nats (~/.local/state/flowbus/nats)
// for other users; it is created with mode 0700, and a store_dir that is a
// symbolic link, is owned by another user, or is writable by group or
// others (or whose parent is a symlink, or is owned by another user than
// this one or root, or is writable by others without the sticky bit) is
// refused at start, since another user could read or replace the store.
// Its sync policy is nats-server's: a stored message is acknowledged before
// it is fsynced, and the store is synced every sync_interval (nats-server's
// default, 2 minutes), so a power loss (not a process crash) can lose up to
// that much acknowledged data. Set `sync_interval: always` to fsync every
// message before it is acknowledged, at a large cost in throughput.
//
// Every message carries the flowbus headers (internal/sinkutil: schema,
// content type, node, sample rate, and flowbus-seq, the sink's sequence
// number of the event). Secrets come from files, never from
// the config itself, and are never logged.
//
// Files: options.go (keys, validation), conn.go (start, connection, stream,
// close), health.go (readiness, PINGs), publish.go (Write: encoding,
// JetStream and core publish), embedded.go (the embedded server and its
// store).
package nats

import (
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/flowbus/flowbus/codec"
	"github.com/flowbus/flowbus/internal/sinkutil"
	"github.com/flowbus/flowbus/internal/template"
	"github.com/flowbus/flowbus/pipeline"
)

func init() {
	pipeline.RegisterSink(pipeline.Spec{
		Type:        "nats",
		Summary:     "publishes events to NATS: core publish (at most once) or a JetStream stream (at least once), optionally to an embedded server",
		Description: `JetStream: every message is published asynchronously with a Nats-Msg-Id header (the flow's uuid), at most max_pending at a time, and counts as delivered when the stream acknowledged it; with a memory buffer several batches are in flight (up to max_pending messages): a batch is handed back once published, and its PubAcks are awaited in order afterwards, a message given up then moving from delivered to lost (a disk buffer's batches wait for their PubAcks). Failed publishes are retried with backoff and the same Msg-Id (the stream stores a message once within its duplicate window), then reported lost after max_attempts. The client reconnects forever; with when_full: block an outage shorter than the retry budget loses nothing. Core publish is at most once: a message counts as delivered when the server answered the flush that follows each batch; while disconnected, messages wait in the reconnect buffer. With url: embedded the nats-server library runs in the process, bound to 127.0.0.1, with JetStream and a file store; it acknowledges a message before it is fsynced and syncs every sync_interval, so a power loss can lose up to that much acknowledged data (sync_interval: always fsyncs every message, at a large cost in throughput); its store_dir is private (created 0700; symlinks, other users' and group- or world-writable directories are refused). When no server accepts a connection at start, the sink starts unready and connects in the background, holding its batches meanwhile (run --require-healthy makes it fail instead); /readyz reports it unready while disconnected, while the server does not answer PINGs, or while its LostEvents cannot be delivered (a lost_subject no stream captures). Secrets come from files.`,
		Example: `type: nats
inputs: [flows]
encoding: json
url: nats://nats-0:4222,nats://nats-1:4222
subject: hubble.flows.{{ verdict }}
lost_subject: hubble.lost
jetstream:
  stream: HUBBLE
  create: true
  max_age: 24h
credentials_file: /etc/nats/flowbus.creds
`,
	}, New)
}

// Sink is the nats sink. Write is called from one goroutine at a time.
type Sink struct {
	log       *slog.Logger
	name      string
	nodeName  string
	seqPrefix string // of the flowbus-seq header
	enc       codec.Encoder
	ctype     []string

	subject, lostSubject *template.Template

	url         string
	embedded    *EmbeddedOptions
	opts        []nats.Option
	js          *JetStreamOptions
	ackTimeout  time.Duration
	maxAttempts int
	backoff     sinkutil.Backoff
	m           *sinkutil.Metrics
	retry       *sinkutil.Retry

	srv *embeddedServer
	nc  *nats.Conn
	jsc jetstream.JetStream
	// up is closed once nc (and jsc) are set; connMu orders that against
	// Close.
	up       chan struct{}
	connMu   sync.Mutex
	startErr atomic.Pointer[error]
	// stale is set while the server does not answer PINGs.
	stale        atomic.Pointer[error]
	pingInterval time.Duration
	// requireHealthy makes Start fail when no server accepts a connection.
	requireHealthy bool
	done           chan struct{}
	closing        sync.Once
	encErr         sync.Once
	// otherStream logs once when PubAcks name an unexpected stream.
	otherStream sync.Once

	mu    sync.Mutex // serialises Write; guards what follows
	names map[string]string
	nodes map[string][]string
	rates map[uint32][]string
	// cur is the storage of synchronous Writes.
	cur    *flight
	schema []string

	// Batches in flight (JetStream, Batch.LateDelivery): Write sends them
	// to flights, and the resolver goroutine (started by the first) awaits
	// their PubAcks in order; it closes resolved when flights is closed.
	flights   chan *flight
	resolving sync.Once
	resolved  chan struct{}
	lateLoss  func(n int)
	fmu       sync.Mutex // guards inflight and spare
	inflight  int        // messages of the batches in flight
	spare     []*flight
	freed     chan struct{} // signalled when a batch in flight resolves
}

// SetLateLoss implements pipeline.LateLoser: the counted events of a batch
// in flight that are given up after Write returned are reported through
// lose.
func (s *Sink) SetLateLoss(lose func(n int)) { s.lateLoss = lose }

type item struct {
	msg     nats.Msg
	hdr     nats.Header // reused across Writes
	id      [1]string   // the Nats-Msg-Id header value
	seq     [1]string   // the flowbus-seq header value
	off     int
	end     int
	counted bool
	ok      bool
}
