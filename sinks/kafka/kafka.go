// Package kafka is the `kafka` sink: it publishes events to Apache Kafka
// with github.com/segmentio/kafka-go, at least once.
//
// Its keys: `flowbus components kafka`, or docs/components.md.
//
// Batching: the sink never lingers. Each pipeline batch is encoded into one
// buffer, split by topic and partition, and every partition's records go out
// at once in one produce request (kafka-go's Client.Produce, not its Writer,
// whose per-partition BatchTimeout would hold a batch that cannot fill). The
// requests for different partitions run concurrently, so a Write costs one
// broker round trip.
//
// Delivery: with required_acks all (the default) a record counts as
// delivered when the broker acknowledged it. Records whose request failed,
// or whose partition reported an error, are retried with exponential backoff
// (their partition recomputed from fresh metadata) up to max_attempts; then
// Write reports them as failed and the runtime turns them into a LostEvent
// (behind a disk buffer, the buffer keeps the batch and writes it again
// instead: nothing is lost, and the log says so; see
// pipeline.Batch.WrittenAgain).
// The attempts, the backoff and the giving up are internal/sinkutil.Retry,
// shared with the nats sink: flowbus's own LostEvents get the same attempts,
// and while they fail (a lost_topic that does not exist, with
// auto_create_topics false) the sink is unready and each later LostEvent
// gets one attempt, so they never hold the flows back. A backoff that began
// with no broker accepting connections ends as soon as one does.
// kafka-go has no idempotent producer: a retry after a lost acknowledgement
// can duplicate a record (at-least-once). With required_acks none, delivery
// is fire-and-forget.
//
// Keys: `connection` is the same for both directions of a connection (the
// protocol and the two address:port endpoints in a fixed order), so a
// connection's flows land in one partition in order; `source_pod` is
// namespace/pod of the source (its IP when it is not a pod). Partitions of
// keyed records use murmur2 like the Java client and librdkafka's
// murmur2_random; unkeyed records are sticky, as with the Java client's
// default partitioner: each Write (and each retry) sends them to one
// partition, the next Write to the next one, so they spread evenly over
// the partitions in full produce requests.
//
// Readiness: when no broker accepts a connection at start, the sink starts
// unready and connects in the background (Start fails instead with
// `run --require-healthy`); Write waits for the connection. A broker that
// rejects the TLS or SASL settings fails Start. While running, /readyz
// reports the sink unready after a produce or metadata request could not
// reach the brokers, when idle after a connection probe every 5s fails, and
// while its LostEvents cannot be delivered.
//
// Topics: a literal topic (and the literal text of a template) must be a
// valid Kafka name, [a-zA-Z0-9._-], at most 249 characters, not `.` or
// `..`; a rendered topic is sanitised (see internal/template).
//
// Files: options.go (keys, validation), conn.go (start, connection,
// readiness, close), produce.go (Write: encoding, partitioning, produce
// requests), metadata.go (partition counts), records.go (record feeding,
// murmur2).
//
// Every record carries the flowbus headers (internal/sinkutil: schema,
// content type, node, sample rate, and flowbus-seq, the sink's sequence
// number of the event) and the event's time as its timestamp.
// Secrets (the SASL password) come from files, never from the config
// itself, and are never logged.
package kafka

import (
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/flowbus/flowbus/codec"
	"github.com/flowbus/flowbus/internal/sinkutil"
	"github.com/flowbus/flowbus/internal/template"
	"github.com/flowbus/flowbus/pipeline"
)

func init() {
	pipeline.RegisterSink(pipeline.Spec{
		Type:        "kafka",
		Summary:     "publishes events to Apache Kafka, at least once, one produce request per partition per batch",
		Description: `Each pipeline batch is encoded, split by topic and partition, and every partition's records go out at once in one produce request, concurrently across partitions: the sink never lingers. With required_acks all a record counts as delivered when the broker acknowledged it; failed records are retried with backoff up to max_attempts, then reported lost. A retry after a lost acknowledgement can duplicate a record (at least once). Keys: connection is the same for both directions of a connection, so its flows land in one partition in order; source_pod is namespace/pod of the source. Keyed records are partitioned with murmur2 like the Java client. Every record carries the flowbus headers and the event's time. When no broker accepts a connection at start, the sink starts unready and connects in the background, holding its batches meanwhile (run --require-healthy makes it fail instead); while running, /readyz reports the sink unready when the brokers cannot be reached, or while its LostEvents cannot be delivered (a lost_topic that does not exist). Topics must be valid Kafka names; rendered ones are sanitised. Secrets come from files.`,
		Example: `type: kafka
inputs: [flows]
encoding: protobuf
brokers: [kafka-0:9092, kafka-1:9092]
topic: hubble.flows.{{ verdict }}
lost_topic: hubble.lost
key: connection
compression: lz4
tls: {ca_file: /etc/flowbus/kafka-ca.pem}
sasl: {mechanism: scram-sha-512, username: flowbus, password_file: /run/secrets/kafka}
`,
	}, New)
}

// Sink is the kafka sink. Write is called from one goroutine at a time.
type Sink struct {
	log       *slog.Logger
	nodeName  string
	seqPrefix string // of the flowbus-seq header
	enc       codec.Encoder
	ctype     []byte

	topic, lostTopic *template.Template
	keyKind          keyKind
	keyTmpl          *template.Template

	client      *kafka.Client
	transport   *kafka.Transport
	addr        net.Addr
	brokers     []string
	acks        kafka.RequiredAcks
	compression kafka.Compression
	batchSize   int
	batchBytes  int
	timeout     time.Duration
	maxAttempts int
	backoff     sinkutil.Backoff
	autoCreate  bool
	m           *sinkutil.Metrics
	retry       *sinkutil.Retry

	ready      atomic.Pointer[error]
	lastWrite  atomic.Int64 // unix nanoseconds of the last produce attempt
	probeEvery time.Duration
	done       chan struct{}
	up         chan struct{} // closed once the brokers answered
	closing    sync.Once
	// requireHealthy makes Start fail when the brokers do not answer.
	requireHealthy bool
	encErr         sync.Once

	metaMu sync.Mutex
	meta   map[string]topicMeta

	mu    sync.Mutex        // serialises Write; guards what follows
	names map[string]string // interned topics
	nodes map[string][]byte // interned node names
	rr    int
	arena []byte
	items []item
	hdrs  []kafka.Header
}

type item struct {
	topic      string
	key, value []byte
	headers    []kafka.Header
	time       time.Time
	partition  int
	counted    bool
	// offsets into the arena while it may still grow
	keyOff, keyEnd, valOff, valEnd, rateOff, rateEnd, seqOff, seqEnd int
}

var (
	schemaValue = []byte(sinkutil.SchemaName)
)
