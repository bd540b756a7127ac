package redact

import (
	"crypto/hmac"
	"crypto/sha256"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
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

func build(t testing.TB, src string) *Redactor {
	t.Helper()
	r, err := pipeline.Make(&pipeline.Build{Dir: t.TempDir()}, mustYAML(t, src), FromOptions)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// keyFile writes key to a file in a new directory and returns the path.
func keyFile(t testing.TB, key string) string {
	t.Helper()
	name := filepath.Join(t.TempDir(), "ip.key")
	if err := os.WriteFile(name, []byte(key), 0o600); err != nil {
		t.Fatal(err)
	}
	return name
}

const testKey = "0123456789abcdef0123456789abcdef"

func httpFlow(url string, headers ...string) *flowpb.Flow {
	h := &flowpb.HTTP{Method: "GET", Url: url, Protocol: "HTTP/1.1"}
	for i := 0; i+1 < len(headers); i += 2 {
		h.Headers = append(h.Headers, &flowpb.HTTPHeader{Key: headers[i], Value: headers[i+1]})
	}
	return &flowpb.Flow{
		Type:    flowpb.FlowType_L7,
		IP:      &flowpb.IP{Source: "10.0.0.1", Destination: "10.0.0.2", IpVersion: flowpb.IPVersion_IPv4},
		L7:      &flowpb.Layer7{Type: flowpb.L7FlowType_REQUEST, Record: &flowpb.Layer7_Http{Http: h}},
		Summary: "HTTP/1.1 GET " + url,
	}
}

func TestHTTPURL(t *testing.T) {
	tests := []struct {
		name, conf, url, want string
	}{
		{"defaults redact the password", "http: {}", "http://user:secret@host:8080/p?a=1#f", "http://user:HUBBLE_REDACTED@host:8080/p?a=1#f"},
		{"user without password kept", "http: {}", "http://user@host/p", "http://user@host/p"},
		{"empty password counts", "http: {}", "http://user:@host/p", "http://user:HUBBLE_REDACTED@host/p"},
		{"escaped user kept", "http: {}", "http://us%20er:p%40ss@host/", "http://us%20er:HUBBLE_REDACTED@host/"},
		{"no user info", "http: {}", "http://host/p?a=1", "http://host/p?a=1"},
		{"user_info off", "http: {user_info: false}", "http://user:secret@host/p", "http://user:secret@host/p"},
		{"query and fragment", "http: {url_query: true}", "http://host/p/q?a=1&b=2#frag", "http://host/p/q"},
		{"fragment only", "http: {url_query: true}", "http://host/p#frag", "http://host/p"},
		{"query and password", "http: {url_query: true}", "https://u:pw@host/p?token=abc", "https://u:HUBBLE_REDACTED@host/p"},
		{"empty query is kept as Go writes it", "http: {url_query: true}", "http://host/p?", "http://host/p?"},
		{"relative URL", "http: {url_query: true}", "/api/v1?x=1", "/api/v1"},
		{"query off", "http: {url_query: false, user_info: false}", "http://u:p@host/?a=1", "http://u:p@host/?a=1"},
		{"empty URL", "http: {url_query: true}", "", ""},
		// URLs that url.Parse rejects are redacted as text.
		{"bad escape", "http: {url_query: true}", "http://u:pw@host/%zz?q=1#x", "http://u:HUBBLE_REDACTED@host/%zz"},
		{"bad port", "http: {}", "http://u:pw@host:port/x?q", "http://u:HUBBLE_REDACTED@host:port/x?q"},
		{"bad port, query", "http: {url_query: true, user_info: false}", "http://u:pw@host:port/x?q", "http://u:pw@host:port/x"},
		{"control character", "http: {url_query: true}", "http://h/\x7f?q=secret", "http://h/\x7f"},
		{"bad, @ in path only", "http: {}", "http://h:x/a@b", "http://h:x/a@b"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := build(t, tt.conf)
			f := httpFlow(tt.url)
			r.Redact(f)
			if got := f.L7.GetHttp().Url; got != tt.want {
				t.Errorf("url = %q, want %q", got, tt.want)
			}
			if want := "HTTP/1.1 GET " + tt.want; f.Summary != want {
				t.Errorf("Summary = %q, want %q", f.Summary, want)
			}
		})
	}
}

func TestHTTPHeaders(t *testing.T) {
	headers := []string{"Authorization", "Bearer x", "Content-Type", "text/plain", "X-Request-Id", "42", "cookie", "a=b", "cookie", "c=d"}
	R := Redacted
	tests := []struct {
		name, conf string
		want       []string // values in order
	}{
		{"no lists: every value", "http: {}", []string{R, R, R, R, R}},
		{"no lists: headers key empty", "http: {headers: {}}", []string{R, R, R, R, R}},
		{"allow list", "http: {headers: {allow: [content-type, X-REQUEST-ID]}}", []string{R, "text/plain", "42", R, R}},
		{"deny list", "http: {headers: {deny: [AUTHORIZATION, Cookie]}}", []string{R, "text/plain", "42", R, R}},
		{"deny list, nothing matches", "http: {headers: {deny: [x-secret]}}", []string{"Bearer x", "text/plain", "42", "a=b", "c=d"}},
		{"empty allow list is no list", "http: {headers: {allow: []}}", []string{R, R, R, R, R}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := build(t, tt.conf)
			f := httpFlow("http://h/", headers...)
			r.Redact(f)
			for i, h := range f.L7.GetHttp().Headers {
				if h.Key != headers[2*i] {
					t.Errorf("header %d key = %q, want %q (keys are kept)", i, h.Key, headers[2*i])
				}
				if h.Value != tt.want[i] {
					t.Errorf("header %s = %q, want %q", h.Key, h.Value, tt.want[i])
				}
			}
		})
	}
	// Without an http section, HTTP is untouched.
	f := httpFlow("http://u:p@h/?q", headers...)
	want := proto.Clone(f)
	build(t, "kafka: {api_key: true}").Redact(f)
	if !proto.Equal(f, want) {
		t.Errorf("flow changed without http rules: %v", f)
	}
}

