package flowfilter

import (
	"errors"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"
	"gopkg.in/yaml.v3"

	flowpb "github.com/flowbus/flowbus/flow"
	"github.com/flowbus/flowbus/pipeline/config"
)

func yamlNode(t testing.TB, src string) *yaml.Node {
	t.Helper()
	var doc yaml.Node
	if err := yaml.Unmarshal([]byte(src), &doc); err != nil {
		t.Fatalf("yaml %q: %v", src, err)
	}
	return &doc
}

func TestParseFiltersForms(t *testing.T) {
	want := []*flowpb.FlowFilter{{
		SourcePod:       []string{"kube-system/"},
		Verdict:         []flowpb.Verdict{flowpb.Verdict_DROPPED, flowpb.Verdict_ERROR},
		DestinationPort: []string{"53"},
		SourceIdentity:  []uint32{1, 2},
		IpTraceId:       []uint64{18446744073709551615},
		Reply:           []bool{true},
		TcpFlags:        []*flowpb.TCPFlags{{SYN: true}},
		EventType:       []*flowpb.EventTypeFilter{{Type: 4, MatchSubType: true, SubType: -1}},
		Experimental:    &flowpb.FlowFilter_Experimental{CelExpression: []string{"true"}},
	}}
	for name, src := range map[string]string{
		"proto names block style": `
- source_pod: ["kube-system/"]
  verdict: [DROPPED, 3]
  destination_port: [53]
  source_identity: [1, "2"]
  ip_trace_id: ["18446744073709551615"]
  reply: [true]
  tcp_flags: [{SYN: true}]
  event_type: [{type: 4, match_sub_type: true, sub_type: -1}]
  experimental: {cel_expression: ["true"]}
`,
		"json names": `
- sourcePod: ["kube-system/"]
  verdict: [DROPPED, ERROR]
  destinationPort: ["53"]
  sourceIdentity: [1, 2]
  ipTraceId: [18446744073709551615]
  reply: ["true"]
  tcpFlags: [{SYN: true}]
  eventType: [{type: 4, matchSubType: true, subType: -1}]
  experimental: {celExpression: ["true"]}
`,
		"scalars as lists of one": `
- source_pod: kube-system/
  verdict: [DROPPED, ERROR]
  destination_port: 53
  source_identity: [1, 2]
  ip_trace_id: 18446744073709551615
  reply: true
  tcp_flags: {SYN: true}
  event_type: {type: 4, match_sub_type: true, sub_type: -1}
  experimental: {cel_expression: "true"}
`,
		"json string item": `
- '{"source_pod":["kube-system/"],"verdict":["DROPPED","ERROR"],"destination_port":["53"],"source_identity":[1,2],"ip_trace_id":["18446744073709551615"],"reply":[true],"tcp_flags":[{"SYN":true}],"event_type":[{"type":4,"match_sub_type":true,"sub_type":-1}],"experimental":{"cel_expression":["true"]}}'
`,
		"json flag string":  `'{"source_pod":["kube-system/"],"verdict":["DROPPED","ERROR"],"destination_port":["53"],"source_identity":[1,2],"ip_trace_id":["18446744073709551615"],"reply":[true],"tcp_flags":[{"SYN":true}],"event_type":[{"type":4,"match_sub_type":true,"sub_type":-1}],"experimental":{"cel_expression":["true"]}}'`,
		"json array string": `'[{"sourcePod":["kube-system/"],"verdict":["DROPPED","ERROR"],"destination_port":["53"],"source_identity":[1,2],"ip_trace_id":["18446744073709551615"],"reply":[true],"tcp_flags":[{"SYN":true}],"event_type":[{"type":4,"match_sub_type":true,"sub_type":-1}],"experimental":{"cel_expression":["true"]}}]'`,
		"anchors": `
x: &pods ["kube-system/"]
list:
- source_pod: *pods
  verdict: [DROPPED, ERROR]
  destination_port: ["53"]
  source_identity: [1, 2]
  ip_trace_id: [18446744073709551615]
  reply: [true]
  tcp_flags: [{SYN: true}]
  event_type: [{type: 4, match_sub_type: true, sub_type: -1}]
  experimental: {cel_expression: ["true"]}
`,
	} {
		t.Run(name, func(t *testing.T) {
			n := yamlNode(t, src)
			if strings.Contains(src, "list:") {
				n = n.Content[0].Content[3]
			}
			got, err := ParseFilters(n)
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != 1 || !proto.Equal(got[0], want[0]) {
				t.Fatalf("got %v\nwant %v", got, want)
			}
		})
	}
}

