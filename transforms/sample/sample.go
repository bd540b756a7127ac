// Package sample implements the `sample` transform: it keeps one flow in
// `rate` and marks the kept ones with their rate, so that consumers can
// weigh them (the sinks' flowbus-sample-rate header).
//
// Its keys: `flowbus components sample`, or docs/components.md.
//
// With `key: connection` the decision is a function of the connection: the
// protocol and the two (address, port) endpoints, put in a canonical order
// so that both directions of a connection (the same 5-tuple, swapped) get
// the same decision. A flow is kept when
//
//	xxhash64(proto ‖ lowAddr ‖ lowPort ‖ highAddr ‖ highPort) mod rate == 0
//
// where proto is the IANA protocol number of the flow's L4 layer (0 when
// there is none), each address is the 16-byte form of IP.source or
// IP.destination (IPv4 as IPv4-mapped IPv6), each port two bytes big
// endian (0 for protocols without ports), and the endpoint that sorts lower
// (address bytes, then port) comes first; xxhash64 is XXH64 with seed 0.
// The decision is thus the same on every node and across restarts, and the
// flows kept at rate N are a subset of those kept at any divisor of N. An
// address that is not an IP address is hashed as text. Flows without IP
// addresses have no connection and are sampled per event.
//
// With `key: none` every event is kept independently with probability
// 1/rate, drawn from a PCG generator seeded at random when the transform is
// built. (A counter would alias with periodic traffic: at rate 2 it would
// keep every request and drop every response.)
//
// LostEvents are never sampled. Flows matching a `keep` filter pass
// without a sampling decision and keep the rate they had. Every other kept
// flow gets Event.SampleRate = rate, multiplied by the rate an earlier
// sample stage set, so that a flow always stands for SampleRate flows.
package sample

import (
	crand "crypto/rand"
	"encoding/binary"
	"errors"
	"math"
	"math/rand/v2"
	"net/netip"

	"github.com/cespare/xxhash/v2"
	"gopkg.in/yaml.v3"

	flowpb "github.com/flowbus/flowbus/flow"
	"github.com/flowbus/flowbus/flowfilter"
	"github.com/flowbus/flowbus/pipeline"
	"github.com/flowbus/flowbus/pipeline/config"
)

func init() {
	pipeline.RegisterTransform(pipeline.Spec{
		Type:        "sample",
		Summary:     "keeps one flow in rate, the same decision for both directions of a connection on every node, and marks kept flows with their rate",
		Description: `With key connection the decision is a hash of the connection (protocol and both endpoints in a canonical order), so both directions of a connection and every node agree, and the flows kept at rate N are a subset of those kept at any divisor of N. With key none each event is kept with probability 1/rate. LostEvents are never sampled; flows matching a keep filter pass unsampled. Every other kept flow carries its sample rate (flowbus-sample-rate header), multiplied by an earlier sample stage's.`,
		Example: `type: sample
inputs: [flows]
rate: 100
key: connection
keep:
  - verdict: [DROPPED]
  - tcp_flags: [{SYN: true}, {RST: true}]
`,
	}, pipeline.DropsSampled, FromOptions)
}

// Options is the YAML configuration of a sample transform.
type Options struct {
	Rate *uint32   `yaml:"rate" required:"true" doc:"keep 1 in rate flows (at least 1)"`
	Key  string    `yaml:"key" default:"connection" doc:"what a decision is made for: connection (both directions alike) or none (each event at random)"`
	Keep yaml.Node `yaml:"keep" type:"list of FlowFilter" doc:"flows matching any of these Hubble FlowFilters are always kept, unsampled"`
}

// Key says what a sampling decision is made for.
type Key int

const (
	// ByConnection gives every flow of a connection, in both directions,
	// the same decision.
	ByConnection Key = iota
	// PerEvent decides for each event independently.
	PerEvent
)

// FromOptions builds a sample transform from its decoded options.
func FromOptions(b *pipeline.Build, o *Options) (*Sampler, error) {
	var errs config.Errors
	if *o.Rate == 0 {
		errs = append(errs, b.Errorf("rate", "rate must be at least 1"))
	}
	key := ByConnection
	switch o.Key {
	case "", "connection":
	case "none":
		key = PerEvent
	default:
		errs = append(errs, b.Errorf("key", "unknown key %q (want connection or none)", o.Key))
	}
	var keep *flowfilter.Filter
	if o.Keep.Kind != 0 {
		filters, err := flowfilter.ParseFilters(&o.Keep)
		if err == nil && len(filters) > 0 {
			keep, err = flowfilter.New(filters, nil)
			var fe *flowfilter.Error
			if errors.As(err, &fe) {
				fe.List = "keep"
			}
			err = flowfilter.PositionedList(err, &o.Keep)
		}
		if err != nil {
			errs = append(errs, config.Positioned(err, &o.Keep)...)
		}
	}
	if len(errs) > 0 {
		return nil, errs
	}
	return New(*o.Rate, key, keep), nil
}