func TestKafka(t *testing.T) {
	kafka := func(key string) *flowpb.Flow {
		return &flowpb.Flow{L7: &flowpb.Layer7{Record: &flowpb.Layer7_Kafka{Kafka: &flowpb.Kafka{ApiKey: key, Topic: "orders"}}}}
	}
	tests := []struct{ conf, key, want string }{
		{"kafka: {api_key: true}", "produce", Redacted},
		{"kafka: {api_key: true}", "", Redacted}, // Hubble sets it unconditionally
		{"kafka: {api_key: false}", "produce", "produce"},
		{"kafka: {}", "produce", "produce"},
		{"http: {}", "produce", "produce"},
	}
	for _, tt := range tests {
		f := kafka(tt.key)
		build(t, tt.conf).Redact(f)
		if got := f.L7.GetKafka(); got.ApiKey != tt.want || got.Topic != "orders" {
			t.Errorf("%s, key %q: kafka = %v, want api_key %q", tt.conf, tt.key, got, tt.want)
		}
	}
}

func TestRemove(t *testing.T) {
	r := build(t, "remove: [source.labels, destination, l4.TCP.flags, l7.http.headers, Summary]")
	f := httpFlow("http://h/", "a", "b")
	f.Source = &flowpb.Endpoint{Namespace: "ns", Labels: []string{"k8s:app=x"}}
	f.Destination = &flowpb.Endpoint{Namespace: "ns2"}
	f.L4 = &flowpb.Layer4{Protocol: &flowpb.Layer4_UDP{UDP: &flowpb.UDP{DestinationPort: 53}}}
	r.Redact(f)
	if f.Source.Labels != nil || f.Source.Namespace != "ns" || f.Destination != nil || f.Summary != "" ||
		f.L7.GetHttp().Headers != nil || f.L4.GetUDP().DestinationPort != 53 {
		t.Errorf("after remove: %v", f)
	}
}

