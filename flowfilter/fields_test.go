package flowfilter

import (
	"strconv"
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"gopkg.in/yaml.v3"

	flowpb "github.com/flowbus/flowbus/flow"
	"github.com/flowbus/flowbus/pipeline"
)

// matchCase is one filter against one flow. filter is a FlowFilter in
// Hubble's JSON (proto field names), flow a Flow in Hubble's JSON.
type matchCase struct {
	name   string
	filter string
	flow   string
	want   bool
}

func mustFlow(t testing.TB, js string) *flowpb.Flow {
	t.Helper()
	f := new(flowpb.Flow)
	if err := protojson.Unmarshal([]byte(js), f); err != nil {
		t.Fatalf("flow %s: %v", js, err)
	}
	return f
}

// parseOne parses a FlowFilter twice, with protojson and through
// ParseFilters (the JSON object is a YAML flow mapping), and checks both
// agree.
func parseOne(t testing.TB, js string) *flowpb.FlowFilter {
	t.Helper()
	want := new(flowpb.FlowFilter)
	if err := protojson.Unmarshal([]byte(js), want); err != nil {
		t.Fatalf("filter %s: %v", js, err)
	}
	var doc yaml.Node
	if err := yaml.Unmarshal([]byte("- "+js), &doc); err != nil {
		t.Fatalf("filter %s as YAML: %v", js, err)
	}
	got, err := ParseFilters(&doc)
	if err != nil {
		t.Fatalf("ParseFilters(%s): %v", js, err)
	}
	if len(got) != 1 || !proto.Equal(got[0], want) {
		t.Fatalf("ParseFilters(%s) = %v, protojson gives %v", js, got, want)
	}
	return want
}

func runMatchCases(t *testing.T, cases []matchCase) {
	t.Helper()
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ff := parseOne(t, c.filter)
			fl := mustFlow(t, c.flow)
			f, err := New([]*flowpb.FlowFilter{ff}, nil)
			if err != nil {
				t.Fatalf("New(%s): %v", c.filter, err)
			}
			if got := f.Match(fl); got != c.want {
				t.Errorf("allow %s on %s = %v, want %v", c.filter, c.flow, got, c.want)
			}
			// The same filter as a deny list keeps exactly the others.
			d, err := New(nil, []*flowpb.FlowFilter{ff})
			if err != nil {
				t.Fatal(err)
			}
			if got := d.Match(fl); got == c.want {
				t.Errorf("deny %s on %s = %v, want %v", c.filter, c.flow, got, !c.want)
			}
		})
	}
}

func TestCombination(t *testing.T) {
	drop := mustFlow(t, `{"verdict":"DROPPED","IP":{"source":"10.0.0.1"}}`)
	fwd := mustFlow(t, `{"verdict":"FORWARDED","IP":{"source":"10.0.0.2"}}`)
	ff := func(js string) *flowpb.FlowFilter { return parseOne(t, js) }
	tests := []struct {
		name        string
		allow, deny []*flowpb.FlowFilter
		drop, fwd   bool
	}{
		{"no filters pass all", nil, nil, true, true},
		{"empty filter matches all", []*flowpb.FlowFilter{ff(`{}`)}, nil, true, true},
		{"empty deny filter excludes all", nil, []*flowpb.FlowFilter{ff(`{}`)}, false, false},
		{"allow one", []*flowpb.FlowFilter{ff(`{"verdict":["DROPPED"]}`)}, nil, true, false},
		{"allow OR", []*flowpb.FlowFilter{ff(`{"verdict":["DROPPED"]}`), ff(`{"source_ip":["10.0.0.2"]}`)}, nil, true, true},
		{"fields AND", []*flowpb.FlowFilter{ff(`{"verdict":["DROPPED"],"source_ip":["10.0.0.2"]}`)}, nil, false, false},
		{"values OR", []*flowpb.FlowFilter{ff(`{"verdict":["DROPPED","FORWARDED"]}`)}, nil, true, true},
		{"deny wins", []*flowpb.FlowFilter{ff(`{}`)}, []*flowpb.FlowFilter{ff(`{"verdict":["DROPPED"]}`)}, false, true},
		{"deny any", nil, []*flowpb.FlowFilter{ff(`{"verdict":["DROPPED"]}`), ff(`{"source_ip":["10.0.0.2"]}`)}, false, false},
		{"empty list field is unset", []*flowpb.FlowFilter{ff(`{"verdict":[]}`)}, nil, true, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, err := New(tt.allow, tt.deny)
			if err != nil {
				t.Fatal(err)
			}
			if got := f.Match(drop); got != tt.drop {
				t.Errorf("dropped flow: got %v want %v", got, tt.drop)
			}
			if got := f.Match(fwd); got != tt.fwd {
				t.Errorf("forwarded flow: got %v want %v", got, tt.fwd)
			}
		})
	}
}

func TestUUID(t *testing.T) {
	runMatchCases(t, []matchCase{
		{"equal", `{"uuid":["a-b"]}`, `{"uuid":"a-b"}`, true},
		{"one of", `{"uuid":["x","a-b"]}`, `{"uuid":"a-b"}`, true},
		{"different", `{"uuid":["a-b"]}`, `{"uuid":"a-c"}`, false},
		{"case sensitive", `{"uuid":["A-B"]}`, `{"uuid":"a-b"}`, false},
		{"no uuid", `{"uuid":["a-b"]}`, `{}`, false},
		{"empty string matches missing uuid", `{"uuid":[""]}`, `{}`, true},
	})
}

