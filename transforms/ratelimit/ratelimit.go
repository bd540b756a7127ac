// Package ratelimit implements the `ratelimit` transform: a token bucket
// that passes at most `events_per_second` flows on average and `burst` at
// once, optionally one bucket per value of a field.
//
// Its keys: `flowbus components ratelimit`, or docs/components.md.
//
// A bucket holds up to burst tokens and starts full; it gains
// events_per_second tokens a second, and each flow that passes takes one.
// A flow that finds less than one token is dropped and counted as
// rate_limited. LostEvents are never rate-limited and take no token.
//
// With a key, the field's value as text (fieldpath.AppendText; repeated
// values joined with commas) selects the bucket; flows where the field is
// unset share the bucket of the empty value. At most max_keys buckets
// exist: when a new value arrives at the bound, the bucket of the value
// seen least recently is forgotten, and that value starts again with a full
// bucket if it comes back. A bucket idle for burst/events_per_second
// seconds is full anyway, so with enough keys this changes nothing; the
// flowbus_ratelimit_evictions_total counter tells when it does.
//
// Time is read once per batch. In steady state (no new keys) the transform
// allocates nothing.
package ratelimit

import (
	"fmt"
	"math"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/reflect/protoreflect"
	"gopkg.in/yaml.v3"

	"github.com/flowbus/flowbus/flow/fieldpath"
	"github.com/flowbus/flowbus/pipeline"
	"github.com/flowbus/flowbus/pipeline/config"
)

func init() {
	pipeline.RegisterTransform(pipeline.Spec{
		Type:        "ratelimit",
		Summary:     "passes at most events_per_second flows on average and burst at once (a token bucket), optionally one bucket per value of a field",
		Description: `A bucket holds up to burst tokens and starts full; it gains events_per_second tokens a second, and each flow that passes takes one. A flow that finds less than one token is dropped and counted as rate_limited. LostEvents are never rate-limited. With a key, the field's value as text selects the bucket; at most max_keys buckets exist, the least recently seen one is forgotten first (flowbus_ratelimit_evictions_total counts it).`,
		Example: `type: ratelimit
inputs: [flows]
events_per_second: 1000
burst: 2000
key: source.namespace
max_keys: 10000
`,
	}, pipeline.DropsRateLimited, FromOptions)
}

// FromOptions builds a ratelimit transform from its decoded options and
// registers its metrics.
func FromOptions(b *pipeline.Build, o *Options) (*Limiter, error) {
	var errs config.Errors
	var c Config
	if !(*o.EventsPerSecond > 0) || math.IsInf(*o.EventsPerSecond, 0) {
		errs = append(errs, b.Errorf("events_per_second", "events_per_second must be a positive number"))
	} else {
		c.EventsPerSecond = *o.EventsPerSecond
	}
	if o.Burst != nil {
		if *o.Burst < 1 {
			errs = append(errs, b.Errorf("burst", "burst must be at least 1"))
		}
		c.Burst = *o.Burst
	}
	if o.MaxKeys != nil {
		switch {
		case *o.MaxKeys < 1:
			errs = append(errs, b.Errorf("max_keys", "max_keys must be at least 1"))
		case o.Key == nil:
			errs = append(errs, b.Errorf("max_keys", "max_keys needs a key"))
		}
		c.MaxKeys = *o.MaxKeys
	}
	if o.Key != nil {
		c.Key = &o.Key.Path
	}
	if len(errs) > 0 {
		return nil, errs
	}
	l := New(c)
	if b.Metrics != nil {
		for _, c := range []prometheus.Collector{l.evictions, l.keys} {
			if err := b.Metrics.Register(c); err != nil {
				return nil, fmt.Errorf("ratelimit: registering metrics: %w", err)
			}
		}
	}
	return l, nil
}

// DefaultMaxKeys bounds the number of buckets when max_keys is not set.
const DefaultMaxKeys = 10000

// Options is the YAML configuration of a ratelimit transform.
type Options struct {
	EventsPerSecond *float64 `yaml:"events_per_second" required:"true" doc:"tokens gained per second: the average rate of flows passed"`
	Burst           *int     `yaml:"burst" doc:"the bucket size, the most flows passed at once (default: events_per_second rounded up, at least 1)"`
	Key             *Path    `yaml:"key" type:"field path" doc:"one bucket per value of this flow field (source.namespace); default: one bucket for all"`
	MaxKeys         *int     `yaml:"max_keys" doc:"the most buckets kept with a key (default 10000); the least recently seen is forgotten first"`
}

// Path is a field path read from the configuration, checked against
// flow.Flow when decoded.
type Path struct {
	fieldpath.Path
}

// UnmarshalConfig implements config.Unmarshaler.
func (p *Path) UnmarshalConfig(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode || n.ShortTag() != "!!str" {
		return config.Errorf(n, "expected a field path like source.pod_name")
	}
	fp, err := fieldpath.Parse(n.Value)
	if err != nil {
		return config.Errorf(n, "%v", err)
	}
	if leaf := fp.Leaf(); leaf.IsMap() || leaf.Message() != nil && !isTextMessage(leaf) {
		return config.Errorf(n, "field path %q: %s is a message, not a value; name one of its fields", n.Value, leaf.Name())
	}
	p.Path = fp
	return nil
}