// Sampler is a sample transform. It is used by one goroutine at a time.
type Sampler struct {
	rate   uint64
	key    Key
	keep   *flowfilter.Filter // nil: none
	rng    *rand.PCG
	decide func(*pipeline.Event) bool
}

// New returns a sampler that keeps 1 in rate flows (rate ≥ 1), decided per
// key, and always keeps the flows keep matches (keep may be nil).
func New(rate uint32, key Key, keep *flowfilter.Filter) *Sampler {
	var seed [16]byte
	_, _ = crand.Read(seed[:]) // never fails on Linux
	s := &Sampler{
		rate: uint64(max(rate, 1)),
		key:  key,
		keep: keep,
		rng:  rand.NewPCG(binary.LittleEndian.Uint64(seed[:8]), binary.LittleEndian.Uint64(seed[8:])),
	}
	s.decide = s.keepEvent
	return s
}

// Process removes the flows of b that are not sampled.
func (s *Sampler) Process(b *pipeline.Batch) {
	if s.rate == 1 {
		return
	}
	b.Keep(s.decide)
}

// keepEvent decides for one flow event and marks a kept one with its rate.
func (s *Sampler) keepEvent(e *pipeline.Event) bool {
	f := e.Flow
	if f == nil {
		return true
	}
	if s.keep != nil && s.keep.Match(f) {
		return true
	}
	var h uint64
	ok := false
	if s.key == ByConnection {
		h, ok = ConnectionHash(f)
	}
	if !ok {
		h = s.rng.Uint64()
	}
	if h%s.rate != 0 {
		return false
	}
	r := s.rate * uint64(max(e.SampleRate, 1))
	e.SampleRate = uint32(min(r, math.MaxUint32))
	return true
}

// ConnectionHash returns the direction-independent hash of f's connection
// described in the package comment; ok is false when f has no IP address.
func ConnectionHash(f *flowpb.Flow) (h uint64, ok bool) {
	ip := f.GetIP()
	if ip == nil || ip.Source == "" && ip.Destination == "" {
		return 0, false
	}
	proto, sport, dport := l4(f.GetL4())
	var a, b [18]byte
	putEndpoint(&a, ip.Source, sport)
	putEndpoint(&b, ip.Destination, dport)
	if string(b[:]) < string(a[:]) {
		a, b = b, a
	}
	var buf [37]byte
	buf[0] = proto
	copy(buf[1:19], a[:])
	copy(buf[19:37], b[:])
	return xxhash.Sum64(buf[:]), true
}

// putEndpoint writes an endpoint as 16 address bytes and 2 port bytes, so
// that byte order is the canonical endpoint order.
func putEndpoint(dst *[18]byte, addr string, port uint32) {
	if a, err := netip.ParseAddr(addr); err == nil {
		a16 := a.As16()
		copy(dst[:16], a16[:])
	} else {
		// Not an address: its text, hashed, marked so that it cannot equal
		// an IPv6 address beginning with the same bytes by construction.
		binary.BigEndian.PutUint64(dst[:8], xxhash.Sum64String(addr))
		binary.BigEndian.PutUint64(dst[8:16], 0xffff_ffff_ffff_fffe)
	}
	binary.BigEndian.PutUint16(dst[16:], uint16(port))
}

// l4 returns the IANA protocol number and ports of l.
func l4(l *flowpb.Layer4) (proto byte, sport, dport uint32) {
	switch p := l.GetProtocol().(type) {
	case *flowpb.Layer4_TCP:
		return 6, p.TCP.GetSourcePort(), p.TCP.GetDestinationPort()
	case *flowpb.Layer4_UDP:
		return 17, p.UDP.GetSourcePort(), p.UDP.GetDestinationPort()
	case *flowpb.Layer4_SCTP:
		return 132, p.SCTP.GetSourcePort(), p.SCTP.GetDestinationPort()
	case *flowpb.Layer4_ICMPv4:
		return 1, 0, 0
	case *flowpb.Layer4_ICMPv6:
		return 58, 0, 0
	case *flowpb.Layer4_VRRP:
		return 112, 0, 0
	case *flowpb.Layer4_IGMP:
		return 2, 0, 0
	}
	return 0, 0, 0
}
