package sample

import (
	"math/rand/v2"
	"net/netip"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	flowpb "github.com/flowbus/flowbus/flow"
	"github.com/flowbus/flowbus/pipeline"
)

func mustYAML(t testing.TB, src string) *yaml.Node {
	t.Helper()
	var doc yaml.Node
	if err := yaml.Unmarshal([]byte(src), &doc); err != nil {
		t.Fatal(err)
	}
	return doc.Content[0]
}

func build(t testing.TB, src string) *Sampler {
	t.Helper()
	s, err := pipeline.Make(nil, mustYAML(t, src), FromOptions)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func tcpFlow(src, dst string, sport, dport uint32) *flowpb.Flow {
	return &flowpb.Flow{
		Verdict: flowpb.Verdict_FORWARDED,
		IP:      &flowpb.IP{Source: src, Destination: dst, IpVersion: flowpb.IPVersion_IPv4},
		L4:      &flowpb.Layer4{Protocol: &flowpb.Layer4_TCP{TCP: &flowpb.TCP{SourcePort: sport, DestinationPort: dport}}},
	}
}

// connections yields n random connections as a flow and its reply
// (addresses and ports swapped), reusing two flows; the mix covers IPv4,
// IPv6, TCP, UDP and ICMP. The generator is seeded, so runs are repeatable.
func connections(n int, yield func(fwd, rev *flowpb.Flow)) {
	r := rand.New(rand.NewPCG(1, 2))
	fwd := tcpFlow("", "", 0, 0)
	rev := tcpFlow("", "", 0, 0)
	addr := func(v6 bool) string {
		if v6 {
			var b [16]byte
			b[0], b[1] = 0xfd, 0x00
			for i := 8; i < 16; i++ {
				b[i] = byte(r.Uint32())
			}
			return netip.AddrFrom16(b).String()
		}
		return netip.AddrFrom4([4]byte{10, byte(r.Uint32()), byte(r.Uint32()), byte(r.Uint32())}).String()
	}
	for range n {
		v6 := r.IntN(4) == 0
		a, b := addr(v6), addr(v6)
		sp, dp := uint32(r.IntN(65536)), uint32(r.IntN(65536))
		fwd.IP.Source, fwd.IP.Destination = a, b
		rev.IP.Source, rev.IP.Destination = b, a
		switch r.IntN(8) {
		case 0:
			fwd.L4.Protocol = &flowpb.Layer4_UDP{UDP: &flowpb.UDP{SourcePort: sp, DestinationPort: dp}}
			rev.L4.Protocol = &flowpb.Layer4_UDP{UDP: &flowpb.UDP{SourcePort: dp, DestinationPort: sp}}
		case 1:
			fwd.L4.Protocol = &flowpb.Layer4_ICMPv4{ICMPv4: &flowpb.ICMPv4{Type: 8}}
			rev.L4.Protocol = &flowpb.Layer4_ICMPv4{ICMPv4: &flowpb.ICMPv4{Type: 0}}
		default:
			fwd.L4.Protocol = &flowpb.Layer4_TCP{TCP: &flowpb.TCP{SourcePort: sp, DestinationPort: dp}}
			rev.L4.Protocol = &flowpb.Layer4_TCP{TCP: &flowpb.TCP{SourcePort: dp, DestinationPort: sp}}
		}
		yield(fwd, rev)
	}
}

// TestConnectionRate samples ≥100k flows at several rates: the kept share
// is 1/rate within ±5 %, and the two directions of a connection always get
// the same decision.
func TestConnectionRate(t *testing.T) {
	for _, tt := range []struct {
		rate  uint32
		conns int
	}{{2, 100_000}, {10, 100_000}, {50, 500_000}} {
		s := New(tt.rate, ByConnection, nil)
		var kept, total, split int
		connections(tt.conns, func(fwd, rev *flowpb.Flow) {
			e1 := pipeline.Event{Flow: fwd}
			e2 := pipeline.Event{Flow: rev}
			k1, k2 := s.keepEvent(&e1), s.keepEvent(&e2)
			if k1 != k2 {
				split++
			}
			if k1 {
				kept++
				if e1.SampleRate != tt.rate {
					t.Fatalf("kept flow has SampleRate %d, want %d", e1.SampleRate, tt.rate)
				}
			}
			if k2 {
				kept++
			}
			total += 2
		})
		want := float64(total) / float64(tt.rate)
		if dev := (float64(kept) - want) / want; dev < -0.05 || dev > 0.05 {
			t.Errorf("rate %d: kept %d of %d flows, want %.0f ±5%% (off by %.1f%%)", tt.rate, kept, total, want, dev*100)
		}
		if split != 0 {
			t.Errorf("rate %d: %d connections had their directions split", tt.rate, split)
		}
		t.Logf("rate %d: kept %d of %d flows (%.2f%% of expected)", tt.rate, kept, total, 100*float64(kept)/want)
	}
}

// TestConnectionHashStable pins the hash: the decision must be the same on
// every node and after restarts, so the construction must not drift.
func TestConnectionHashStable(t *testing.T) {
	f := tcpFlow("10.0.0.1", "10.0.0.2", 40000, 443)
	r := tcpFlow("10.0.0.2", "10.0.0.1", 443, 40000)
	h1, ok1 := ConnectionHash(f)
	h2, ok2 := ConnectionHash(r)
	if !ok1 || !ok2 || h1 != h2 {
		t.Fatalf("hash %x (%v) and reversed %x (%v) differ", h1, ok1, h2, ok2)
	}
	if h1 != goldenHash {
		t.Errorf("ConnectionHash = %#x, want %#x (the canonical construction changed)", h1, uint64(goldenHash))
	}

	// Address text forms of the same address hash alike.
	m := tcpFlow("::ffff:10.0.0.1", "10.0.0.2", 40000, 443)
	if h, _ := ConnectionHash(m); h != h1 {
		t.Errorf("IPv4-mapped form hashes differently: %#x", h)
	}
	// Different protocol, port or address: different connection.
	for _, g := range []*flowpb.Flow{
		tcpFlow("10.0.0.1", "10.0.0.2", 40001, 443),
		tcpFlow("10.0.0.1", "10.0.0.3", 40000, 443),
		{IP: f.IP, L4: &flowpb.Layer4{Protocol: &flowpb.Layer4_UDP{UDP: &flowpb.UDP{SourcePort: 40000, DestinationPort: 443}}}},
	} {
		if h, _ := ConnectionHash(g); h == h1 {
			t.Errorf("%v hashes like the original connection", g)
		}
	}
	// Two samplers (two nodes, or before and after a restart) agree.
	a, b := New(7, ByConnection, nil), New(7, ByConnection, nil)
	disagree := 0
	connections(10_000, func(fwd, _ *flowpb.Flow) {
		if a.keepEvent(&pipeline.Event{Flow: fwd}) != b.keepEvent(&pipeline.Event{Flow: fwd}) {
			disagree++
		}
	})
	if disagree != 0 {
		t.Errorf("two samplers disagreed on %d flows", disagree)
	}
}

// goldenHash is ConnectionHash of TCP 10.0.0.1:40000 <-> 10.0.0.2:443.
const goldenHash = 0x0a236fa5803e8fd1

// TestNestedRates: flows kept at rate 20 are kept at rates 10, 5 and 2.
func TestNestedRates(t *testing.T) {
	s20, s10, s3 := New(20, ByConnection, nil), New(10, ByConnection, nil), New(3, ByConnection, nil)
	connections(20_000, func(fwd, _ *flowpb.Flow) {
		k20 := s20.keepEvent(&pipeline.Event{Flow: fwd})
		if k20 && !s10.keepEvent(&pipeline.Event{Flow: fwd}) {
			t.Fatalf("kept at 20 but not at 10: %v", fwd)
		}
		_ = s3.keepEvent(&pipeline.Event{Flow: fwd})
	})
}

func TestPerEvent(t *testing.T) {
	s := build(t, "rate: 10\nkey: none")
	f := tcpFlow("10.0.0.1", "10.0.0.2", 1, 2) // the same connection every time
	kept := 0
	const n = 200_000
	for range n {
		e := pipeline.Event{Flow: f}
		if s.keepEvent(&e) {
			kept++
			if e.SampleRate != 10 {
				t.Fatalf("SampleRate %d", e.SampleRate)
			}
		}
	}
	if kept < n/10*95/100 || kept > n/10*105/100 {
		t.Errorf("kept %d of %d, want %d ±5%%", kept, n, n/10)
	}
	// A strictly alternating stream must not alias with the decision.
	req, resp := 0, 0
	for i := range n {
		if s.keepEvent(&pipeline.Event{Flow: f}) {
			if i%2 == 0 {
				req++
			} else {
				resp++
			}
		}
	}
	if req == 0 || resp == 0 || float64(req)/float64(resp) < 0.9 || float64(req)/float64(resp) > 1.1 {
		t.Errorf("alternating stream: kept %d even and %d odd events", req, resp)
	}
}

// TestNoAddresses: flows without IP addresses are sampled per event, not
// all together.
func TestNoAddresses(t *testing.T) {
	s := New(4, ByConnection, nil)
	kept := 0
	f := &flowpb.Flow{Verdict: flowpb.Verdict_FORWARDED}
	for range 100_000 {
		if s.keepEvent(&pipeline.Event{Flow: f}) {
			kept++
		}
	}
	if kept < 25_000*95/100 || kept > 25_000*105/100 {
		t.Errorf("kept %d of 100000 flows without addresses, want 25000 ±5%%", kept)
	}
	// Not an IP address: hashed as text, still direction-independent.
	h1, ok1 := ConnectionHash(tcpFlow("host-a", "10.0.0.2", 1, 2))
	h2, ok2 := ConnectionHash(tcpFlow("10.0.0.2", "host-a", 2, 1))
	if !ok1 || !ok2 || h1 != h2 {
		t.Errorf("text addresses: %x %v / %x %v", h1, ok1, h2, ok2)
	}
}

func TestKeepFiltersAndBatch(t *testing.T) {
	s := build(t, `
rate: 1000000
keep:
  - verdict: [DROPPED]
  - tcp_flags: [{SYN: true}]
`)
	b := pipeline.NewBatch()
	defer b.Release()
	lost := b.Next()
	lost.Lost = &flowpb.LostEvent{NumEventsLost: 5}
	const n = 1000
	for i := range n {
		f := tcpFlow("10.1.0.1", "10.1.0.2", uint32(1000+i), 80)
		switch i % 4 {
		case 0:
			f.Verdict = flowpb.Verdict_DROPPED
		case 1:
			f.L4.GetTCP().Flags = &flowpb.TCPFlags{SYN: true}
		}
		e := b.Next()
		e.Flow = f
		if i%4 == 0 {
			e.SampleRate = 3 // from an earlier stage: kept as it is
		}
	}
	s.Process(b)
	drops, syns := 0, 0
	for i := range b.Events {
		e := &b.Events[i]
		switch {
		case e.Lost != nil:
			if i != 0 {
				t.Errorf("lost event moved to %d", i)
			}
		case e.Flow.Verdict == flowpb.Verdict_DROPPED:
			drops++
			if e.SampleRate != 3 {
				t.Errorf("kept-by-filter flow SampleRate = %d, want 3", e.SampleRate)
			}
		case e.Flow.L4.GetTCP().GetFlags().GetSYN():
			syns++
			if e.SampleRate != 0 {
				t.Errorf("kept-by-filter flow SampleRate = %d, want 0", e.SampleRate)
			}
		default:
			if e.SampleRate != 1_000_000 {
				t.Errorf("sampled flow SampleRate = %d", e.SampleRate)
			}
		}
	}
	if drops != n/4 || syns != n/4 {
		t.Errorf("kept %d drops and %d SYNs, want %d each", drops, syns, n/4)
	}
	if b.Len() > 1+n/2+5 {
		t.Errorf("batch has %d events; sampling at 1e6 should remove nearly all others", b.Len())
	}
}

func TestRatesMultiply(t *testing.T) {
	s := New(1, ByConnection, nil)
	b := pipeline.NewBatch()
	defer b.Release()
	e := b.Next()
	e.Flow = tcpFlow("10.0.0.1", "10.0.0.2", 1, 2)
	s.Process(b) // rate 1: a no-op
	if b.Len() != 1 || b.Events[0].SampleRate != 0 {
		t.Fatalf("rate 1 changed the batch: %+v", b.Events[0])
	}
	// Find a flow kept at rate 4, then check an earlier rate of 5 gives 20.
	s4 := New(4, ByConnection, nil)
	for p := uint32(1); ; p++ {
		ev := pipeline.Event{Flow: tcpFlow("10.0.0.1", "10.0.0.2", p, 2), SampleRate: 5}
		if s4.keepEvent(&ev) {
			if ev.SampleRate != 20 {
				t.Errorf("SampleRate = %d, want 20", ev.SampleRate)
			}
			break
		}
	}
}

func TestConfigErrors(t *testing.T) {
	tests := []struct{ conf, want string }{
		{"key: none", `1:1: missing required key "rate"`},
		{"rate: 0", "1:7: rate must be at least 1"},
		{"rate: -3", "1:7: "},
		{"rate: 10\nkey: flow", `2:6: unknown key "flow"`},
		{"rate: 10\nkeep:\n  - source_pod: [a]\n  - bogus: [1]", "4:5: "},
		{"rate: 10\nkeep:\n  - source_ip: [not-an-ip]", "3:17: keep[0]: source_ip[0]"},
		{"rate: 10\nkeep: {verdict: DROPPED}", "2:7: "},
		{"rate: 10\nextra: 1", "2:1: "},
	}
	for _, tt := range tests {
		_, err := pipeline.Make(nil, mustYAML(t, tt.conf), FromOptions)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%q: error %v, want containing %q", tt.conf, err, tt.want)
		}
	}
}