func TestIP(t *testing.T) {
	runMatchCases(t, []matchCase{
		{"exact", `{"source_ip":["1.1.1.1"]}`, `{"IP":{"source":"1.1.1.1"}}`, true},
		{"exact other", `{"source_ip":["1.1.1.1"]}`, `{"IP":{"source":"1.1.1.2"}}`, false},
		{"destination", `{"destination_ip":["1.1.1.1"]}`, `{"IP":{"source":"1.1.1.1","destination":"2.2.2.2"}}`, false},
		{"destination exact", `{"destination_ip":["2.2.2.2"]}`, `{"IP":{"source":"1.1.1.1","destination":"2.2.2.2"}}`, true},
		{"cidr", `{"source_ip":["10.0.0.0/8"]}`, `{"IP":{"source":"10.1.2.3"}}`, true},
		{"cidr outside", `{"source_ip":["10.0.0.0/8"]}`, `{"IP":{"source":"11.1.2.3"}}`, false},
		{"cidr host bits set", `{"source_ip":["10.1.2.3/8"]}`, `{"IP":{"source":"10.200.0.1"}}`, true},
		{"cidr v6", `{"destination_ip":["fd00::/8"]}`, `{"IP":{"destination":"fd00::1"}}`, true},
		{"cidr v4 does not hold mapped v6", `{"source_ip":["10.0.0.0/8"]}`, `{"IP":{"source":"::ffff:10.0.0.1"}}`, false},
		{"exact is string equality (no normalisation)", `{"source_ip":["::ffff:1.2.3.4"]}`, `{"IP":{"source":"1.2.3.4"}}`, false},
		{"exact v6 written differently", `{"source_ip":["fd00:0::1"]}`, `{"IP":{"source":"fd00::1"}}`, false},
		{"no IP", `{"source_ip":["1.1.1.1"]}`, `{}`, false},
		{"no IP cidr", `{"source_ip":["0.0.0.0/0"]}`, `{}`, false},
		{"unparsable flow ip", `{"source_ip":["0.0.0.0/0"]}`, `{"IP":{"source":"nope"}}`, false},
		{"mixed list", `{"source_ip":["9.9.9.9","192.168.0.0/16"]}`, `{"IP":{"source":"192.168.3.4"}}`, true},
		{"xlated", `{"source_ip_xlated":["5.5.5.5"]}`, `{"IP":{"source":"1.1.1.1","source_xlated":"5.5.5.5"}}`, true},
		{"xlated is not source", `{"source_ip_xlated":["1.1.1.1"]}`, `{"IP":{"source":"1.1.1.1"}}`, false},
		{"xlated cidr", `{"source_ip_xlated":["5.5.0.0/16"]}`, `{"IP":{"source_xlated":"5.5.5.5"}}`, true},
	})
}

func TestPodAndService(t *testing.T) {
	pod := func(ns, name string) string {
		return `{"source":{"namespace":"` + ns + `","pod_name":"` + name + `"},"destination":{"namespace":"other","pod_name":"zzz"}}`
	}
	svc := func(ns, name string) string {
		return `{"source_service":{"namespace":"` + ns + `","name":"` + name + `"}}`
	}
	runMatchCases(t, []matchCase{
		{"ns/prefix", `{"source_pod":["kube-system/coredns"]}`, pod("kube-system", "coredns-abc"), true},
		{"ns/prefix wrong ns", `{"source_pod":["kube-system/coredns"]}`, pod("default", "coredns-abc"), false},
		{"ns/ any pod", `{"source_pod":["kube-system/"]}`, pod("kube-system", "anything"), true},
		{"ns/ other ns", `{"source_pod":["kube-system/"]}`, pod("kube-public", "anything"), false},
		{"bare name means default namespace", `{"source_pod":["web"]}`, pod("default", "web-1"), true},
		{"bare name not in other namespace", `{"source_pod":["web"]}`, pod("prod", "web-1"), false},
		{"prefix not suffix", `{"source_pod":["ns/web"]}`, pod("ns", "my-web"), false},
		{"namespace is exact", `{"source_pod":["kube/"]}`, pod("kube-system", "x"), false},
		{"/prefix means any namespace", `{"source_pod":["/web"]}`, pod("prod", "web-1"), true},
		{"/prefix with empty namespace", `{"source_pod":["/web"]}`, pod("", "web-1"), true},
		{"/prefix other name", `{"source_pod":["/web"]}`, pod("prod", "api"), false},
		{"bare name with empty namespace", `{"source_pod":["web"]}`, pod("", "web"), false},
		{"service any namespace", `{"destination_service":["/kube-"]}`, `{"destination_service":{"namespace":"monitoring","name":"kube-prometheus"}}`, true},
		{"extra slash ignored", `{"source_pod":["ns/web/ignored"]}`, pod("ns", "web-1"), true},
		{"no endpoint", `{"source_pod":["default/"]}`, `{}`, false},
		{"empty ns and pod never match", `{"source_pod":["/x"]}`, pod("", ""), false},
		{"namespace without pod", `{"source_pod":["ns/"]}`, pod("ns", ""), true},
		{"destination", `{"destination_pod":["other/z"]}`, pod("ns", "a"), true},
		{"destination miss", `{"destination_pod":["ns/a"]}`, pod("ns", "a"), false},
		{"one of several", `{"source_pod":["a/b","ns/x"]}`, pod("ns", "xy"), true},
		{"case sensitive", `{"source_pod":["NS/x"]}`, pod("ns", "x"), false},
		{"service", `{"source_service":["kube-system/kube-dns"]}`, svc("kube-system", "kube-dns"), true},
		{"service prefix", `{"source_service":["kube-system/kube"]}`, svc("kube-system", "kube-dns"), true},
		{"service bare means default", `{"source_service":["api"]}`, svc("default", "api"), true},
		{"service bare other ns", `{"source_service":["api"]}`, svc("prod", "api"), false},
		{"service unset", `{"source_service":["default/"]}`, `{}`, false},
		{"destination service", `{"destination_service":["a/b"]}`, `{"destination_service":{"namespace":"a","name":"bc"}}`, true},
		{"destination service is not source", `{"destination_service":["a/b"]}`, `{"source_service":{"namespace":"a","name":"bc"}}`, false},
	})
}

func TestFQDN(t *testing.T) {
	names := func(src ...string) string {
		return `{"source_names":["` + strings.Join(src, `","`) + `"],"destination_names":["dst.example.com"]}`
	}
	runMatchCases(t, []matchCase{
		{"exact", `{"source_fqdn":["api.example.com"]}`, names("api.example.com"), true},
		{"anchored", `{"source_fqdn":["example.com"]}`, names("api.example.com"), false},
		{"anchored end", `{"source_fqdn":["api.example"]}`, names("api.example.com"), false},
		{"star", `{"source_fqdn":["*.example.com"]}`, names("api.example.com"), true},
		{"star crosses dots", `{"source_fqdn":["*.example.com"]}`, names("a.b.example.com"), true},
		{"star matches empty", `{"source_fqdn":["*example.com"]}`, names("example.com"), true},
		{"star needs the dot", `{"source_fqdn":["*.example.com"]}`, names("example.com"), false},
		{"dot is literal", `{"source_fqdn":["api.example.com"]}`, names("apixexample.com"), false},
		{"pattern lower-cased", `{"source_fqdn":["API.Example.COM"]}`, names("api.example.com"), true},
		{"names not lower-cased", `{"source_fqdn":["api.example.com"]}`, names("API.example.com"), false},
		{"one trailing dot trimmed", `{"source_fqdn":["api.example.com."]}`, names("api.example.com"), true},
		{"trailing dot in name does not match", `{"source_fqdn":["api.example.com"]}`, names("api.example.com."), false},
		{"spaces trimmed", `{"source_fqdn":["  api.example.com  "]}`, names("api.example.com"), true},
		{"any name", `{"source_fqdn":["b.com"]}`, names("a.com", "b.com"), true},
		{"underscore", `{"source_fqdn":["_srv.example.com"]}`, names("_srv.example.com"), true},
		{"star does not match underscore", `{"source_fqdn":["*.com"]}`, names("a_b.com"), false},
		{"no names", `{"source_fqdn":["*"]}`, `{}`, false},
		{"destination", `{"destination_fqdn":["dst.*"]}`, names("x"), true},
		{"destination not source", `{"destination_fqdn":["x"]}`, names("x"), false},
		{"alternatives", `{"source_fqdn":["a.com","*.org"]}`, names("x.org"), true},
	})
}