// hmacRef computes the documented pseudonym construction independently.
func hmacRef(key string, a netip.Addr) netip.Addr {
	mac := hmac.New(sha256.New, []byte(key))
	mac.Write([]byte("flowbus ip pseudonym v1\x00"))
	if a.Is4() {
		b := a.As4()
		mac.Write(append([]byte{4}, b[:]...))
		return netip.AddrFrom4([4]byte(mac.Sum(nil)[:4]))
	}
	b := a.As16()
	mac.Write(append([]byte{6}, b[:]...))
	return netip.AddrFrom16([16]byte(mac.Sum(nil)[:16]))
}

func TestIPHMAC(t *testing.T) {
	key := keyFile(t, testKey+"\n") // a trailing newline is not part of the key
	conf := "ip: {mode: hmac, key_file: " + key + "}"
	r1, r2 := build(t, conf), build(t, conf)
	other := build(t, "ip: {mode: hmac, key_file: "+keyFile(t, "another key, 16 bytes or more")+"}")

	for _, addr := range []string{"10.0.0.1", "192.168.1.20", "0.0.0.0", "fd00::1", "2001:db8::8:800:200c:417a", "::1"} {
		a := netip.MustParseAddr(addr)
		p1, p2, p3 := r1.ip.Map(addr), r2.ip.Map(addr), other.ip.Map(addr)
		if p1 != p2 {
			t.Errorf("%s: two redactors with one key disagree: %s, %s", addr, p1, p2)
		}
		if p1 == p3 || p1 == addr {
			t.Errorf("%s: pseudonym %s (other key: %s)", addr, p1, p3)
		}
		pa := netip.MustParseAddr(p1)
		if pa.Is4() != a.Is4() || pa.Is4In6() {
			t.Errorf("%s: pseudonym %s has another family", addr, p1)
		}
		if want := hmacRef(testKey, a).String(); p1 != want {
			t.Errorf("%s: pseudonym %s, want %s from the documented construction", addr, p1, want)
		}
		if again := r1.ip.Map(addr); again != p1 { // from the cache
			t.Errorf("%s: second mapping %s differs", addr, again)
		}
	}
	// Both spellings of an IPv4 address join; zones stay.
	if m, v4 := r1.ip.Map("::ffff:10.0.0.1"), r1.ip.Map("10.0.0.1"); m != "::ffff:"+v4 {
		t.Errorf("IPv4-mapped: %s, plain %s", m, v4)
	}
	if z, p := r1.ip.Map("fe80::1%eth0"), r1.ip.Map("fe80::1"); z != p+"%eth0" {
		t.Errorf("zone: %s, without %s", z, p)
	}
	if got := r1.ip.Map("not-an-address"); got != Redacted {
		t.Errorf("non-address mapped to %q", got)
	}
	// Distinct inputs give distinct outputs (no collisions expected among
	// a few thousand addresses).
	seen := map[string]string{}
	for i := range 4096 {
		in := netip.AddrFrom4([4]byte{10, 1, byte(i >> 8), byte(i)}).String()
		out := r1.ip.Map(in)
		if prev, dup := seen[out]; dup {
			t.Fatalf("%s and %s collide on %s", prev, in, out)
		}
		seen[out] = in
	}
}