func TestRegistered(t *testing.T) {
	for _, typ := range pipeline.Types("transforms") {
		if typ == "sample" {
			return
		}
	}
	t.Error("sample is not registered")
}

// benchFlows returns n flows of distinct connections.
func benchFlows(n int) []*flowpb.Flow {
	var fs []*flowpb.Flow
	connections(n, func(fwd, _ *flowpb.Flow) {
		f := tcpFlow(fwd.IP.Source, fwd.IP.Destination, 0, 0)
		f.L4 = &flowpb.Layer4{Protocol: fwd.L4.Protocol}
		f.Verdict = flowpb.Verdict_FORWARDED
		fs = append(fs, f)
	})
	return fs
}

func TestProcessAllocs(t *testing.T) {
	s := build(t, "rate: 10\nkeep: [{verdict: [DROPPED]}]")
	fs := benchFlows(512)
	b := pipeline.NewBatch()
	defer b.Release()
	allocs := testing.AllocsPerRun(50, func() {
		b.Truncate(0)
		for _, f := range fs {
			b.Next().Flow = f
		}
		s.Process(b)
	})
	if allocs != 0 {
		t.Errorf("Process allocates %.1f times per batch, want 0", allocs)
	}
}

func benchmarkSample(b *testing.B, conf string) {
	s := build(b, conf)
	fs := benchFlows(512)
	batch := pipeline.NewBatch()
	defer batch.Release()
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i += len(fs) {
		batch.Truncate(0)
		for _, f := range fs {
			batch.Next().Flow = f
		}
		s.Process(batch)
	}
}

// The benchmarks run whole batches of 512 flows; b.N counts flows.
func BenchmarkConnection(b *testing.B) { benchmarkSample(b, "rate: 10") }
func BenchmarkPerEvent(b *testing.B)   { benchmarkSample(b, "rate: 10\nkey: none") }
func BenchmarkConnectionKeep(b *testing.B) {
	benchmarkSample(b, "rate: 10\nkeep: [{verdict: [DROPPED]}, {tcp_flags: [{SYN: true}]}]")
}