func TestLabels(t *testing.T) {
	src := func(labels ...string) string {
		return `{"source":{"labels":["` + strings.Join(labels, `","`) + `"]}}`
	}
	runMatchCases(t, []matchCase{
		{"k8s source equal", `{"source_label":["k8s:app=foo"]}`, src("k8s:app=foo"), true},
		{"k8s source other value", `{"source_label":["k8s:app=foo"]}`, src("k8s:app=bar"), false},
		{"double equals", `{"source_label":["k8s:app==foo"]}`, src("k8s:app=foo"), true},
		{"bare key is any source", `{"source_label":["app=foo"]}`, src("container:app=foo"), true},
		{"any source explicit", `{"source_label":["any:app=foo"]}`, src("k8s:app=foo"), true},
		{"source must be equal", `{"source_label":["k8s:app=foo"]}`, src("container:app=foo"), false},
		{"exists", `{"source_label":["k8s:app"]}`, src("k8s:app=foo"), true},
		{"exists missing", `{"source_label":["k8s:app"]}`, src("k8s:name=foo"), false},
		{"reserved world", `{"source_label":["reserved:world"]}`, src("reserved:world"), true},
		{"reserved host not world", `{"source_label":["reserved:world"]}`, src("reserved:host"), false},
		{"bare world matches reserved", `{"source_label":["world"]}`, src("reserved:world"), true},
		{"not exists", `{"source_label":["!k8s:app"]}`, src("k8s:name=x"), true},
		{"not exists present", `{"source_label":["!k8s:app"]}`, src("k8s:app=x"), false},
		{"not exists with no labels", `{"source_label":["!app"]}`, `{}`, true},
		{"in", `{"source_label":["k8s:app in (a, b)"]}`, src("k8s:app=b"), true},
		{"in miss", `{"source_label":["k8s:app in (a, b)"]}`, src("k8s:app=c"), false},
		{"in missing key", `{"source_label":["k8s:app in (a, b)"]}`, src("k8s:x=a"), false},
		{"notin", `{"source_label":["k8s:app notin (a, b)"]}`, src("k8s:app=c"), true},
		{"notin value", `{"source_label":["k8s:app notin (a, b)"]}`, src("k8s:app=a"), false},
		{"notin missing key matches", `{"source_label":["k8s:app notin (a)"]}`, src("k8s:x=a"), true},
		{"not equal", `{"source_label":["k8s:app!=a"]}`, src("k8s:app=b"), true},
		{"not equal same", `{"source_label":["k8s:app!=a"]}`, src("k8s:app=a"), false},
		{"not equal missing key", `{"source_label":["k8s:app!=a"]}`, src("k8s:b=a"), true},
		{"and", `{"source_label":["k8s:app=a,k8s:tier=web"]}`, src("k8s:app=a", "k8s:tier=web"), true},
		{"and missing", `{"source_label":["k8s:app=a,k8s:tier=web"]}`, src("k8s:app=a", "k8s:tier=db"), false},
		{"and with in", `{"source_label":["k8s:app in (a,b), !k8s:x"]}`, src("k8s:app=a"), true},
		{"entries OR", `{"source_label":["k8s:app=z","k8s:app=a"]}`, src("k8s:app=a"), true},
		{"greater than", `{"source_label":["k8s:n>5"]}`, src("k8s:n=6"), true},
		{"greater than equal", `{"source_label":["k8s:n>5"]}`, src("k8s:n=5"), false},
		{"less than", `{"source_label":["k8s:n<5"]}`, src("k8s:n=-3"), true},
		{"greater non-integer value", `{"source_label":["k8s:n>5"]}`, src("k8s:n=x"), false},
		{"namespace label with dots", `{"source_label":["k8s:io.kubernetes.pod.namespace=kube-system"]}`, src("k8s:io.kubernetes.pod.namespace=kube-system"), true},
		{"prefixed key", `{"source_label":["k8s:app.kubernetes.io/name=web"]}`, src("k8s:app.kubernetes.io/name=web"), true},
		{"label without value", `{"source_label":["k8s:app="]}`, src("k8s:app"), true},
		{"empty value in set", `{"source_label":["k8s:app in (a,)"]}`, src("k8s:app="), true},
		{"first label with the key decides", `{"source_label":["app=b"]}`, src("k8s:app=a", "container:app=b"), false},
		{"first label with the key decides (any)", `{"source_label":["app=a"]}`, src("k8s:app=a", "container:app=b"), true},
		{"first of exact source", `{"source_label":["container:app=b"]}`, src("k8s:app=a", "container:app=b"), true},
		{"unspec label selected by any", `{"source_label":["app=a"]}`, src("app=a"), true},
		{"unspec label not selected by k8s", `{"source_label":["k8s:app=a"]}`, src("app=a"), false},
		{"dollar reserved label", `{"source_label":["reserved:host"]}`, src("$host"), true},
		{"cidr containment", `{"source_label":["cidr:10.0.0.0/8"]}`, src("cidr:10.1.0.0/16"), true},
		{"cidr narrower selector", `{"source_label":["cidr:10.1.0.0/16"]}`, src("cidr:10.0.0.0/8"), false},
		{"cidr outside", `{"source_label":["cidr:10.0.0.0/8"]}`, src("cidr:11.0.0.0/16"), false},
		{"cidr v6 dashes", `{"source_label":["cidr:2001-db8--0/32"]}`, src("cidr:2001-db8--1/128"), true},
		{"empty selector matches everything", `{"source_label":[""]}`, `{}`, true},
		{"destination", `{"destination_label":["k8s:app=a"]}`, `{"destination":{"labels":["k8s:app=a"]}}`, true},
		{"destination not source", `{"destination_label":["k8s:app=a"]}`, src("k8s:app=a"), false},
		{"node labels unprefixed", `{"node_labels":["kubernetes.io/hostname=n1"]}`, `{"node_labels":["kubernetes.io/hostname=n1"]}`, true},
		{"node labels any", `{"node_labels":["any:zone=a"]}`, `{"node_labels":["zone=a"]}`, true},
		{"node labels k8s source does not match", `{"node_labels":["k8s:zone=a"]}`, `{"node_labels":["zone=a"]}`, false},
		{"node labels in", `{"node_labels":["zone in (a,b)"]}`, `{"node_labels":["zone=b"]}`, true},
	})
}

