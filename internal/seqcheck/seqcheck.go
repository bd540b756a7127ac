// Package seqcheck is the consumer side of the flowbus-seq header: it
// reads what flowbus published to a Kafka topic or a JetStream stream and
// reports, for each sequence stream (NODE/SINK/EPOCH: one sink of one
// flowbus run), the numbers never seen (gaps: events lost between flowbus
// and the broker, which flowbus also reported in a LostEvent) and those
// seen more than once (duplicates of at-least-once delivery, e.g. at the
// seam of a crash). `flowbus check-seq` runs it.
//
// Numbers run from 1 in each stream, so a gap at the start is seen; a gap
// at the very end of a stream (the last events of a run, lost) cannot be.
// A topic whose retention already deleted the oldest records shows them as
// a gap at the start.
package seqcheck

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/segmentio/kafka-go"
)

// Header is the name of the header that carries the numbers (the sinks
// write it with internal/sinkutil.AppendSeq).
const Header = "flowbus-seq"

// ParseSeq splits a flowbus-seq value into its stream, "NODE/SINK/EPOCH"
// (the unit in which numbers run from 1 without gaps), and its number.
// The sink name may contain slashes; the node name does not.
func ParseSeq(v string) (stream string, n uint64, err error) {
	i := strings.LastIndexByte(v, '/')
	if i < 0 {
		return "", 0, fmt.Errorf("flowbus-seq %q: want NODE/SINK/EPOCH/N", v)
	}
	stream, num := v[:i], v[i+1:]
	if n, err = strconv.ParseUint(num, 10, 64); err != nil || n == 0 {
		return "", 0, fmt.Errorf("flowbus-seq %q: the number %q is not a positive integer", v, num)
	}
	j := strings.LastIndexByte(stream, '/')
	if j < 0 || strings.IndexByte(stream[:j], '/') < 0 {
		return "", 0, fmt.Errorf("flowbus-seq %q: want NODE/SINK/EPOCH/N", v)
	}
	if _, err := strconv.ParseInt(stream[j+1:], 10, 64); err != nil {
		return "", 0, fmt.Errorf("flowbus-seq %q: the epoch %q is not an integer", v, stream[j+1:])
	}
	return stream, n, nil
}

// Checker collects the flowbus-seq values of the records read.
type Checker struct {
	streams  map[string]map[uint64]uint32
	records  uint64
	noHeader uint64
	bad      uint64
	firstBad string
}

// New returns an empty Checker.
func New() *Checker { return &Checker{streams: map[string]map[uint64]uint32{}} }

// Add records one record's flowbus-seq header value ("" when it had none).
func (c *Checker) Add(v string) {
	c.records++
	if v == "" {
		c.noHeader++
		return
	}
	stream, n, err := ParseSeq(v)
	if err != nil {
		if c.bad == 0 {
			c.firstBad = err.Error()
		}
		c.bad++
		return
	}
	m := c.streams[stream]
	if m == nil {
		m = map[uint64]uint32{}
		c.streams[stream] = m
	}
	m[n]++
}

// StreamReport is the account of one sequence stream.
type StreamReport struct {
	Stream     string
	Events     uint64 // distinct numbers seen
	Last       uint64 // the highest number seen
	Missing    uint64 // numbers in 1..Last never seen
	Duplicates uint64 // records beyond the first with the same number
	Gaps       [][2]uint64
}

// Report is the account of everything read.
type Report struct {
	Streams                []StreamReport
	Records, NoHeader, Bad uint64
	Missing, Duplicates    uint64
	FirstBad               string
}

// Report computes the gaps and duplicates, streams sorted by name.
func (c *Checker) Report() Report {
	r := Report{Records: c.records, NoHeader: c.noHeader, Bad: c.bad, FirstBad: c.firstBad}
	for name, m := range c.streams {
		nums := make([]uint64, 0, len(m))
		s := StreamReport{Stream: name}
		for n, times := range m {
			nums = append(nums, n)
			s.Duplicates += uint64(times - 1)
		}
		sort.Slice(nums, func(i, j int) bool { return nums[i] < nums[j] })
		s.Events, s.Last = uint64(len(nums)), nums[len(nums)-1]
		prev := uint64(0)
		for _, n := range nums {
			if n > prev+1 {
				s.Gaps = append(s.Gaps, [2]uint64{prev + 1, n - 1})
				s.Missing += n - 1 - prev
			}
			prev = n
		}
		r.Missing += s.Missing
		r.Duplicates += s.Duplicates
		r.Streams = append(r.Streams, s)
	}
	sort.Slice(r.Streams, func(i, j int) bool { return r.Streams[i].Stream < r.Streams[j].Stream })
	return r
}

