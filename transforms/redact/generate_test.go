package redact

import (
	"net/netip"
	"net/url"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	flowpb "github.com/flowbus/flowbus/flow"
	"github.com/flowbus/flowbus/pipeline"
	"github.com/flowbus/flowbus/sources/generate"
)

// TestGeneratedFlows runs every rule over flows of the generate source and
// checks each flow against its original.
func TestGeneratedFlows(t *testing.T) {
	r := build(t, `
http:
  url_query: true
  headers: {deny: [authorization, cookie, set-cookie]}
kafka: {api_key: true}
ip: {mode: hmac, key_file: `+keyFile(t, testKey)+`}
remove: [source.labels, destination.labels]
`)
	ref := build(t, "ip: {mode: hmac, key_file: "+keyFile(t, testKey)+"}")
	g := generate.NewGenerator(7)
	var e pipeline.Event
	seen := map[string]int{}
	for i := range 20_000 {
		g.Fill(&e, int64(i)*1e6)
		orig := proto.Clone(e.Flow).(*flowpb.Flow)
		f := e.Flow
		r.Redact(f)

		if f.GetSource().GetLabels() != nil || f.GetDestination().GetLabels() != nil {
			t.Fatalf("labels not removed: %v", f)
		}
		checkAddr := func(what, before, after string) {
			if before == "" {
				if after != "" {
					t.Fatalf("%s: empty became %q", what, after)
				}
				return
			}
			seen["ip"]++
			a, b := netip.MustParseAddr(before), netip.MustParseAddr(after)
			if a.Is4() != b.Is4() || after != ref.ip.Map(before) || after == before {
				t.Fatalf("%s: %s → %s", what, before, after)
			}
			if strings.Contains(f.Summary, before) && !strings.Contains(after, before) {
				for _, w := range strings.FieldsFunc(f.Summary, func(c rune) bool { return c > 127 || !isHex(byte(c)) && c != '.' && c != ':' && c != '%' }) {
					if w == before {
						t.Fatalf("%s %s still in Summary %q", what, before, f.Summary)
					}
				}
			}
		}
		checkAddr("IP.source", orig.GetIP().GetSource(), f.GetIP().GetSource())
		checkAddr("IP.destination", orig.GetIP().GetDestination(), f.GetIP().GetDestination())
		checkAddr("IP.source_xlated", orig.GetIP().GetSourceXlated(), f.GetIP().GetSourceXlated())
		checkAddr("tunnel.IP.source", orig.GetTunnel().GetIP().GetSource(), f.GetTunnel().GetIP().GetSource())
		checkAddr("tunnel.IP.destination", orig.GetTunnel().GetIP().GetDestination(), f.GetTunnel().GetIP().GetDestination())
		for j, ip := range orig.GetL7().GetDns().GetIps() {
			seen["dns"]++
			checkAddr("l7.dns.ips", ip, f.GetL7().GetDns().GetIps()[j])
		}
		if k := f.GetL7().GetKafka(); k != nil {
			seen["kafka"]++
			if k.ApiKey != Redacted || k.Topic != orig.GetL7().GetKafka().Topic {
				t.Fatalf("kafka: %v", k)
			}
		}
		if h := f.GetL7().GetHttp(); h != nil {
			seen["http"]++
			oh := orig.GetL7().GetHttp()
			u, err := url.Parse(h.Url)
			if err != nil || u.RawQuery != "" || u.Fragment != "" {
				t.Fatalf("url %q (%v) from %q", h.Url, err, oh.Url)
			}
			if strings.ContainsAny(oh.Url, "?#") {
				seen["query"]++
				if ou, _ := url.Parse(oh.Url); ou.Host != u.Host || ou.Path != u.Path || ou.Scheme != u.Scheme {
					t.Fatalf("url %q from %q", h.Url, oh.Url)
				}
			}
			if ou, _ := url.Parse(oh.Url); ou != nil && ou.User != nil {
				if _, ok := ou.User.Password(); ok {
					seen["password"]++
				}
			}
			if pw, ok := u.User.Password(); ok && pw != Redacted {
				t.Fatalf("password kept: %q", h.Url)
			}
			if oh.Url != h.Url && !strings.Contains(f.Summary, h.Url) {
				t.Fatalf("Summary %q lacks the redacted url %q", f.Summary, h.Url)
			}
			for j, hd := range h.Headers {
				switch strings.ToLower(hd.Key) {
				case "authorization", "cookie", "set-cookie":
					seen["denied header"]++
					if hd.Value != Redacted {
						t.Fatalf("header %s = %q", hd.Key, hd.Value)
					}
				default:
					if hd.Value != oh.Headers[j].Value {
						t.Fatalf("header %s changed to %q", hd.Key, hd.Value)
					}
				}
			}
		}
	}
	for _, k := range []string{"ip", "dns", "kafka", "http", "query", "password", "denied header"} {
		if seen[k] == 0 {
			t.Errorf("the generator produced no %s case", k)
		}
	}
	t.Logf("checked: %v", seen)
}

// BenchmarkGenerated redacts batches of 512 generated flows with every
// rule; b.N counts flows, generation is not timed.
func BenchmarkGenerated(b *testing.B) {
	r := build(b, "http: {url_query: true, headers: {deny: [authorization, cookie]}}\nkafka: {api_key: true}\nip: {mode: hmac, key_file: "+keyFile(b, testKey)+"}")
	g := generate.NewGenerator(1)
	batch := pipeline.NewBatch()
	defer batch.Release()
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i += 512 {
		b.StopTimer()
		batch.Truncate(0)
		for j := range 512 {
			g.Fill(batch.Next(), int64(i+j))
		}
		b.StartTimer()
		r.Process(batch)
	}
}