func TestWorkload(t *testing.T) {
	wl := `{"source":{"workloads":[{"name":"web","kind":"Deployment"},{"name":"job","kind":"CronJob"}]}}`
	runMatchCases(t, []matchCase{
		{"name and kind", `{"source_workload":[{"name":"web","kind":"Deployment"}]}`, wl, true},
		{"name only", `{"source_workload":[{"name":"job"}]}`, wl, true},
		{"kind only", `{"source_workload":[{"kind":"CronJob"}]}`, wl, true},
		{"mismatch across workloads", `{"source_workload":[{"name":"web","kind":"CronJob"}]}`, wl, false},
		{"empty entry matches any workload", `{"source_workload":[{}]}`, wl, true},
		{"empty entry needs a workload", `{"source_workload":[{}]}`, `{"source":{}}`, false},
		{"destination", `{"destination_workload":[{"name":"web"}]}`, wl, false},
		{"case sensitive", `{"source_workload":[{"kind":"deployment"}]}`, wl, false},
	})
}

func TestClusterName(t *testing.T) {
	runMatchCases(t, []matchCase{
		{"source", `{"source_cluster_name":["c1"]}`, `{"source":{"cluster_name":"c1"}}`, true},
		{"source other", `{"source_cluster_name":["c1"]}`, `{"source":{"cluster_name":"c2"}}`, false},
		{"unset", `{"source_cluster_name":["c1"]}`, `{}`, false},
		{"destination", `{"destination_cluster_name":["c1","c2"]}`, `{"destination":{"cluster_name":"c2"}}`, true},
	})
}

func TestEnumsAndScalars(t *testing.T) {
	runMatchCases(t, []matchCase{
		{"verdict", `{"verdict":["DROPPED"]}`, `{"verdict":"DROPPED"}`, true},
		{"verdict other", `{"verdict":["DROPPED"]}`, `{"verdict":"FORWARDED"}`, false},
		{"verdict by number", `{"verdict":[2]}`, `{"verdict":"DROPPED"}`, true},
		{"verdict unknown matches unset", `{"verdict":["VERDICT_UNKNOWN"]}`, `{}`, true},
		{"traffic direction", `{"traffic_direction":["INGRESS"]}`, `{"traffic_direction":"INGRESS"}`, true},
		{"traffic direction other", `{"traffic_direction":["INGRESS"]}`, `{"traffic_direction":"EGRESS"}`, false},
		{"drop reason", `{"drop_reason_desc":["POLICY_DENIED"]}`, `{"verdict":"DROPPED","drop_reason_desc":"POLICY_DENIED"}`, true},
		{"drop reason needs DROPPED", `{"drop_reason_desc":["POLICY_DENIED"]}`, `{"verdict":"AUDIT","drop_reason_desc":"POLICY_DENIED"}`, false},
		{"drop reason other", `{"drop_reason_desc":["POLICY_DENIED"]}`, `{"verdict":"DROPPED","drop_reason_desc":"CT_NO_MAP_FOUND"}`, false},
		{"ip version", `{"ip_version":["IPv6"]}`, `{"IP":{"ipVersion":"IPv6"}}`, true},
		{"ip version other", `{"ip_version":["IPv6"]}`, `{"IP":{"ipVersion":"IPv4"}}`, false},
		{"ip version not used without IP", `{"ip_version":["IP_NOT_USED"]}`, `{}`, true},
		{"source identity", `{"source_identity":[2,16777217]}`, `{"source":{"identity":16777217}}`, true},
		{"source identity other", `{"source_identity":[2]}`, `{"source":{"identity":3}}`, false},
		{"identity 0 needs an endpoint", `{"source_identity":[0]}`, `{}`, false},
		{"identity 0 with endpoint", `{"source_identity":[0]}`, `{"source":{}}`, true},
		{"destination identity", `{"destination_identity":[5]}`, `{"destination":{"identity":5}}`, true},
		{"trace id", `{"trace_id":["abc"]}`, `{"trace_context":{"parent":{"trace_id":"abc"}}}`, true},
		{"trace id other", `{"trace_id":["abc"]}`, `{"trace_context":{"parent":{"trace_id":"abd"}}}`, false},
		{"empty trace id matches none", `{"trace_id":[""]}`, `{}`, true},
		{"ip trace id", `{"ip_trace_id":["42"]}`, `{"ip_trace_id":{"trace_id":"42"}}`, true},
		{"ip trace id other", `{"ip_trace_id":[41]}`, `{"ip_trace_id":{"trace_id":"42"}}`, false},
		{"ip trace id 0 matches none", `{"ip_trace_id":[0]}`, `{}`, true},
		{"encrypted", `{"encrypted":[true]}`, `{"IP":{"encrypted":true}}`, true},
		{"encrypted false", `{"encrypted":[true]}`, `{"IP":{"source":"1.1.1.1"}}`, false},
		{"encrypted false without IP", `{"encrypted":[false]}`, `{}`, true},
	})
}

func TestInterface(t *testing.T) {
	fl := `{"interface":{"index":7,"name":"eth0"}}`
	runMatchCases(t, []matchCase{
		{"index and name", `{"interface":[{"index":7,"name":"eth0"}]}`, fl, true},
		{"name only", `{"interface":[{"name":"eth0"}]}`, fl, true},
		{"index only", `{"interface":[{"index":7}]}`, fl, true},
		{"wrong index", `{"interface":[{"index":8,"name":"eth0"}]}`, fl, false},
		{"wrong name", `{"interface":[{"name":"eth1"}]}`, fl, false},
		{"empty entry matches any interface", `{"interface":[{}]}`, fl, true},
		{"no interface", `{"interface":[{}]}`, `{}`, false},
		{"one of", `{"interface":[{"name":"eth1"},{"index":7}]}`, fl, true},
	})
}