func TestParseFiltersEmpty(t *testing.T) {
	for _, src := range []string{"", "~", "null", "[]", "''", "'[]'", "' '"} {
		got, err := ParseFilters(yamlNode(t, src))
		if err != nil || len(got) != 0 {
			t.Errorf("%q: %v, %v", src, got, err)
		}
	}
	got, err := ParseFilters(nil)
	if err != nil || got != nil {
		t.Errorf("nil: %v %v", got, err)
	}
	got, err = ParseFilters(yamlNode(t, "- {}\n- {verdict: null}"))
	if err != nil || len(got) != 2 || !proto.Equal(got[0], &flowpb.FlowFilter{}) || !proto.Equal(got[1], &flowpb.FlowFilter{}) {
		t.Errorf("empty filters: %v %v", got, err)
	}
}

func TestParseFiltersErrors(t *testing.T) {
	tests := []struct {
		src       string
		line, col int
		msg       string
	}{
		{"{source_pod: [a]}", 1, 1, "want a list"},
		{"5", 1, 1, "want a list"},
		{"'{\"verdict\":[\"DROPPED\"]} {\"nope\":1}'", 1, 1, "filter 1: invalid FlowFilter JSON"},
		{"'{\"verdict\":'", 1, 1, "invalid FlowFilter JSON"},
		{"'[{}] {}'", 1, 1, "data after the list"},
		{"- 5", 1, 3, "want a FlowFilter"},
		{"- null", 1, 3, "want a FlowFilter"},
		{"- [a]", 1, 3, "want a FlowFilter"},
		{"- source_pod: [a]\n  nope: 1", 2, 3, `unknown FlowFilter field "nope"`},
		{"- source_pod: [a]\n  sourcePod: [b]", 2, 3, "given twice"},
		{"- verdict: [DROPED]", 1, 13, `unknown Verdict "DROPED"`},
		{"- verdict: [{a: 1}]", 1, 13, "want a Verdict"},
		{"- source_identity: [-1]", 1, 21, "invalid uint32"},
		{"- source_identity: [4294967296]", 1, 21, "out of range"},
		{"- source_identity: [1.5]", 1, 21, "not an unsigned integer"},
		{"- reply: [yes]", 1, 11, "want true or false"},
		{"- reply: [1]", 1, 11, "want true or false"},
		{"- tcp_flags: [SYN]", 1, 15, "want a TCPFlags mapping"},
		{"- tcp_flags: [{SYN: true, XMAS: true}]", 1, 27, `unknown TCPFlags field "XMAS"`},
		{"- experimental: {cel: [x]}", 1, 18, `unknown Experimental field "cel"`},
		{"- experimental: [x]", 1, 17, "want a Experimental mapping"},
		{"- source_pod: [[a]]", 1, 16, "want a string"},
		{"- source_pod: [null]", 1, 16, "null list item"},
		{"- '{\"nope\":1}'", 1, 3, "invalid FlowFilter JSON"},
		{"- event_type: [{type: 2147483648}]", 1, 23, "invalid int32"},
	}
	for _, tt := range tests {
		t.Run(tt.src, func(t *testing.T) {
			_, err := ParseFilters(yamlNode(t, tt.src))
			var ce *config.Error
			if !errors.As(err, &ce) {
				t.Fatalf("error %v is not a *config.Error", err)
			}
			if ce.Line != tt.line || ce.Col != tt.col || !strings.Contains(ce.Msg, tt.msg) {
				t.Errorf("got %d:%d %q, want %d:%d containing %q", ce.Line, ce.Col, ce.Msg, tt.line, tt.col, tt.msg)
			}
		})
	}
}

