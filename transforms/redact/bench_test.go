package redact

import (
	"net/netip"
	"testing"

	flowpb "github.com/flowbus/flowbus/flow"
)

// benchFlows returns n flows with addresses from a pool of 256 (so the
// pseudonym cache is warm after the first round), an HTTP part on every
// fourth flow and a DNS answer on every eighth.
func benchFlows(n int) []*flowpb.Flow {
	fs := make([]*flowpb.Flow, n)
	for i := range fs {
		src := netip.AddrFrom4([4]byte{10, 0, byte(i % 16), byte(i % 256)}).String()
		dst := netip.AddrFrom4([4]byte{10, 1, 0, byte(i % 7)}).String()
		f := &flowpb.Flow{
			IP:      &flowpb.IP{Source: src, Destination: dst, IpVersion: flowpb.IPVersion_IPv4},
			L4:      &flowpb.Layer4{Protocol: &flowpb.Layer4_TCP{TCP: &flowpb.TCP{SourcePort: 40000, DestinationPort: 80}}},
			Source:  &flowpb.Endpoint{Namespace: "shop", PodName: "cart-1", Labels: []string{"k8s:app=cart"}},
			Summary: "TCP Flags: ACK",
		}
		switch {
		case i%4 == 0:
			f.L7 = &flowpb.Layer7{Record: &flowpb.Layer7_Http{Http: &flowpb.HTTP{Method: "GET", Url: "http://svc/api/v1/items?id=42&session=abc",
				Headers: []*flowpb.HTTPHeader{{Key: "Authorization", Value: "Bearer x"}, {Key: "Content-Type", Value: "application/json"}}}}}
			f.Summary = "HTTP/1.1 GET http://svc/api/v1/items?id=42&session=abc"
		case i%8 == 1:
			f.L7 = &flowpb.Layer7{Record: &flowpb.Layer7_Dns{Dns: &flowpb.DNS{Query: "svc.", Ips: []string{dst}}}}
			f.Summary = `DNS Answer "` + dst + `" TTL: 30 (Proxy svc. A)`
		}
		fs[i] = f
	}
	return fs
}

// snapshot holds the values redaction changes in a bench flow, so that
// the flow can be restored cheaply instead of rebuilt.
type snapshot struct {
	src, dst, url, summary string
	headers, ips, labels   []string
	source                 *flowpb.Endpoint
}

func take(f *flowpb.Flow) snapshot {
	s := snapshot{src: f.IP.Source, dst: f.IP.Destination, summary: f.Summary, source: f.Source, labels: f.Source.Labels}
	if h := f.GetL7().GetHttp(); h != nil {
		s.url = h.Url
		for _, hd := range h.Headers {
			s.headers = append(s.headers, hd.Value)
		}
	}
	s.ips = append(s.ips, f.GetL7().GetDns().GetIps()...)
	return s
}

func (s *snapshot) restore(f *flowpb.Flow) {
	f.IP.Source, f.IP.Destination, f.Summary = s.src, s.dst, s.summary
	f.Source = s.source
	f.Source.Labels = s.labels
	if h := f.GetL7().GetHttp(); h != nil {
		h.Url = s.url
		for i, hd := range h.Headers {
			hd.Value = s.headers[i]
		}
	}
	if d := f.GetL7().GetDns(); d != nil {
		copy(d.Ips, s.ips)
	}
}

// benchmarkRedact redacts a pool of flows, restoring each flow's changed
// values (a few string assignments, timed) before redacting it again.
func benchmarkRedact(b *testing.B, conf string) {
	r := build(b, conf)
	const n = 1024
	fs := benchFlows(n)
	snaps := make([]snapshot, n)
	for i, f := range fs {
		snaps[i] = take(f)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		snaps[i%n].restore(fs[i%n])
		r.Redact(fs[i%n])
	}
}

// Per flow; a quarter of the flows are HTTP, an eighth DNS.
func BenchmarkHTTP(b *testing.B) {
	benchmarkRedact(b, "http: {url_query: true, headers: {deny: [authorization]}}")
}
func BenchmarkIPHMAC(b *testing.B) {
	benchmarkRedact(b, "ip: {mode: hmac, key_file: "+keyFile(b, testKey)+"}")
}
func BenchmarkIPTruncate(b *testing.B) { benchmarkRedact(b, "ip: {mode: truncate}") }
func BenchmarkRemove(b *testing.B)     { benchmarkRedact(b, "remove: [source.labels, Summary]") }
func BenchmarkAll(b *testing.B) {
	benchmarkRedact(b, "http: {url_query: true}\nkafka: {api_key: true}\nip: {mode: hmac, key_file: "+keyFile(b, testKey)+"}\nremove: [source.labels]")
}

// BenchmarkHMACUncached is the cost of one pseudonym without the cache.
func BenchmarkHMACUncached(b *testing.B) {
	m := newHMACMapper([]byte(testKey))
	b.ReportAllocs()
	for b.Loop() {
		m.compute("10.1.2.3")
	}
}