func TestEventType(t *testing.T) {
	trace := `{"event_type":{"type":4,"sub_type":3}}`
	runMatchCases(t, []matchCase{
		{"type", `{"event_type":[{"type":4}]}`, trace, true},
		{"other type", `{"event_type":[{"type":1}]}`, trace, false},
		{"sub type ignored without match_sub_type", `{"event_type":[{"type":4,"sub_type":9}]}`, trace, true},
		{"sub type", `{"event_type":[{"type":4,"match_sub_type":true,"sub_type":3}]}`, trace, true},
		{"sub type other", `{"event_type":[{"type":4,"match_sub_type":true,"sub_type":2}]}`, trace, false},
		{"type 0 is a wildcard", `{"event_type":[{"type":0}]}`, trace, true},
		{"wildcard with sub type", `{"event_type":[{"match_sub_type":true,"sub_type":3}]}`, trace, true},
		{"sub type 0", `{"event_type":[{"type":4,"match_sub_type":true}]}`, `{"event_type":{"type":4}}`, true},
		{"no event type", `{"event_type":[{}]}`, `{}`, false},
		{"one of", `{"event_type":[{"type":1},{"type":4}]}`, trace, true},
	})
}

func TestHTTP(t *testing.T) {
	resp := func(code int, method, url string) string {
		return `{"l7":{"type":"RESPONSE","http":{"code":` + strconv.Itoa(code) + `,"method":"` + method + `","url":"` + url +
			`","headers":[{"key":"X-Env","value":"prod"},{"key":"accept","value":"*/*"}]}}}`
	}
	req := `{"l7":{"type":"REQUEST","http":{"method":"GET","url":"http://a/b"}}}`
	runMatchCases(t, []matchCase{
		{"status full", `{"http_status_code":["404"]}`, resp(404, "GET", "/"), true},
		{"status full other", `{"http_status_code":["404"]}`, resp(403, "GET", "/"), false},
		{"status 1-digit prefix", `{"http_status_code":["4+"]}`, resp(418, "GET", "/"), true},
		{"status 1-digit prefix other", `{"http_status_code":["4+"]}`, resp(500, "GET", "/"), false},
		{"status 2-digit prefix", `{"http_status_code":["40+"]}`, resp(409, "GET", "/"), true},
		{"status 2-digit prefix other", `{"http_status_code":["40+"]}`, resp(410, "GET", "/"), false},
		{"request has no status", `{"http_status_code":["2+"]}`, req, false},
		{"status needs http", `{"http_status_code":["2+"]}`, `{"l7":{"dns":{}}}`, false},
		{"status list", `{"http_status_code":["200","5+"]}`, resp(503, "GET", "/"), true},
		{"status padded", `{"http_status_code":["1+"]}`, resp(99, "GET", "/"), false},
		{"status with l7 event type", `{"event_type":[{"type":129}],"http_status_code":["200"]}`, `{"event_type":{"type":129},"l7":{"http":{"code":200}}}`, true},
		{"method", `{"http_method":["GET"]}`, resp(200, "GET", "/"), true},
		{"method case-insensitive", `{"http_method":["get"]}`, resp(200, "GET", "/"), true},
		{"method other", `{"http_method":["POST"]}`, resp(200, "GET", "/"), false},
		{"method request", `{"http_method":["GET"]}`, req, true},
		{"method missing", `{"http_method":[""]}`, resp(200, "", "/"), false},
		{"path", `{"http_path":["^/api/v1"]}`, resp(200, "GET", "http://h/api/v1/x?q=1"), true},
		{"path unanchored", `{"http_path":["v1"]}`, resp(200, "GET", "http://h/api/v1/x"), true},
		{"path excludes query", `{"http_path":["q=1"]}`, resp(200, "GET", "http://h/api?q=1"), false},
		{"path excludes host", `{"http_path":["h"]}`, resp(200, "GET", "http://h/api"), false},
		{"path is unescaped", `{"http_path":["^/a b$"]}`, resp(200, "GET", "http://h/a%20b"), true},
		{"path of a relative path", `{"http_path":["^/x$"]}`, resp(200, "GET", "/x"), true},
		{"path of unparsable url", `{"http_path":[".*"]}`, resp(200, "GET", "not a url"), false},
		{"path of bad escape", `{"http_path":[".*"]}`, resp(200, "GET", "http://h/%zz"), false},
		{"path of empty url", `{"http_path":[".*"]}`, resp(200, "GET", ""), false},
		{"url", `{"http_url":["^http://h/"]}`, resp(200, "GET", "http://h/api?q=1"), true},
		{"url query", `{"http_url":["q=1"]}`, resp(200, "GET", "http://h/api?q=1"), true},
		{"url other", `{"http_url":["^https"]}`, resp(200, "GET", "http://h/api"), false},
		{"header", `{"http_header":[{"key":"X-Env","value":"prod"}]}`, resp(200, "GET", "/"), true},
		{"header value other", `{"http_header":[{"key":"X-Env","value":"dev"}]}`, resp(200, "GET", "/"), false},
		{"header key case-sensitive", `{"http_header":[{"key":"x-env","value":"prod"}]}`, resp(200, "GET", "/"), false},
		{"header one of", `{"http_header":[{"key":"a","value":"b"},{"key":"accept","value":"*/*"}]}`, resp(200, "GET", "/"), true},
		{"header needs http", `{"http_header":[{"key":"a","value":"b"}]}`, `{}`, false},
	})
}