func TestIPFieldsDefault(t *testing.T) {
	r := build(t, "ip: {mode: hmac, key_file: "+keyFile(t, testKey)+"}")
	f := &flowpb.Flow{
		IP:     &flowpb.IP{Source: "10.0.0.1", SourceXlated: "192.0.2.7", Destination: "10.0.0.2", IpVersion: flowpb.IPVersion_IPv4},
		Tunnel: &flowpb.Tunnel{IP: &flowpb.IP{Source: "172.16.0.1", Destination: "172.16.0.2"}},
		L7: &flowpb.Layer7{Record: &flowpb.Layer7_Dns{Dns: &flowpb.DNS{
			Query: "db.example.com.", Ips: []string{"10.0.0.12", "10.0.0.1", "fd00::5"}}}},
		Summary: `DNS Answer "10.0.0.12,10.0.0.1,fd00::5" TTL: 30 (Proxy db.example.com. A)`,
	}
	r.Redact(f)
	m := r.ip.Map
	want := &flowpb.Flow{
		IP:     &flowpb.IP{Source: m("10.0.0.1"), SourceXlated: m("192.0.2.7"), Destination: m("10.0.0.2"), IpVersion: flowpb.IPVersion_IPv4},
		Tunnel: &flowpb.Tunnel{IP: &flowpb.IP{Source: m("172.16.0.1"), Destination: m("172.16.0.2")}},
		L7: &flowpb.Layer7{Record: &flowpb.Layer7_Dns{Dns: &flowpb.DNS{
			Query: "db.example.com.", Ips: []string{m("10.0.0.12"), m("10.0.0.1"), m("fd00::5")}}}},
		Summary: `DNS Answer "` + m("10.0.0.12") + "," + m("10.0.0.1") + "," + m("fd00::5") + `" TTL: 30 (Proxy db.example.com. A)`,
	}
	if !proto.Equal(f, want) {
		t.Errorf("redacted:\n got %v\nwant %v", f, want)
	}
	// Flows without those parts are left alone, and nothing is created.
	g := &flowpb.Flow{Verdict: flowpb.Verdict_DROPPED, L4: &flowpb.Layer4{}}
	r.Redact(g)
	if !proto.Equal(g, &flowpb.Flow{Verdict: flowpb.Verdict_DROPPED, L4: &flowpb.Layer4{}}) {
		t.Errorf("flow without addresses changed: %v", g)
	}
}

func TestIPFieldsChosen(t *testing.T) {
	r := build(t, "ip:\n  mode: truncate\n  fields: [IP.source, l4.IGMP.group_address]")
	f := &flowpb.Flow{
		IP: &flowpb.IP{Source: "10.1.2.3", Destination: "10.9.9.9"},
		L4: &flowpb.Layer4{Protocol: &flowpb.Layer4_IGMP{IGMP: &flowpb.IGMP{GroupAddress: "239.1.2.3"}}},
	}
	r.Redact(f)
	if f.IP.Source != "10.1.2.0" || f.IP.Destination != "10.9.9.9" || f.L4.GetIGMP().GroupAddress != "239.1.2.0" {
		t.Errorf("chosen fields: %v", f)
	}
}

func TestIPTruncate(t *testing.T) {
	tests := []struct{ conf, in, want string }{
		{"{mode: truncate}", "10.1.2.3", "10.1.2.0"},
		{"{mode: truncate}", "2001:db8:1234:5678::1", "2001:db8:1234::"},
		{"{mode: truncate}", "::ffff:10.1.2.3", "::ffff:10.1.2.0"},
		{"{mode: truncate}", "fe80::1%eth0", "fe80::%eth0"},
		{"{mode: truncate, ipv4_prefix: 16, ipv6_prefix: 64}", "10.1.2.3", "10.1.0.0"},
		{"{mode: truncate, ipv4_prefix: 16, ipv6_prefix: 64}", "2001:db8:1:2:3:4:5:6", "2001:db8:1:2::"},
		{"{mode: truncate, ipv4_prefix: 0, ipv6_prefix: 0}", "10.1.2.3", "0.0.0.0"},
		{"{mode: truncate, ipv4_prefix: 0, ipv6_prefix: 0}", "2001:db8::1", "::"},
		{"{mode: truncate, ipv4_prefix: 32, ipv6_prefix: 128}", "10.1.2.3", "10.1.2.3"},
		{"{mode: truncate}", "10.1.2", Redacted},
	}
	for _, tt := range tests {
		r := build(t, "ip: "+tt.conf)
		if got := r.ip.Map(tt.in); got != tt.want {
			t.Errorf("%s %s → %s, want %s", tt.conf, tt.in, got, tt.want)
		}
	}
}

func TestCacheBound(t *testing.T) {
	r := build(t, "ip: {mode: truncate}")
	r.ip.maxCache = 8
	for i := range 100 {
		a := netip.AddrFrom4([4]byte{10, 0, 0, byte(i)}).String()
		if got := r.ip.Map(a); got != "10.0.0.0" {
			t.Fatalf("%s → %s", a, got)
		}
		if len(r.ip.cache) > 8 {
			t.Fatalf("cache grew to %d entries", len(r.ip.cache))
		}
	}
}

