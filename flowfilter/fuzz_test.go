package flowfilter

import (
	"net/url"
	"regexp"
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/protojson"
	"gopkg.in/yaml.v3"

	flowpb "github.com/flowbus/flowbus/flow"
)

// FuzzRequestURIPath checks the allocation-free path extraction against
// net/url.ParseRequestURI on arbitrary URLs.
func FuzzRequestURIPath(f *testing.F) {
	for _, s := range []string{"/", "/a/b?c=d", "http://h/p%20q?x", "https://h:8443/p", "http://h", "http://h?q",
		"HTTP://h/x", "//h/x", "*", "a:b", "/%zz", "/%4", "http://[::1]/x", "http://u@h/x", "http:///x", "/a#b", "/\x7f",
		"http://h:x/p", "x1+.-://h/p", "http://h/p?\x01", "/a%2Fb", "http://h%41/p", "http:/x", "1http://h/p"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		got, _, ok := requestURIPath(nil, raw)
		u, err := url.ParseRequestURI(raw)
		if (err == nil) != ok {
			t.Fatalf("%q: ok=%v, net/url err=%v", raw, ok, err)
		}
		if ok && string(got) != u.Path {
			t.Fatalf("%q: path %q, net/url %q", raw, got, u.Path)
		}
	})
}

// FuzzParseFilters feeds arbitrary YAML to ParseFilters and New, and the
// result to Match: invalid input must be an error, never a panic.
func FuzzParseFilters(f *testing.F) {
	for _, s := range []string{
		`- {source_pod: ["kube-system/"], verdict: [DROPPED]}`,
		`- {source_ip: ["10.0.0.0/8", "1.1.1.1"], destination_port: [53, "443"]}`,
		`- {source_label: ["k8s:app in (a, b)", "!reserved:world"], node_labels: ["zone=a"]}`,
		`- {source_fqdn: ["*.example.com."], node_name: ["prod/k8s*"]}`,
		`- {http_status_code: ["4+", "503"], http_method: [get], http_path: ["^/api"], http_url: ["q="], http_header: [{key: a, value: b}]}`,
		`- {event_type: [{type: 129, match_sub_type: true, sub_type: 1}], protocol: [HTTP, dns]}`,
		`- {tcp_flags: [{SYN: true, ACK: true}], reply: [false], ip_version: [IPv6], encrypted: [true]}`,
		`- {source_workload: [{name: web, kind: Deployment}], interface: [{index: 1, name: eth0}]}`,
		`- {uuid: [x], trace_id: [t], ip_trace_id: [1], source_cluster_name: [c], source_identity: [2]}`,
		`- {experimental: {cel_expression: ["_flow.verdict == Verdict.DROPPED || (has(_flow.l4.TCP) && _flow.l4.TCP.destination_port == 443u)"]}}`,
		`- '{"source_pod":["a/"]}'`,
		`- {source_label: ["k8s:app notin (,a,,)", "x>5", "a==b,c!=d"]}`,
		`- {dns_query: ["(unclosed"]}`,
		`{not: a list}`,
	} {
		f.Add(s)
	}
	flows := []*flowpb.Flow{{}}
	for _, js := range []string{
		`{"verdict":"DROPPED","IP":{"source":"10.1.2.3","destination":"1.1.1.1","ipVersion":"IPv4"},"l4":{"TCP":{"destination_port":443,"flags":{"SYN":true}}},"source":{"namespace":"kube-system","pod_name":"coredns","labels":["k8s:app=a","reserved:world"]},"node_name":"prod/k8s1","node_labels":["zone=a"]}`,
		`{"l7":{"http":{"code":404,"method":"GET","url":"http://h/api?q=1","headers":[{"key":"a","value":"b"}]}},"event_type":{"type":129,"sub_type":1},"source_names":["a.example.com"]}`,
	} {
		fl := new(flowpb.Flow)
		if err := protojson.Unmarshal([]byte(js), fl); err != nil {
			f.Fatal(err)
		}
		flows = append(flows, fl)
	}
	f.Fuzz(func(t *testing.T, src string) {
		var doc yaml.Node
		if yaml.Unmarshal([]byte(src), &doc) != nil {
			return
		}
		ffs, err := ParseFilters(&doc)
		if err != nil {
			return
		}
		flt, err := New(ffs, ffs)
		if err != nil {
			if _, ok := err.(*Error); !ok {
				t.Fatalf("New error %T is not *Error: %v", err, err)
			}
			return
		}
		for _, fl := range flows {
			// Allowing and denying the same filters passes nothing, or
			// everything when the list is empty.
			if flt.Match(fl) != (len(ffs) == 0) {
				t.Fatalf("allow=deny=%v passes %v", ffs, fl)
			}
		}
	})
}