// isTextMessage reports whether fd is a message that AppendText formats
// as a value (timestamps and wrappers).
func isTextMessage(fd protoreflect.FieldDescriptor) bool {
	switch fd.Message().FullName() {
	case "google.protobuf.Timestamp", "google.protobuf.BoolValue",
		"google.protobuf.Int32Value", "google.protobuf.Int64Value",
		"google.protobuf.UInt32Value", "google.protobuf.UInt64Value",
		"google.protobuf.StringValue", "google.protobuf.BytesValue",
		"google.protobuf.FloatValue", "google.protobuf.DoubleValue":
		return true
	}
	return false
}

// Config configures a Limiter.
type Config struct {
	EventsPerSecond float64
	// Burst is the bucket size; 0 means EventsPerSecond rounded up (≥ 1).
	Burst int
	// Key selects one bucket per value; nil means one bucket for all.
	Key *fieldpath.Path
	// MaxKeys bounds the number of buckets; 0 means DefaultMaxKeys.
	MaxKeys int
	// Now is the clock; nil means time.Now. Tests inject their own.
	Now func() time.Time
}

// Limiter is a ratelimit transform. It is used by one goroutine at a time.
type Limiter struct {
	rate  float64 // tokens per nanosecond
	burst float64
	key   *fieldpath.Path
	now   func() time.Time
	epoch time.Time

	// Buckets live in a slice, indexed by a map from key text, and are
	// chained in least-recently-used order (head is the most recent).
	buckets    []bucket
	index      map[string]int32
	head, tail int32
	maxKeys    int

	keyBuf    []byte
	nowNs     int64
	evictions prometheus.Counter
	keys      prometheus.Gauge
	decide    func(*pipeline.Event) bool
}

type bucket struct {
	tokens     float64
	last       int64 // nanoseconds since epoch of the last refill
	key        string
	prev, next int32 // LRU chain; -1 ends it
}

// New returns a Limiter.
func New(c Config) *Limiter {
	burst := c.Burst
	if burst <= 0 {
		burst = int(math.Max(1, math.Ceil(c.EventsPerSecond)))
	}
	maxKeys := c.MaxKeys
	if maxKeys <= 0 {
		maxKeys = DefaultMaxKeys
	}
	if c.Key == nil {
		maxKeys = 1
	}
	now := c.Now
	if now == nil {
		now = time.Now
	}
	l := &Limiter{
		rate:    c.EventsPerSecond / 1e9,
		burst:   float64(burst),
		key:     c.Key,
		now:     now,
		epoch:   now(),
		index:   make(map[string]int32, min(maxKeys, 1024)),
		head:    -1,
		tail:    -1,
		maxKeys: maxKeys,
		keyBuf:  make([]byte, 0, 128),
		evictions: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "flowbus_ratelimit_evictions_total",
			Help: "Buckets forgotten because max_keys keys were in use when a new key arrived.",
		}),
		keys: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "flowbus_ratelimit_keys",
			Help: "Buckets in use (distinct key values, at most max_keys).",
		}),
	}
	l.decide = l.allow
	return l
}

// Process removes the flows of b that exceed the rate.
func (l *Limiter) Process(b *pipeline.Batch) {
	l.nowNs = int64(l.now().Sub(l.epoch))
	b.Keep(l.decide)
	l.keys.Set(float64(len(l.buckets)))
}

// Keys returns the number of buckets in use.
func (l *Limiter) Keys() int { return len(l.buckets) }

// allow takes a token from the flow's bucket, if it has one.
func (l *Limiter) allow(e *pipeline.Event) bool {
	var i int32
	if l.key == nil {
		if len(l.buckets) == 0 {
			l.insert("")
		}
		i = 0
	} else {
		var ok bool
		l.keyBuf, ok = l.key.AppendText(l.keyBuf[:0], e.Flow)
		if !ok {
			l.keyBuf = l.keyBuf[:0]
		}
		var found bool
		if i, found = l.index[string(l.keyBuf)]; !found {
			i = l.insert(string(l.keyBuf))
		} else {
			l.touch(i)
		}
	}
	bk := &l.buckets[i]
	if d := l.nowNs - bk.last; d > 0 {
		bk.tokens = math.Min(l.burst, bk.tokens+float64(d)*l.rate)
		bk.last = l.nowNs
	}
	if bk.tokens < 1 {
		return false
	}
	bk.tokens--
	return true
}

// insert adds a full bucket for key at the head of the LRU chain, evicting
// the tail at the bound, and returns its index.
func (l *Limiter) insert(key string) int32 {
	var i int32
	if len(l.buckets) < l.maxKeys {
		i = int32(len(l.buckets))
		l.buckets = append(l.buckets, bucket{prev: -1, next: -1})
	} else {
		i = l.tail
		l.unlink(i)
		delete(l.index, l.buckets[i].key)
		l.evictions.Inc()
	}
	l.buckets[i] = bucket{tokens: l.burst, last: l.nowNs, key: key, prev: -1, next: -1}
	l.index[key] = i
	l.pushFront(i)
	return i
}

func (l *Limiter) touch(i int32) {
	if l.head == i {
		return
	}
	l.unlink(i)
	l.pushFront(i)
}

func (l *Limiter) unlink(i int32) {
	b := &l.buckets[i]
	if b.prev >= 0 {
		l.buckets[b.prev].next = b.next
	} else {
		l.head = b.next
	}
	if b.next >= 0 {
		l.buckets[b.next].prev = b.prev
	} else {
		l.tail = b.prev
	}
	b.prev, b.next = -1, -1
}

func (l *Limiter) pushFront(i int32) {
	b := &l.buckets[i]
	b.prev, b.next = -1, l.head
	if l.head >= 0 {
		l.buckets[l.head].prev = i
	}
	l.head = i
	if l.tail < 0 {
		l.tail = i
	}
}
