package kafka

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"time"

	"github.com/flowbus/flowbus/codec"
	"github.com/flowbus/flowbus/internal/sinkutil"
	"github.com/flowbus/flowbus/internal/template"
	"github.com/flowbus/flowbus/pipeline"
	"github.com/flowbus/flowbus/pipeline/config"
	"github.com/segmentio/kafka-go"
	"github.com/segmentio/kafka-go/sasl"
	"github.com/segmentio/kafka-go/sasl/plain"
	"github.com/segmentio/kafka-go/sasl/scram"
	"gopkg.in/yaml.v3"
)

// Options are the sink's YAML keys.
type Options struct {
	Brokers          []string        `yaml:"brokers" required:"true" doc:"bootstrap brokers as host:port"`
	Topic            *yaml.Node      `yaml:"topic" required:"true" type:"template" doc:"the topic, a template of flow fields: hubble.flows.{{ verdict }}"`
	LostTopic        *yaml.Node      `yaml:"lost_topic" type:"template" doc:"the topic of LostEvents; default: topic, with every placeholder rendering lost"`
	Key              *yaml.Node      `yaml:"key" type:"string or template" default:"none" doc:"the record key: connection (both directions alike), source_pod, none, a template ({{ source.namespace }}) or a bare field path"`
	Compression      string          `yaml:"compression" default:"none" doc:"none, gzip, snappy, lz4 or zstd"`
	RequiredAcks     string          `yaml:"required_acks" default:"all" doc:"all (delivered when every in-sync replica has it), one, or none (fire and forget)"`
	BatchSize        int             `yaml:"batch_size" default:"10000" doc:"the most records in one produce request per partition"`
	BatchBytes       int             `yaml:"batch_bytes" default:"1000000" doc:"the most uncompressed bytes in one produce request; keep it below the brokers' message.max.bytes"`
	BatchTimeout     config.Duration `yaml:"batch_timeout" default:"10s" doc:"the longest wait for one produce request's answer (and for the brokers at start)"`
	MaxAttempts      int             `yaml:"max_attempts" default:"5" doc:"attempts per record before it is reported lost"`
	Backoff          BackoffOptions  `yaml:"backoff" doc:"the wait between attempts: doubled per attempt from min to max, with jitter"`
	AutoCreateTopics *bool           `yaml:"auto_create_topics" default:"true" doc:"ask the brokers to create missing topics"`
	ClientID         string          `yaml:"client_id" default:"flowbus" doc:"the Kafka client id"`
	TLS              *sinkutil.TLS   `yaml:"tls" doc:"connect with TLS; default: plaintext"`
	SASL             *SASLOptions    `yaml:"sasl" doc:"authenticate with SASL"`
}

// BackoffOptions bound the wait between attempts.
type BackoffOptions struct {
	Min config.Duration `yaml:"min" default:"100ms" doc:"the first wait"`
	Max config.Duration `yaml:"max" default:"5s" doc:"the longest wait"`
}

// SASLOptions configure SASL authentication. Secrets come from files: the
// password is read from password_file, never written in the config.
type SASLOptions struct {
	Mechanism    string `yaml:"mechanism" required:"true" doc:"plain, scram-sha-256 or scram-sha-512"`
	Username     string `yaml:"username" required:"true" doc:"the SASL user"`
	PasswordFile string `yaml:"password_file" required:"true" doc:"the file holding the password (relative to the config file's directory); trailing newlines are ignored"`
	// Password is not accepted: it is decoded only to say so at its
	// position.
	Password inlineSecret `yaml:"password" hidden:"true"`
}

// inlineSecret rejects a secret written in the config.
type inlineSecret struct{}

// UnmarshalConfig implements config.Unmarshaler: it always fails.
func (inlineSecret) UnmarshalConfig(n *yaml.Node) error {
	return config.Errorf(n, "kafka: sasl.password is not accepted: secrets come from files; put the password in a file and set sasl.password_file")
}

type keyKind int

const (
	keyNone keyKind = iota
	keyConnection
	keySourcePod
	keyTemplate
)