// FuzzLabelSelector checks the selector parser never panics and that a
// parsed selector can be evaluated.
func FuzzLabelSelector(f *testing.F) {
	for _, s := range []string{"k8s:app=a", "app in (a,b),!x", "x notin ()", "a>1", "a==b", "!", "(", "a,", "k8s:a.b/c!=d", "cidr:10.0.0.0/8", "a\x00b", "\xff"} {
		f.Add(s)
	}
	labels := []string{"k8s:app=a", "reserved:world", "x=1", "cidr:10.0.0.0/8", "$host", "k8s:a.b/c=d"}
	f.Fuzz(func(t *testing.T, s string) {
		sel, err := parseLabelSelector(s)
		if err != nil {
			return
		}
		sel.matches(labels)
		sel.matches(nil)
	})
}

// hubbleNodeMatch is Hubble's node name rule with its regular expression.
func hubbleNodeMatch(t *testing.T, pattern, name string) (bool, bool) {
	var sb strings.Builder
	sb.WriteString(`\A(?:`)
	if err := appendNodeNamePattern(&sb, pattern); err != nil {
		return false, false
	}
	sb.WriteString(`)\z`)
	re, err := regexp.Compile(sb.String())
	if err != nil {
		t.Fatalf("%q: %v", sb.String(), err)
	}
	if name == "" {
		return false, true
	}
	if !strings.Contains(name, "/") {
		name = "default/" + name
	}
	return re.MatchString(name), true
}

// FuzzPatterns compares the FQDN and node name matchers with the regular
// expressions Hubble builds from the same patterns.
func FuzzPatterns(f *testing.F) {
	for _, s := range [][2]string{
		{"*.example.com", "a.b.example.com"}, {"api.example.com.", "api.example.com"}, {"*", ""},
		{"a*b*c", "axxbyyc"}, {"_srv.*", "_srv.x"}, {"prod/k8s*", "prod/k8s1"}, {"/", "a/b"},
		{"k8s1", "k8s1"}, {"*a*a*a*a*a*a*", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaab"}, {" X.COM ", "x.com"},
		{"c/", "c/a..b"}, {"/n", "c/n/x"}, {"a.*.b", "a..b"},
	} {
		f.Add(s[0], s[1])
	}
	f.Fuzz(func(t *testing.T, pattern, name string) {
		fp, err := newFQDNPattern(pattern)
		var sb strings.Builder
		sb.WriteString(`\A(?:`)
		herr := appendFQDNPattern(&sb, pattern)
		if (err == nil) != (herr == nil) {
			t.Fatalf("%q: error %v, Hubble's %v", pattern, err, herr)
		}
		if err == nil {
			sb.WriteString(`)\z`)
			re := regexp.MustCompile(sb.String())
			if got, want := fp.match(name), re.MatchString(name); got != want {
				t.Fatalf("fqdn %q on %q: %v, Hubble's %v", pattern, name, got, want)
			}
		}
		pred, err := nodeNameFilter([]string{pattern})
		want, ok := hubbleNodeMatch(t, pattern, name)
		if (err == nil) != ok {
			t.Fatalf("node %q: error %v, Hubble ok %v", pattern, err, ok)
		}
		if ok {
			if got := pred(&flowpb.Flow{NodeName: name}); got != want {
				t.Fatalf("node %q on %q: %v, Hubble's %v", pattern, name, got, want)
			}
		}
	})
}

// FuzzLabelLookup checks the source-prefix shortcut of label lookups
// against the general parse of every label.
func FuzzLabelLookup(f *testing.F) {
	f.Add("k8s.app", "k8s:app=a")
	f.Add("k8s.app", "k8s:app")
	f.Add("container.app", "$app=x")
	f.Add("k8s.a", "k8s::a=b")
	f.Add("k8s.a", "k8s:a==b")
	f.Fuzz(func(t *testing.T, key, label string) {
		fast := newSelectKey(key)
		slow := fast
		slow.prefix = ""
		labels := []string{"x:y=z", label, "k8s:app=b", label + "=2"}
		v1, ok1 := fast.lookup(labels)
		v2, ok2 := slow.lookup(labels)
		if v1 != v2 || ok1 != ok2 {
			t.Fatalf("key %q label %q: fast (%q,%v), general (%q,%v)", key, label, v1, ok1, v2, ok2)
		}
	})
}