func TestProtocol(t *testing.T) {
	tcp := `{"l4":{"TCP":{"source_port":1234,"destination_port":80}}}`
	udp := `{"l4":{"UDP":{"source_port":53000,"destination_port":53}}}`
	icmp4 := `{"l4":{"ICMPv4":{"type":8}}}`
	icmp6 := `{"l4":{"ICMPv6":{"type":128}}}`
	sctp := `{"l4":{"SCTP":{"source_port":1,"destination_port":2}}}`
	dns := `{"l4":{"UDP":{"destination_port":53}},"l7":{"dns":{"query":"a.com."}}}`
	http := `{"l4":{"TCP":{"destination_port":80}},"l7":{"http":{"method":"GET"}}}`
	runMatchCases(t, []matchCase{
		{"tcp", `{"protocol":["tcp"]}`, tcp, true},
		{"TCP upper case", `{"protocol":["TCP"]}`, tcp, true},
		{"tcp on udp", `{"protocol":["tcp"]}`, udp, false},
		{"udp", `{"protocol":["udp"]}`, udp, true},
		{"icmp is v4", `{"protocol":["icmp"]}`, icmp4, true},
		{"icmp is v6", `{"protocol":["icmp"]}`, icmp6, true},
		{"icmpv4 is not v6", `{"protocol":["icmpv4"]}`, icmp6, false},
		{"icmpv6", `{"protocol":["ICMPv6"]}`, icmp6, true},
		{"sctp", `{"protocol":["sctp"]}`, sctp, true},
		{"vrrp", `{"protocol":["vrrp"]}`, `{"l4":{"VRRP":{"vrid":1}}}`, true},
		{"igmp", `{"protocol":["igmp"]}`, `{"l4":{"IGMP":{"type":17}}}`, true},
		{"dns", `{"protocol":["dns"]}`, dns, true},
		{"dns is l7", `{"protocol":["dns"]}`, udp, false},
		{"udp of a dns flow", `{"protocol":["udp"]}`, dns, true},
		{"http", `{"protocol":["http"]}`, http, true},
		{"http is not tcp-only", `{"protocol":["http"]}`, tcp, false},
		{"no l4", `{"protocol":["tcp","udp","icmp"]}`, `{}`, false},
		{"list", `{"protocol":["udp","tcp"]}`, tcp, true},
	})
}

func TestPort(t *testing.T) {
	runMatchCases(t, []matchCase{
		{"tcp dst", `{"destination_port":["80"]}`, `{"l4":{"TCP":{"source_port":1234,"destination_port":80}}}`, true},
		{"tcp src", `{"source_port":["1234"]}`, `{"l4":{"TCP":{"source_port":1234,"destination_port":80}}}`, true},
		{"tcp dst is not src", `{"destination_port":["1234"]}`, `{"l4":{"TCP":{"source_port":1234,"destination_port":80}}}`, false},
		{"udp", `{"destination_port":["53"]}`, `{"l4":{"UDP":{"destination_port":53}}}`, true},
		{"sctp", `{"source_port":["9"]}`, `{"l4":{"SCTP":{"source_port":9}}}`, true},
		{"icmp never", `{"destination_port":["0"]}`, `{"l4":{"ICMPv4":{"type":8}}}`, false},
		{"no l4 never", `{"destination_port":["0"]}`, `{}`, false},
		{"port 0 on tcp", `{"destination_port":["0"]}`, `{"l4":{"TCP":{}}}`, true},
		{"leading zero", `{"destination_port":["080"]}`, `{"l4":{"TCP":{"destination_port":80}}}`, true},
		{"truncated to 16 bits", `{"destination_port":["1"]}`, `{"l4":{"TCP":{"destination_port":65537}}}`, true},
		{"list", `{"destination_port":["1","443"]}`, `{"l4":{"TCP":{"destination_port":443}}}`, true},
	})
}

func TestReply(t *testing.T) {
	runMatchCases(t, []matchCase{
		{"reply true", `{"reply":[true]}`, `{"is_reply":true,"verdict":"FORWARDED"}`, true},
		{"reply true on request", `{"reply":[true]}`, `{"is_reply":false,"verdict":"FORWARDED"}`, false},
		{"reply false", `{"reply":[false]}`, `{"is_reply":false,"verdict":"FORWARDED"}`, true},
		{"unknown never matches", `{"reply":[false]}`, `{"verdict":"FORWARDED"}`, false},
		{"unknown never matches true", `{"reply":[true]}`, `{"verdict":"FORWARDED"}`, false},
		{"unknown dropped counts as false", `{"reply":[false]}`, `{"verdict":"DROPPED"}`, true},
		{"unknown dropped is not true", `{"reply":[true]}`, `{"verdict":"DROPPED"}`, false},
		{"either", `{"reply":[true,false]}`, `{"is_reply":true}`, true},
		{"either unknown", `{"reply":[true,false]}`, `{"verdict":"AUDIT"}`, false},
	})
}

func TestDNSQuery(t *testing.T) {
	dns := func(q string) string { return `{"l7":{"dns":{"query":"` + q + `"}}}` }
	runMatchCases(t, []matchCase{
		{"unanchored", `{"dns_query":["isovalent"]}`, dns("www.isovalent.com."), true},
		{"anchored by the user", `{"dns_query":["^isovalent"]}`, dns("www.isovalent.com."), false},
		{"trailing dot kept", `{"dns_query":["com\\.$"]}`, dns("a.com."), true},
		{"trailing dot kept (without)", `{"dns_query":["com$"]}`, dns("a.com."), false},
		{"case sensitive", `{"dns_query":["ISOVALENT"]}`, dns("isovalent.com."), false},
		{"needs dns", `{"dns_query":[".*"]}`, `{}`, false},
		{"empty query", `{"dns_query":["^$"]}`, `{"l7":{"dns":{}}}`, true},
		{"list", `{"dns_query":["x","a\\.com"]}`, dns("a.com."), true},
	})
}

func TestTCPFlags(t *testing.T) {
	flags := func(f string) string { return `{"l4":{"TCP":{"flags":{` + f + `}}}}` }
	runMatchCases(t, []matchCase{
		{"syn on syn", `{"tcp_flags":[{"SYN":true}]}`, flags(`"SYN":true`), true},
		{"syn on syn-ack", `{"tcp_flags":[{"SYN":true}]}`, flags(`"SYN":true,"ACK":true`), true},
		{"syn-ack on syn", `{"tcp_flags":[{"SYN":true,"ACK":true}]}`, flags(`"SYN":true`), false},
		{"syn-ack on syn-ack", `{"tcp_flags":[{"SYN":true,"ACK":true}]}`, flags(`"SYN":true,"ACK":true`), true},
		{"any entry", `{"tcp_flags":[{"FIN":true},{"RST":true}]}`, flags(`"RST":true,"ACK":true`), true},
		{"all flags", `{"tcp_flags":[{"NS":true,"CWR":true,"ECE":true,"URG":true,"PSH":true}]}`, flags(`"NS":true,"CWR":true,"ECE":true,"URG":true,"PSH":true`), true},
		{"ns missing", `{"tcp_flags":[{"NS":true}]}`, flags(`"CWR":true`), false},
		{"empty entry matches any flags", `{"tcp_flags":[{}]}`, flags(``), true},
		{"no flags", `{"tcp_flags":[{}]}`, `{"l4":{"TCP":{}}}`, false},
		{"udp", `{"tcp_flags":[{"SYN":true}]}`, `{"l4":{"UDP":{}}}`, false},
	})
}