// New builds a kafka sink from its options; it connects in Start.
func New(b *pipeline.Build, o *Options) (*Sink, error) {
	s := &Sink{
		log:            b.Log,
		nodeName:       b.NodeName,
		seqPrefix:      sinkutil.SeqPrefix(b.NodeName, b.Name),
		batchSize:      o.BatchSize,
		batchBytes:     o.BatchBytes,
		timeout:        o.BatchTimeout.D(),
		maxAttempts:    o.MaxAttempts,
		backoff:        sinkutil.Backoff{Min: o.Backoff.Min.D(), Max: o.Backoff.Max.D()},
		autoCreate:     *o.AutoCreateTopics,
		done:           make(chan struct{}),
		up:             make(chan struct{}),
		requireHealthy: b.RequireHealthy,
		probeEvery:     probeInterval,
		meta:           map[string]topicMeta{},
		names:          map[string]string{},
		nodes:          map[string][]byte{},
	}
	if s.log == nil {
		s.log = slog.Default()
	}
	var errs config.Errors
	add := func(err error) {
		errs = append(errs, config.Positioned(err, b.At(""))...)
	}
	if len(o.Brokers) == 0 {
		add(b.Errorf("brokers", "kafka: brokers is empty: list host:port addresses"))
	}
	for _, br := range o.Brokers {
		if _, _, err := net.SplitHostPort(br); err != nil {
			add(b.Errorf("brokers", "kafka: broker %q: want host:port", br))
		}
	}
	var err error
	if s.topic, err = template.ParseNode(o.Topic, template.Kafka); err != nil {
		add(err)
	}
	if o.LostTopic != nil {
		if s.lostTopic, err = template.ParseNode(o.LostTopic, template.Kafka); err != nil {
			add(err)
		}
	}
	if err := s.parseKey(o.Key); err != nil {
		add(err)
	}
	switch o.Compression {
	case "", "none":
	case "gzip":
		s.compression = kafka.Gzip
	case "snappy":
		s.compression = kafka.Snappy
	case "lz4":
		s.compression = kafka.Lz4
	case "zstd":
		s.compression = kafka.Zstd
	default:
		add(b.Errorf("compression", "kafka: compression %q: want none, gzip, snappy, lz4 or zstd", o.Compression))
	}
	switch o.RequiredAcks {
	case "", "all":
		s.acks = kafka.RequireAll
	case "one":
		s.acks = kafka.RequireOne
	case "none":
		s.acks = kafka.RequireNone
	default:
		add(b.Errorf("required_acks", "kafka: required_acks %q: want all, one or none", o.RequiredAcks))
	}
	for _, c := range []struct {
		key string
		v   int
	}{{"batch_size", s.batchSize}, {"batch_bytes", s.batchBytes}, {"max_attempts", s.maxAttempts}} {
		if c.v < 1 {
			add(b.Errorf(c.key, "kafka: %s must be at least 1", c.key))
		}
	}
	if s.timeout <= 0 {
		add(b.Errorf("batch_timeout", "kafka: batch_timeout must be positive"))
	}
	if s.backoff.Max < s.backoff.Min {
		add(b.Errorf("backoff", "kafka: backoff max %s is below min %s", s.backoff.Max, s.backoff.Min))
	}
	if s.enc, err = codec.ForBuild(b); err != nil {
		add(b.Errorf("", "kafka: %v", err))
	} else {
		s.ctype = []byte(s.enc.ContentType())
	}
	tr := &kafka.Transport{
		ClientID:    o.ClientID,
		DialTimeout: 5 * time.Second,
		MetadataTTL: 5 * time.Second,
	}
	if o.TLS != nil {
		if tr.TLS, err = o.TLS.Config(b.Dir); err != nil {
			add(b.Errorf("tls", "kafka: %v", err))
		}
	}
	if o.SASL != nil {
		if tr.SASL, err = o.SASL.SASLMechanism(b.Dir); err != nil {
			add(b.Errorf("sasl", "kafka: sasl: %v", err))
		}
	}
	if len(errs) > 0 {
		return nil, errs
	}
	s.transport = tr
	s.brokers = o.Brokers
	s.addr = kafka.TCP(o.Brokers...)
	s.client = &kafka.Client{Addr: s.addr, Timeout: s.timeout, Transport: tr}
	if s.m, err = sinkutil.NewMetrics(b.Metrics); err != nil {
		return nil, err
	}
	s.retry = &sinkutil.Retry{Name: "kafka", MaxAttempts: s.maxAttempts, Backoff: s.backoff, Done: s.done, Metrics: s.m, Log: s.log, Reachable: s.reachable}
	notYet := errors.New("kafka: not connected yet")
	s.ready.Store(&notYet)
	return s, nil
}

func (s *Sink) parseKey(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return config.Errorf(n, "kafka: key: want connection, source_pod, none, or a template")
	}
	switch v := n.Value; {
	case v == "" || v == "none":
		s.keyKind = keyNone
	case v == "connection":
		s.keyKind = keyConnection
	case v == "source_pod":
		s.keyKind = keySourcePod
	default:
		t := *n
		if !strings.Contains(v, "{{") {
			// A bare field path is shorthand for one placeholder.
			t.Value = "{{ " + v + " }}"
			t.Style = yaml.DoubleQuotedStyle // no column arithmetic on the rewritten text
		}
		tm, err := template.ParseNode(&t, template.Text)
		if err != nil {
			return err
		}
		s.keyKind, s.keyTmpl = keyTemplate, tm
	}
	return nil
}

// SASLMechanism returns the SASL mechanism, reading the password from
// password_file (relative to dir). The kafka source uses it too.
func (o *SASLOptions) SASLMechanism(dir string) (sasl.Mechanism, error) {
	if o.Username == "" {
		return nil, fmt.Errorf("username is empty")
	}
	pass, err := sinkutil.ReadSecret("password_file", dir, o.PasswordFile)
	if err != nil {
		return nil, err
	}
	switch strings.ToLower(o.Mechanism) {
	case "plain":
		return plain.Mechanism{Username: o.Username, Password: pass}, nil
	case "scram-sha-256":
		return scram.Mechanism(scram.SHA256, o.Username, pass)
	case "scram-sha-512":
		return scram.Mechanism(scram.SHA512, o.Username, pass)
	}
	return nil, fmt.Errorf("mechanism %q: want plain, scram-sha-256 or scram-sha-512", o.Mechanism)
}
