package kafka

import (
	"fmt"
	"net"
	"regexp"
	"time"

	"github.com/segmentio/kafka-go"
	"gopkg.in/yaml.v3"

	"github.com/flowbus/flowbus/internal/sinkutil"
	"github.com/flowbus/flowbus/pipeline"
	"github.com/flowbus/flowbus/pipeline/config"
	kafkasink "github.com/flowbus/flowbus/sinks/kafka"
)

// Options are the source's YAML keys.
type Options struct {
	Brokers          []string               `yaml:"brokers" required:"true" doc:"bootstrap brokers as host:port"`
	Topics           Topics                 `yaml:"topics" required:"true" type:"list of names, or {regex: …}" doc:"the topics to consume: a list of names, or a mapping with one key, regex, matched against the whole topic name (checked again every topic_refresh)"`
	Group            string                 `yaml:"group" required:"true" doc:"the consumer group; consumers in one group split the partitions"`
	Start            string                 `yaml:"start" default:"earliest" doc:"where a group without committed offsets starts: earliest or latest"`
	CommitInterval   config.Duration        `yaml:"commit_interval" default:"1s" doc:"the longest wait before acknowledged offsets are committed; what was acknowledged but not committed is read again after a crash"`
	SessionTimeout   config.Duration        `yaml:"session_timeout" default:"30s" doc:"how long the group waits for a silent consumer before giving its partitions to the others"`
	RebalanceTimeout config.Duration        `yaml:"rebalance_timeout" default:"30s" doc:"how long the group waits for its consumers to rejoin in a rebalance"`
	TopicRefresh     config.Duration        `yaml:"topic_refresh" default:"30s" doc:"how often a regex is matched against the brokers' topics again"`
	MaxWait          config.Duration        `yaml:"max_wait" default:"1s" doc:"the longest a fetch waits at the broker for records when a partition has none; its answer must arrive within the same time (kafka-go keeps a quarter of it, at most 1s, for the round trip), so a distant or loaded broker needs more; stopping and rebalancing wait for a fetch in flight"`
	MaxBytes         int                    `yaml:"max_bytes" default:"1048576" doc:"the most bytes one fetch returns per partition, as Kafka's consumers' max.partition.fetch.bytes (1 MiB by default there too); a broker still returns a larger record batch whole when it is the first"`
	ClientID         string                 `yaml:"client_id" default:"flowbus" doc:"the Kafka client id"`
	TLS              *sinkutil.TLS          `yaml:"tls" doc:"connect with TLS; default: plaintext"`
	SASL             *kafkasink.SASLOptions `yaml:"sasl" doc:"authenticate with SASL"`
}

// Topics are the topics to consume: names, or a regular expression.
type Topics struct {
	Names []string
	Regex *regexp.Regexp
}

// UnmarshalConfig implements config.Unmarshaler.
func (t *Topics) UnmarshalConfig(n *yaml.Node) error {
	switch n.Kind {
	case yaml.SequenceNode:
		if len(n.Content) == 0 {
			return config.Errorf(n, "kafka: topics is empty: list topic names, or give {regex: …}")
		}
		for _, c := range n.Content {
			if c.Kind != yaml.ScalarNode || c.Value == "" {
				return config.Errorf(c, "kafka: topics: want a topic name")
			}
			t.Names = append(t.Names, c.Value)
		}
		return nil
	case yaml.MappingNode:
		if len(n.Content) != 2 || n.Content[0].Value != "regex" || n.Content[1].Kind != yaml.ScalarNode {
			return config.Errorf(n, "kafka: topics: want a list of names, or a mapping with one key, regex")
		}
		re, err := regexp.Compile("^(?:" + n.Content[1].Value + ")$")
		if err != nil {
			return config.Errorf(n.Content[1], "kafka: topics.regex: %v", err)
		}
		t.Regex = re
		return nil
	}
	return config.Errorf(n, "kafka: topics: want a list of names, or a mapping with one key, regex")
}