func TestNodeName(t *testing.T) {
	node := func(n string) string { return `{"node_name":"` + n + `"}` }
	runMatchCases(t, []matchCase{
		{"exact", `{"node_name":["k8s1"]}`, node("k8s1"), true},
		{"default cluster prepended", `{"node_name":["default/k8s1"]}`, node("k8s1"), true},
		{"other cluster", `{"node_name":["prod/k8s1"]}`, node("k8s1"), false},
		{"cluster given", `{"node_name":["prod/k8s1"]}`, node("prod/k8s1"), true},
		{"no cluster in pattern matches any", `{"node_name":["k8s1"]}`, node("prod/k8s1"), true},
		{"glob", `{"node_name":["k8s*"]}`, node("k8s12"), true},
		{"glob crosses dots", `{"node_name":["k8s*"]}`, node("k8s1.example.com"), true},
		{"anchored", `{"node_name":["k8s"]}`, node("k8s1"), false},
		{"cluster glob", `{"node_name":["prod-*/"]}`, node("prod-eu/n1"), true},
		{"empty node part", `{"node_name":["prod/"]}`, node("prod/n1.x"), true},
		{"empty cluster part", `{"node_name":["/n1"]}`, node("any/n1"), true},
		{"pattern lower-cased", `{"node_name":["K8S1"]}`, node("k8s1"), true},
		{"name case kept", `{"node_name":["k8s1"]}`, node("K8S1"), false},
		{"empty node name never matches", `{"node_name":["*"]}`, node(""), false},
		{"trailing dot trimmed", `{"node_name":["n1.example.com."]}`, node("n1.example.com"), true},
		{"list", `{"node_name":["a","b*"]}`, node("c/bee"), true},
	})
}

func TestCEL(t *testing.T) {
	cel := func(exprs ...string) string {
		b, _ := protojson.Marshal(&flowpb.FlowFilter{Experimental: &flowpb.FlowFilter_Experimental{CelExpression: exprs}})
		return string(b)
	}
	tcp443 := `{"verdict":"FORWARDED","l4":{"TCP":{"destination_port":443}},"IP":{"source":"1.1.1.1"},"source":{"labels":["k8s:app=web","reserved:host"]}}`
	runMatchCases(t, []matchCase{
		{"verdict", cel(`_flow.verdict == Verdict.FORWARDED`), tcp443, true},
		{"verdict qualified", cel(`_flow.verdict == flow.Verdict.DROPPED`), tcp443, false},
		{"port uint", cel(`has(_flow.l4.TCP) && _flow.l4.TCP.destination_port == uint(443)`), tcp443, true},
		{"port on udp", cel(`has(_flow.l4.TCP) && _flow.l4.TCP.destination_port == 443u`), `{"l4":{"UDP":{"destination_port":443}}}`, false},
		{"ip string", cel(`_flow.IP.source == '1.1.1.1'`), tcp443, true},
		{"or of expressions", cel(`false`, `_flow.IP.source.startsWith('1.')`), tcp443, true},
		{"labels exists", cel(`_flow.source.labels.exists(l, l == 'k8s:app=web')`), tcp443, true},
		{"labels all", cel(`_flow.source.labels.all(l, l.startsWith('k8s:'))`), tcp443, false},
		{"in list", cel(`'reserved:host' in _flow.source.labels`), tcp443, true},
		{"matches", cel(`_flow.IP.source.matches('^1\\.')`), tcp443, true},
		{"is_reply wrapper", cel(`_flow.is_reply == true`), `{"is_reply":true}`, true},
		{"is_reply unset is null", cel(`_flow.is_reply == false`), `{}`, false},
		{"time comparison", cel(`_flow.time > timestamp('2020-01-01T00:00:00Z')`), `{"time":"2024-01-01T00:00:00Z"}`, true},
		{"error is no match", cel(`_flow.source.labels[5] == 'x'`), tcp443, false},
		{"error or true", cel(`_flow.source.labels[5] == 'x' || true`), tcp443, true},
	})
}

// TestInvalid checks that every invalid filter is rejected at build time,
// naming the field.
func TestInvalid(t *testing.T) {
	tests := []struct {
		filter string
		field  string
	}{
		{`{"source_ip":["1.1.1"]}`, "source_ip"},
		{`{"destination_ip":["10.0.0.0/33"]}`, "destination_ip"},
		{`{"source_ip_xlated":["x/8"]}`, "source_ip_xlated"},
		{`{"source_pod":[""]}`, "source_pod"},
		{`{"destination_pod":["/"]}`, "destination_pod"},
		{`{"source_service":[""]}`, "source_service"},
		{`{"source_fqdn":[""]}`, "source_fqdn"},
		{`{"source_fqdn":["a.com.."]}`, "source_fqdn"},
		{`{"destination_fqdn":["a$b"]}`, "destination_fqdn"},
		{`{"source_label":["k8s:app in (a"]}`, "source_label"},
		{`{"source_label":["k8s:app=a b"]}`, "source_label"},
		{`{"destination_label":["k8s:app=-x"]}`, "destination_label"},
		{`{"destination_label":["Upper.Prefix:x/y"]}`, "destination_label"},
		{`{"node_labels":["a in ()x"]}`, "node_labels"},
		{`{"source_label":["k8s:n>x"]}`, "source_label"},
		{`{"source_label":["k8s:app=a,"]}`, "source_label"},
		{`{"source_cluster_name":[""]}`, "source_cluster_name"},
		{`{"http_status_code":["600"]}`, "http_status_code"},
		{`{"http_status_code":["4xx"]}`, "http_status_code"},
		{`{"http_status_code":["400+"]}`, "http_status_code"},
		{`{"http_status_code":["200"],"event_type":[{"type":4}]}`, "http_status_code"},
		{`{"http_method":["GET"],"event_type":[{"type":1}]}`, "http_method"},
		{`{"http_path":["("]}`, "http_path"},
		{`{"http_url":["[a-"]}`, "http_url"},
		{`{"http_header":[{"key":"a"}],"event_type":[{"type":0}]}`, "http_header"},
		{`{"protocol":["kafka"]}`, "protocol"},
		{`{"protocol":["ip"]}`, "protocol"},
		{`{"source_port":["65536"]}`, "source_port"},
		{`{"destination_port":["http"]}`, "destination_port"},
		{`{"destination_port":["-1"]}`, "destination_port"},
		{`{"dns_query":["*"]}`, "dns_query"},
		{`{"node_name":["a/b/c"]}`, "node_name"},
		{`{"node_name":[""]}`, "node_name"},
		{`{"node_name":["a_b/*?"]}`, "node_name"},
		{`{"experimental":{"cel_expression":["_flow.verdict"]}}`, "experimental.cel_expression"},
		{`{"experimental":{"cel_expression":["_flow.nope == 1"]}}`, "experimental.cel_expression"},
		{`{"experimental":{"cel_expression":["_flow.l4.TCP.destination_port == 443"]}}`, "experimental.cel_expression"},
		{`{"experimental":{"cel_expression":["("]}}`, "experimental.cel_expression"},
	}
	for _, tt := range tests {
		t.Run(tt.filter, func(t *testing.T) {
			ff := parseOne(t, tt.filter)
			_, err := New([]*flowpb.FlowFilter{{}, ff}, nil)
			if err == nil {
				t.Fatalf("New(%s) succeeded", tt.filter)
			}
			fe, ok := err.(*Error)
			if !ok {
				t.Fatalf("error %T %v is not *Error", err, err)
			}
			if fe.Field != tt.field || fe.List != "allow" || fe.Index != 1 {
				t.Errorf("error at %s[%d] %s, want allow[1] %s: %v", fe.List, fe.Index, fe.Field, tt.field, err)
			}
			if !strings.Contains(err.Error(), tt.field) {
				t.Errorf("message %q does not name %s", err, tt.field)
			}
		})
	}
}

