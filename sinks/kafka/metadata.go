package kafka

import (
	"context"
	"fmt"
	"time"

	metadataAPI "github.com/segmentio/kafka-go/protocol/metadata"

	"github.com/segmentio/kafka-go"
)

// metadataMaxAge is how long a topic's partition count is trusted.
const metadataMaxAge = 30 * time.Second

type topicMeta struct {
	partitions int
	err        error
	at         time.Time
}

func (s *Sink) invalidate(topic string) {
	s.metaMu.Lock()
	delete(s.meta, topic)
	s.metaMu.Unlock()
}

// partitions returns the partition count of topic from cached metadata,
// refreshing it when it is old, or when refresh is set and it is older
// than a second.
func (s *Sink) partitions(ctx context.Context, topic string, refresh bool) (int, error) {
	s.metaMu.Lock()
	m, ok := s.meta[topic]
	s.metaMu.Unlock()
	age := time.Since(m.at)
	if ok && age < metadataMaxAge && !(refresh && age > time.Second) {
		return m.partitions, m.err
	}
	rctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	r, err := s.transport.RoundTrip(rctx, s.addr, &metadataAPI.Request{
		TopicNames:             []string{topic},
		AllowAutoTopicCreation: s.autoCreate,
	})
	m = topicMeta{at: time.Now()}
	if err != nil {
		m.err = fmt.Errorf("metadata for topic %s: %w", topic, err)
		e := fmt.Errorf("kafka: brokers %s unreachable: %w", s.addr, err)
		s.ready.Store(&e)
		return 0, m.err // not cached: ask again next time
	}
	for _, t := range r.(*metadataAPI.Response).Topics {
		if t.Name != topic {
			continue
		}
		switch {
		case t.ErrorCode != 0:
			m.err = fmt.Errorf("topic %s: %w", topic, kafka.Error(t.ErrorCode))
		case len(t.Partitions) == 0:
			m.err = fmt.Errorf("topic %s has no partitions", topic)
		default:
			m.partitions = len(t.Partitions)
		}
	}
	if m.partitions == 0 && m.err == nil {
		m.err = fmt.Errorf("topic %s: %w", topic, kafka.UnknownTopicOrPartition)
	}
	if m.err != nil {
		return 0, m.err // not cached
	}
	s.metaMu.Lock()
	s.meta[topic] = m
	s.metaMu.Unlock()
	return m.partitions, nil
}