// TestText: addresses in text are found in every form and rewritten in
// the same form; other text is left alone.
func TestText(t *testing.T) {
	r := build(t, "ip: {mode: truncate}") // 10.0.3.17 → 10.0.3.0, fd00:1:2::17 → fd00:1:2::
	arpa := func(a string) string {
		b := netip.MustParseAddr(a).As16()
		var out []string
		for i := 15; i >= 0; i-- {
			out = append(out, fmt.Sprintf("%x", b[i]&0xf), fmt.Sprintf("%x", b[i]>>4))
		}
		return strings.Join(out, ".") + ".ip6.arpa."
	}
	for _, tt := range []struct{ in, want string }{
		{"a 10.0.3.17 b", "a 10.0.3.0 b"},
		{"10.0.0.12,10.0.0.1", "10.0.0.0,10.0.0.0"},
		{"http://u@10.0.3.17:8080/p?q=10.0.3.17#x", "http://u@10.0.3.0:8080/p?q=10.0.3.0#x"},
		{"ip-10-0-3-17.ec2.internal", "ip-10-0-3-0.ec2.internal"},
		{"web-10-0-3-17-abcde", "web-10-0-3-0-abcde"},
		{"10.0.3.17.nip.io cafe10.0.3.17", "10.0.3.0.nip.io cafe10.0.3.0"},
		{"17.3.0.10.in-addr.arpa.", "0.3.0.10.in-addr.arpa."},
		{"17.3.0.10.IN-ADDR.ARPA", "0.3.0.10.IN-ADDR.ARPA"},
		{arpa("fd00:1:2::17"), arpa("fd00:1:2::")},
		{"0a:58:0a:00:03:11", "0a:58:0a:00:03:00"},
		{"0A:58:0A:00:03:11", "0A:58:0A:00:03:00"},
		{"for=10.0.3.17;proto=https, for=\"[fd00:1:2::17]:443\"", "for=10.0.3.0;proto=https, for=\"[fd00:1:2::]:443\""},
		{"10.0.3.17, 192.168.7.9", "10.0.3.0, 192.168.7.0"},
		{"::ffff:10.0.3.17 fd00:1:2::17.", "::ffff:10.0.3.0 fd00:1:2::."},
		{"fe80::1%eth0", "fe80::%eth0"},
		// Not addresses.
		{"2024-01-02T10:11:12Z", "2024-01-02T10:11:12Z"},
		{"3f2a9c1e-1234-5678-9abc-def012345678", "3f2a9c1e-1234-5678-9abc-def012345678"},
		{"k8s:app=web v1.2.3 1234.5.6.7 1.2.3.256", "k8s:app=web v1.2.3 1234.5.6.7 1.2.3.256"},
		{"aa:bb:cc:dd:ee:ff deadbeef ::", "aa:bb:cc:dd:ee:ff deadbeef ::"},
		{"", ""},
	} {
		if got := r.text(tt.in); got != tt.want {
			t.Errorf("text(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
	if n := testing.AllocsPerRun(100, func() { r.text("k8s:io.kubernetes.pod.namespace=kube-system 2024-01-02") }); n != 0 {
		t.Errorf("text without addresses allocates %v times", n)
	}
}

func TestProcess(t *testing.T) {
	r := build(t, "http: {url_query: true}\nip: {mode: truncate}")
	b := pipeline.NewBatch()
	defer b.Release()
	lost := b.Next()
	lost.Lost = &flowpb.LostEvent{NumEventsLost: 1}
	b.Next().Flow = httpFlow("http://h/?q=1", "k", "v")
	r.Process(b)
	if b.Len() != 2 || b.Events[0].Lost.NumEventsLost != 1 {
		t.Fatalf("batch changed shape: %+v", b.Events)
	}
	f := b.Events[1].Flow
	if f.L7.GetHttp().Url != "http://h/" || f.L7.GetHttp().Headers[0].Value != Redacted || f.IP.Source != "10.0.0.0" {
		t.Errorf("flow not redacted: %v", f)
	}
}

func TestConfigErrors(t *testing.T) {
	short := keyFile(t, "short\n")
	good := keyFile(t, testKey)
	tests := []struct{ conf, want string }{
		{"http: {headers: {allow: [a], deny: [b]}}", "1:17: set http.headers.allow or http.headers.deny, not both"},
		{"http: {url_query: yes please}", "1:19: "},
		{"http: {cookies: true}", "1:8: "},
		{"ip: {mode: hmac}", "1:5: ip mode hmac needs key_file"},
		{"ip:\n  mode: hmac\n  key_file: /nonexistent/ip.key", "3:13: ip.key_file: cannot read the file it names: no such file or directory"},
		{"ip:\n  mode: hmac\n  key_file: hunter2-secret-key", "3:13: ip.key_file: cannot read the file it names: no such file or directory"},
		{"ip:\n  mode: hmac\n  key_file: " + short, "3:13: ip.key_file: the key is 5 bytes, want at least 16"},
		{"ip: {mode: hmac, key_file: " + good + ", ipv4_prefix: 24}", "1:5: ipv4_prefix and ipv6_prefix apply to mode truncate"},
		{"ip: {mode: truncate, key_file: " + good + "}", "1:32: key_file applies to mode hmac"},
		{"ip: {mode: truncate, ipv4_prefix: 33}", "1:35: ipv4_prefix 33 is out of range 0-32"},
		{"ip: {mode: truncate, ipv6_prefix: -1}", "1:35: ipv6_prefix -1 is out of range 0-128"},
		{"ip: {mode: truncate, ipv6_prefix: wide}", "1:35: "},
		{"ip: {mode: scramble}", `1:12: unknown ip mode "scramble"`},
		{"ip: {key_file: x}", `1:5: missing required key "mode"`},
		{"ip:\n  mode: truncate\n  fields: [IP.source, verdict]", "3:23: ip.fields: verdict is not a string field"},
		{"ip:\n  mode: truncate\n  fields: [IP.src]", `3:12: field path "IP.src": IP has no field "src"`},
		{"ip:\n  mode: truncate\n  fields: []", "3:11: ip.fields is empty"},
		{"remove: [source.pod_name, l7.http.uri]", `1:27: field path "l7.http.uri"`},
		{"remove: source.pod_name", "1:9: "},
		{"unknown: 1", "1:1: "},
	}
	for _, tt := range tests {
		_, err := pipeline.Make(nil, mustYAML(t, tt.conf), FromOptions)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%q:\n error %v\n want containing %q", tt.conf, err, tt.want)
		}
		if err != nil && strings.Contains(err.Error(), "hunter2") {
			t.Errorf("%q: the error echoes the key: %v", tt.conf, err)
		}
	}
	// Relative key files are read from the config's directory.
	dir := filepath.Dir(good)
	if _, err := pipeline.Make(&pipeline.Build{Dir: dir}, mustYAML(t, "ip: {mode: hmac, key_file: ip.key}"), FromOptions); err != nil {
		t.Errorf("relative key_file: %v", err)
	}
}

func TestRegistered(t *testing.T) {
	for _, typ := range pipeline.Types("transforms") {
		if typ == "redact" {
			return
		}
	}
	t.Error("redact is not registered")
}

// TestIPFieldsReflectFallback runs the default fields through protoreflect
// instead of the generated struct fields: the results are the same.
func TestIPFieldsReflectFallback(t *testing.T) {
	key := keyFile(t, testKey)
	fast := build(t, "ip: {mode: hmac, key_file: "+key+"}")
	slow := build(t, "ip: {mode: hmac, key_file: "+key+"}")
	for i := range slow.ipFields {
		if !fast.ipFields[i].fast {
			t.Errorf("%s has no Go field", fast.ipFields[i].path)
		}
		slow.ipFields[i].fast = false
	}
	mk := func() *flowpb.Flow {
		return &flowpb.Flow{
			IP:     &flowpb.IP{Source: "10.0.0.1", Destination: "fd00::2"},
			Tunnel: &flowpb.Tunnel{IP: &flowpb.IP{Source: "172.16.0.1"}},
			L7:     &flowpb.Layer7{Record: &flowpb.Layer7_Dns{Dns: &flowpb.DNS{Ips: []string{"10.0.0.9", "", "bogus"}}}},
		}
	}
	a, b := mk(), mk()
	fast.Redact(a)
	slow.Redact(b)
	if !proto.Equal(a, b) {
		t.Errorf("fast %v\nslow %v", a, b)
	}
	if ips := a.L7.GetDns().Ips; ips[1] != "" || ips[2] != Redacted {
		t.Errorf("dns ips %q", ips)
	}
}

func TestIPAllocs(t *testing.T) {
	r := build(t, "ip: {mode: hmac, key_file: "+keyFile(t, testKey)+"}")
	f := &flowpb.Flow{IP: &flowpb.IP{Source: "10.0.0.1", Destination: "10.0.0.2"}}
	in := []string{"10.0.0.1", "10.0.0.2"}
	r.Redact(f) // warms the cache
	allocs := testing.AllocsPerRun(100, func() {
		f.IP.Source, f.IP.Destination = in[0], in[1]
		r.Redact(f)
	})
	if allocs != 0 {
		t.Errorf("redacting cached addresses allocates %.1f times per flow", allocs)
	}
}

// TestConfigErrorsTogether: the rule errors come in one report, each at its
// position, and decoding errors without follow-up errors.
func TestConfigErrorsTogether(t *testing.T) {
	_, err := pipeline.Make(nil, mustYAML(t, "ip: {mode: truncate, ipv4_prefix: 40}\nremove: [source.pod_name]\nhttp: {headers: {allow: [a], deny: [b]}}"), FromOptions)
	if err == nil {
		t.Fatal("no error")
	}
	got := err.Error()
	for _, want := range []string{"1:35: ipv4_prefix 40", "3:17: set http.headers.allow"} {
		if !strings.Contains(got, want) {
			t.Errorf("errors %q lack %q", got, want)
		}
	}
	_, err = pipeline.Make(nil, mustYAML(t, "ip: {mode: truncate}\nremove: [source.podname]"), FromOptions)
	if err == nil || !strings.Contains(err.Error(), `2:10: field path "source.podname"`) {
		t.Errorf("bad field path: %v", err)
	}
	_, err = pipeline.Make(nil, mustYAML(t, "ip: {mode: [hmac]}"), FromOptions)
	if err == nil || strings.Contains(err.Error(), "needs mode") || !strings.Contains(err.Error(), "1:12: ") {
		t.Errorf("wrong-typed mode: %v", err)
	}
}

func TestEmptyKeys(t *testing.T) {
	r := build(t, "http:\n")
	f := httpFlow("http://u:p@h/", "a", "b")
	r.Redact(f)
	if f.L7.GetHttp().Url != "http://u:HUBBLE_REDACTED@h/" || f.L7.GetHttp().Headers[0].Value != Redacted {
		t.Errorf("http: alone did not enable the defaults: %v", f)
	}
	if _, err := pipeline.Make(nil, mustYAML(t, "ip:\n"), FromOptions); err == nil || !strings.Contains(err.Error(), "1:4: ip needs mode") {
		t.Errorf("ip: alone: %v", err)
	}
}

// TestIPNoAddressLeft: after redaction, no original address appears
// anywhere in a flow's JSON, in any form it was written in, and the text
// forms carry the same pseudonyms as the address fields.
func TestIPNoAddressLeft(t *testing.T) {
	r := build(t, "ip: {mode: hmac, key_file: "+keyFile(t, testKey)+"}\nhttp: {headers: {allow: [x-forwarded-for, forwarded, x-real-ip]}}")
	const nibbles = "7.1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.2.0.0.0.0.0.d.f"
	f := &flowpb.Flow{
		IP:       &flowpb.IP{Source: "10.0.3.17", Destination: "10.0.9.4", IpVersion: flowpb.IPVersion_IPv4},
		Tunnel:   &flowpb.Tunnel{IP: &flowpb.IP{Source: "192.168.50.2", Destination: "192.168.50.3"}},
		Ethernet: &flowpb.Ethernet{Source: "0a:58:0a:00:03:11", Destination: "0A:58:0A:00:09:04"},
		NodeName: "ip-192-168-50-2.ec2.internal",
		Source: &flowpb.Endpoint{PodName: "client-10-0-3-17", Labels: []string{"k8s:app=client"},
			Workloads: []*flowpb.Workload{{Name: "client-10.0.3.17", Kind: "Pod"}}},
		Destination:      &flowpb.Endpoint{PodName: "web-0", Labels: []string{"k8s:app=web"}},
		SourceNames:      []string{"ip-10-0-3-17.example.internal"},
		DestinationNames: []string{"10.0.9.4.nip.io"},
		L7: &flowpb.Layer7{Record: &flowpb.Layer7_Http{Http: &flowpb.HTTP{
			Method: "GET", Url: "http://10.0.9.4:8080/api?peer=10.0.3.17",
			Headers: []*flowpb.HTTPHeader{
				{Key: "X-Forwarded-For", Value: "203.0.113.9, 10.0.3.17"},
				{Key: "Forwarded", Value: `for="[fd00:0:2::17]:443";by=10.0.9.4`},
				{Key: "X-Real-IP", Value: "fd00:0:2::17"},
			}}}},
		Summary: "HTTP/1.1 GET http://10.0.9.4:8080/api?peer=10.0.3.17 from 10.0.3.17",
	}
	dns := &flowpb.Flow{
		IP: &flowpb.IP{Source: "10.0.3.17", Destination: "10.96.0.10"},
		L7: &flowpb.Layer7{Record: &flowpb.Layer7_Dns{Dns: &flowpb.DNS{
			Query: "17.3.0.10.in-addr.arpa.", Cnames: []string{nibbles + ".ip6.arpa."}, Qtypes: []string{"PTR"}}}},
		Summary: "DNS Query 17.3.0.10.in-addr.arpa. PTR",
	}
	forms := map[string][]string{
		"10.0.3.17":    {"10.0.3.17", "10-0-3-17", "17.3.0.10", "0a:00:03:11"},
		"10.0.9.4":     {"10.0.9.4", "10-0-9-4", "4.9.0.10", "0a:00:09:04", "0A:00:09:04"},
		"192.168.50.2": {"192.168.50.2", "192-168-50-2"},
		"203.0.113.9":  {"203.0.113.9"},
		"fd00:0:2::17": {"fd00:0:2::17", nibbles},
	}
	for _, fl := range []*flowpb.Flow{f, dns} {
		r.Redact(fl)
		js, err := protojson.Marshal(fl)
		if err != nil {
			t.Fatal(err)
		}
		for addr, fs := range forms {
			for _, form := range fs {
				if strings.Contains(strings.ToLower(string(js)), strings.ToLower(form)) {
					t.Errorf("%s is still there as %q:\n%s", addr, form, js)
				}
			}
		}
	}
	// The text forms carry the address fields' pseudonyms.
	p := r.ip.Map("10.0.3.17")
	dashed := strings.ReplaceAll(p, ".", "-")
	if f.Source.PodName != "client-"+dashed || f.SourceNames[0] != "ip-"+dashed+".example.internal" || f.Source.Workloads[0].Name != "client-"+p {
		t.Errorf("names %q %q %q do not carry %s", f.Source.PodName, f.SourceNames[0], f.Source.Workloads[0].Name, p)
	}
	a := netip.MustParseAddr(p).As4()
	if want := fmt.Sprintf("0a:58:%02x:%02x:%02x:%02x", a[0], a[1], a[2], a[3]); f.Ethernet.Source != want {
		t.Errorf("MAC %s, want %s", f.Ethernet.Source, want)
	}
	if want := fmt.Sprintf("%d.%d.%d.%d.in-addr.arpa.", a[3], a[2], a[1], a[0]); dns.GetL7().GetDns().GetQuery() != want {
		t.Errorf("PTR query %s, want %s", dns.GetL7().GetDns().GetQuery(), want)
	}
	if !strings.HasSuffix(f.Summary, "from "+p) {
		t.Errorf("Summary %q", f.Summary)
	}
}