func TestMatchEventAndClone(t *testing.T) {
	f, err := New([]*flowpb.FlowFilter{
		parseOne(t, `{"experimental":{"cel_expression":["_flow.verdict == Verdict.DROPPED"]}}`),
		parseOne(t, `{"http_path":["^/x"]}`),
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	drop := mustFlow(t, `{"verdict":"DROPPED"}`)
	fwd := mustFlow(t, `{"verdict":"FORWARDED","l7":{"http":{"url":"/x%41"}}}`)
	other := mustFlow(t, `{"verdict":"FORWARDED"}`)
	if f.Empty() {
		t.Error("Empty() on a filter with filters")
	}
	if !f.MatchEvent(&pipeline.Event{Lost: &flowpb.LostEvent{}}) {
		t.Error("a LostEvent must pass")
	}
	if !f.MatchEvent(&pipeline.Event{Flow: drop}) || f.MatchEvent(&pipeline.Event{Flow: other}) {
		t.Error("MatchEvent differs from Match")
	}
	if !f.Match(nil) {
		t.Error("nil flow must pass")
	}
	// A clone evaluates independently on another goroutine.
	c := f.Clone()
	done := make(chan bool)
	go func() {
		ok := true
		for i := 0; i < 1000; i++ {
			ok = ok && c.Match(drop) && c.Match(fwd) && !c.Match(other)
		}
		done <- ok
	}()
	ok := true
	for i := 0; i < 1000; i++ {
		ok = ok && f.Match(drop) && f.Match(fwd) && !f.Match(other)
	}
	if !ok || !<-done {
		t.Error("wrong results from a filter and its clone used concurrently")
	}
	empty, err := New(nil, nil)
	if err != nil || !empty.Empty() || !empty.Match(other) {
		t.Error("empty filter")
	}
}

// TestLabelsHubbleTable replays the label cases of Hubble's own filter
// tests (pkg/hubble/filters labels_test.go).
func TestLabelsHubbleTable(t *testing.T) {
	tests := []struct {
		selectors []string
		labels    [][]string
		want      []bool
	}{
		{[]string{"label1", "label2"}, [][]string{{"label1"}, {"label1=val1"}, {"label2", "label3", "label4=val4"}, {"label3"}},
			[]bool{true, true, true, false}},
		{[]string{"label1=val1", "label2=val2"}, [][]string{{"label1"}, {"label1=val1"}, {"label1=val2", "label2=val1", "label3"},
			{"label2=val2", "label3"}, {"label3=val1"}, {""}, nil, {"label1=val1=toomuch"}},
			[]bool{false, true, false, true, false, false, false, false}},
		{[]string{"label1 in (val1, val2), label3 notin ()"}, [][]string{{"label1"}, {"label1=val1"},
			{"label1=val2", "label2=val1", "label3=val3"}, {"label2=val2", "label3"}, {"label1=val1", "label3=val3"}},
			[]bool{false, true, true, false, true}},
		{[]string{"src1, src2=val2"}, [][]string{{"src1", "src2=val2"}, {"src1"}}, []bool{true, false}},
		{[]string{""}, [][]string{{"src1", "src2=val2"}, nil, {""}}, []bool{true, true, true}},
		{[]string{"k8s:app=bar", "foo", "reserved:host"}, [][]string{{"k8s:app=bar"}, {"k8s:foo=baz"}, {"k8s.app=bar"}, {"cni:foo=bar", "reserved:host"}},
			[]bool{true, true, false, true}},
		{[]string{"!k8s:app"}, [][]string{{"k8s:app=bar"}, {"k8s:app=baz"}, {"k8s.app=bar"}, {"cni:foo=bar", "reserved:host"}},
			[]bool{false, false, true, true}},
		{[]string{"any:key"}, [][]string{{"key"}, {"reserved:key"}, {"any.key"}}, []bool{true, true, false}},
		{[]string{"key"}, [][]string{{"key"}, {"reserved:key"}, {"any.key"}}, []bool{true, true, false}},
		{[]string{"key.with.dot"}, [][]string{{"k8s:key.with.dot"}, {"reserved:key.with.dot"}, {"any.key.with.dot"}, {"key:with.dot"}},
			[]bool{true, true, false, false}},
	}
	for _, tt := range tests {
		pred, err := labelFilter("source_label", tt.selectors, func(f *flowpb.Flow) []string { return f.GetSource().GetLabels() })
		if err != nil {
			t.Fatalf("%q: %v", tt.selectors, err)
		}
		for i, ls := range tt.labels {
			if got := pred(&flowpb.Flow{Source: &flowpb.Endpoint{Labels: ls}}); got != tt.want[i] {
				t.Errorf("%q on %q: %v, want %v", tt.selectors, ls, got, tt.want[i])
			}
		}
	}
	for _, bad := range []string{"()", "=", "!"} {
		if _, err := labelFilter("source_label", []string{bad}, nil); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}