// New builds a kafka source from its options; it connects in Start.
func New(b *pipeline.Build, o *Options) (*Source, error) {
	var errs config.Errors
	add := func(err error) { errs = append(errs, config.Positioned(err, b.At(""))...) }
	if len(o.Brokers) == 0 {
		add(b.Errorf("brokers", "kafka: brokers is empty: list host:port addresses"))
	}
	for _, br := range o.Brokers {
		if _, _, err := net.SplitHostPort(br); err != nil {
			add(b.Errorf("brokers", "kafka: broker %q: want host:port", br))
		}
	}
	if o.Group == "" {
		add(b.Errorf("group", "kafka: group is empty"))
	}
	var start int64
	switch o.Start {
	case "earliest":
		start = kafka.FirstOffset
	case "latest":
		start = kafka.LastOffset
	default:
		add(b.Errorf("start", "kafka: start %q: want earliest or latest", o.Start))
	}
	for _, d := range []struct {
		key string
		v   time.Duration
	}{{"commit_interval", o.CommitInterval.D()}, {"session_timeout", o.SessionTimeout.D()}, {"rebalance_timeout", o.RebalanceTimeout.D()}, {"topic_refresh", o.TopicRefresh.D()}, {"max_wait", o.MaxWait.D()}} {
		if d.v <= 0 {
			add(b.Errorf(d.key, "kafka: %s must be positive", d.key))
		}
	}
	if o.MaxBytes < 1 {
		add(b.Errorf("max_bytes", "kafka: max_bytes must be at least 1"))
	}
	dialer := &kafka.Dialer{ClientID: o.ClientID, Timeout: 10 * time.Second, DualStack: true}
	// The transport answers metadata requests from a cache it refreshes
	// every MetadataTTL (6s by default): a regex is matched against the
	// brokers' topics every topic_refresh only if the cache is no older.
	tr := &kafka.Transport{ClientID: o.ClientID, DialTimeout: 5 * time.Second, MetadataTTL: min(o.TopicRefresh.D(), 6*time.Second)}
	var err error
	if o.TLS != nil {
		if dialer.TLS, err = o.TLS.Config(b.Dir); err != nil {
			add(b.Errorf("tls", "kafka: %v", err))
		}
		tr.TLS = dialer.TLS
	}
	if o.SASL != nil {
		if dialer.SASLMechanism, err = o.SASL.SASLMechanism(b.Dir); err != nil {
			add(b.Errorf("sasl", "kafka: sasl: %v", err))
		}
		tr.SASL = dialer.SASLMechanism
	}
	if len(errs) > 0 {
		return nil, errs
	}
	s := &Source{
		log:            b.Log,
		topics:         o.Topics,
		brokers:        o.Brokers,
		group:          o.Group,
		commitInterval: o.CommitInterval.D(),
		topicRefresh:   o.TopicRefresh.D(),
		requireHealthy: b.RequireHealthy,
		client:         &kafka.Client{Addr: kafka.TCP(o.Brokers...), Timeout: 10 * time.Second, Transport: tr},
		cfg: kafka.ReaderConfig{
			Brokers:                o.Brokers,
			GroupID:                o.Group,
			Dialer:                 dialer,
			StartOffset:            start,
			MinBytes:               1,
			MaxBytes:               o.MaxBytes,
			MaxWait:                o.MaxWait.D(),
			QueueCapacity:          4096,
			CommitInterval:         0, // commits are synchronous, made by the source after acknowledgement
			SessionTimeout:         o.SessionTimeout.D(),
			RebalanceTimeout:       o.RebalanceTimeout.D(),
			HeartbeatInterval:      min(3*time.Second, o.SessionTimeout.D()/3),
			WatchPartitionChanges:  true,
			PartitionWatchInterval: 5 * time.Second,
			ReadBackoffMin:         50 * time.Millisecond,
			ReadBackoffMax:         time.Second,
		},
	}
	// kafka-go retries what fails inside the reader (fetches, joins,
	// heartbeats) and only logs it: those errors are the source's, so
	// they go to its log and its readiness.
	s.cfg.Logger = kafka.LoggerFunc(func(f string, a ...any) { s.log.Debug("kafka: " + fmt.Sprintf(f, a...)) })
	s.cfg.ErrorLogger = kafka.LoggerFunc(func(format string, args ...any) {
		err := fmt.Errorf("kafka: "+format, args...)
		s.setReady(err)
		s.log.Warn(err.Error())
	})
	if s.m, err = newMetrics(b.Metrics); err != nil {
		return nil, fmt.Errorf("kafka: metrics: %w", err)
	}
	return s, nil
}