// TestPositioned checks that build errors point at the offending value.
func TestPositioned(t *testing.T) {
	src := `allow:
  - verdict: [DROPPED]
  - source_ip: ["10.0.0.1", "10.0.0.0/33"]
deny:
  - sourceLabel: ["k8s:app in (a"]
  - experimental:
      cel_expression:
        - "true"
        - "_flow.verdict"
  - http_status_code: ["200"]
    event_type: [{type: 4}]
`
	root := yamlNode(t, src).Content[0]
	allowN, denyN := root.Content[1], root.Content[3]
	allow, err := ParseFilters(allowN)
	if err != nil {
		t.Fatal(err)
	}
	deny, err := ParseFilters(denyN)
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		allow, deny []*flowpb.FlowFilter
		line, col   int
		field       string
	}{
		{allow, nil, 3, 29, "source_ip[1]"},
		{nil, deny[:1], 5, 19, "source_label[0]"},
		{nil, deny[1:2], 9, 11, "experimental.cel_expression[1]"},
		{nil, deny[2:], 10, 5, "http_status_code"},
	}
	for _, c := range cases {
		_, err := New(c.allow, c.deny)
		if err == nil {
			t.Fatalf("%s: no error", c.field)
		}
		var list *yaml.Node
		if c.deny != nil {
			// The deny slice starts at the offending filter; shift the node.
			list = &yaml.Node{Kind: yaml.SequenceNode}
			for i, d := range deny {
				if d == c.deny[0] {
					list.Content = denyN.Content[i:]
				}
			}
		}
		perr := Positioned(err, allowN, list)
		var ce *config.Error
		if !errors.As(perr, &ce) {
			t.Fatalf("%s: %v is not positioned", c.field, perr)
		}
		if ce.Line != c.line || ce.Col != c.col || !strings.Contains(ce.Msg, c.field) {
			t.Errorf("%s: got %d:%d %q, want %d:%d", c.field, ce.Line, ce.Col, ce.Msg, c.line, c.col)
		}
	}
}

func TestPositionedList(t *testing.T) {
	n := yamlNode(t, "- {verdict: [DROPPED]}\n- {source_fqdn: [\"a..\"]}\n").Content[0]
	ffs, err := ParseFilters(n)
	if err != nil {
		t.Fatal(err)
	}
	_, err = New(ffs, nil)
	err.(*Error).List = "filter"
	perr := PositionedList(err, n)
	var ce *config.Error
	if !errors.As(perr, &ce) || ce.Line != 2 || ce.Col != 18 || !strings.HasPrefix(ce.Msg, `filter[1]: source_fqdn[0] "a..":`) {
		t.Errorf("got %v", perr)
	}
	if other := errors.New("x"); PositionedList(other, n) != other || Positioned(other, n, nil) != other {
		t.Error("other errors must pass unchanged")
	}
}

func TestParseFiltersJSONFlag(t *testing.T) {
	got, err := ParseFilters(yamlNode(t, `'{"verdict":["DROPPED"]}
{"source_pod":["kube-system/"]}'`))
	if err != nil {
		t.Fatal(err)
	}
	want := []*flowpb.FlowFilter{{Verdict: []flowpb.Verdict{flowpb.Verdict_DROPPED}}, {SourcePod: []string{"kube-system/"}}}
	if len(got) != 2 || !proto.Equal(got[0], want[0]) || !proto.Equal(got[1], want[1]) {
		t.Errorf("got %v", got)
	}
}