// Write prints the report: one line per stream (with its first gaps),
// then a total line.
func (r Report) Write(w io.Writer) {
	for _, s := range r.Streams {
		fmt.Fprintf(w, "%s: events=%d last=%d missing=%d duplicates=%d\n", s.Stream, s.Events, s.Last, s.Missing, s.Duplicates)
		if len(s.Gaps) > 0 {
			var parts []string
			for i, g := range s.Gaps {
				if i == 10 {
					parts = append(parts, fmt.Sprintf("… %d more", len(s.Gaps)-10))
					break
				}
				if g[0] == g[1] {
					parts = append(parts, fmt.Sprint(g[0]))
				} else {
					parts = append(parts, fmt.Sprintf("%d-%d", g[0], g[1]))
				}
			}
			fmt.Fprintf(w, "  gaps: %s\n", strings.Join(parts, ", "))
		}
	}
	fmt.Fprintf(w, "check-seq: streams=%d records=%d missing=%d duplicates=%d no_header=%d malformed=%d\n",
		len(r.Streams), r.Records, r.Missing, r.Duplicates, r.NoHeader, r.Bad)
	if r.Bad > 0 {
		fmt.Fprintf(w, "check-seq: first malformed header: %s\n", r.FirstBad)
	}
}

// ReadKafka reads every record of the topics, from each partition's first
// offset to its end when the read starts, into c.
func ReadKafka(ctx context.Context, c *Checker, broker string, topics []string) error {
	conn, err := kafka.DialContext(ctx, "tcp", broker)
	if err != nil {
		return fmt.Errorf("kafka %s: %w", broker, err)
	}
	parts, err := conn.ReadPartitions(topics...)
	conn.Close()
	if err != nil {
		return fmt.Errorf("kafka %s: partitions of %s: %w", broker, strings.Join(topics, ", "), err)
	}
	for _, p := range parts {
		if err := readPartition(ctx, c, broker, p.Topic, p.ID); err != nil {
			return err
		}
	}
	return nil
}

func readPartition(ctx context.Context, c *Checker, broker, topic string, part int) error {
	conn, err := kafka.DialLeader(ctx, "tcp", broker, topic, part)
	if err != nil {
		return fmt.Errorf("kafka %s partition %d: %w", topic, part, err)
	}
	defer conn.Close()
	first, last, err := conn.ReadOffsets()
	if err != nil {
		return fmt.Errorf("kafka %s partition %d: offsets: %w", topic, part, err)
	}
	if _, err := conn.Seek(first, kafka.SeekAbsolute); err != nil {
		return fmt.Errorf("kafka %s partition %d: %w", topic, part, err)
	}
	for off := first; off < last; {
		if err := ctx.Err(); err != nil {
			return err
		}
		conn.SetReadDeadline(time.Now().Add(10 * time.Second))
		b := conn.ReadBatch(1, 16<<20)
		for {
			m, err := b.ReadMessage()
			if err != nil {
				break
			}
			v := ""
			for _, h := range m.Headers {
				if h.Key == Header {
					v = string(h.Value)
				}
			}
			c.Add(v)
			off = m.Offset + 1
		}
		if err := b.Close(); err != nil && !errors.Is(err, io.EOF) {
			return fmt.Errorf("kafka %s partition %d at offset %d: %w", topic, part, off, err)
		}
	}
	return nil
}

// ReadJetStream reads every message of the stream (those of subject
// when it is not empty) that is in it when the read starts, into c.
func ReadJetStream(ctx context.Context, c *Checker, url, stream, subject string, opts ...nats.Option) error {
	nc, err := nats.Connect(url, opts...)
	if err != nil {
		return fmt.Errorf("nats %s: %w", url, err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	cfg := jetstream.OrderedConsumerConfig{DeliverPolicy: jetstream.DeliverAllPolicy}
	if subject != "" {
		cfg.FilterSubjects = []string{subject}
	}
	cons, err := js.OrderedConsumer(ctx, stream, cfg)
	if err != nil {
		return fmt.Errorf("nats stream %s: %w", stream, err)
	}
	info, err := cons.Info(ctx)
	if err != nil {
		return fmt.Errorf("nats stream %s: %w", stream, err)
	}
	pending := info.NumPending
	for pending > 0 {
		batch, err := cons.Fetch(int(min(pending, 1000)), jetstream.FetchMaxWait(10*time.Second))
		if err != nil {
			return fmt.Errorf("nats stream %s: %w", stream, err)
		}
		got := 0
		for m := range batch.Messages() {
			got++
			c.Add(m.Headers().Get(Header))
			md, err := m.Metadata()
			if err != nil {
				return err
			}
			pending = md.NumPending
		}
		if err := batch.Error(); err != nil {
			return fmt.Errorf("nats stream %s: %w", stream, err)
		}
		if got == 0 {
			return fmt.Errorf("nats stream %s: no message within 10s with %d pending", stream, pending)
		}
	}
	return nil
}
