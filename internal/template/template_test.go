package template

import (
	"errors"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"
	"gopkg.in/yaml.v3"

	flowpb "github.com/flowbus/flowbus/flow"
	"github.com/flowbus/flowbus/pipeline"
	"github.com/flowbus/flowbus/pipeline/config"
)

func flowEvent() *pipeline.Event {
	return &pipeline.Event{Flow: &flowpb.Flow{
		Verdict: flowpb.Verdict_DROPPED,
		Source:  &flowpb.Endpoint{Namespace: "kube-system", PodName: "core dns.1*>x"},
		L4: &flowpb.Layer4{Protocol: &flowpb.Layer4_TCP{TCP: &flowpb.TCP{
			SourcePort: 443, DestinationPort: 8080,
		}}},
	}}
}

func TestAppend(t *testing.T) {
	lost := &pipeline.Event{Lost: &flowpb.LostEvent{NumEventsLost: 3}}
	tests := []struct {
		name, tmpl string
		target     Target
		e          *pipeline.Event
		want       string
	}{
		{"enum", "hubble.flows.{{ verdict }}", Kafka, flowEvent(), "hubble.flows.DROPPED"},
		{"no spaces", "flows.{{source.namespace}}", NATS, flowEvent(), "flows.kube-system"},
		{"number", "p{{ l4.TCP.destination_port }}", Kafka, flowEvent(), "p8080"},
		{"kafka sanitizes", "t.{{ source.pod_name }}", Kafka, flowEvent(), "t.core_dns.1__x"},
		{"nats sanitizes dot and wildcards", "s.{{ source.pod_name }}", NATS, flowEvent(), "s.core_dns_1__x"},
		{"text keeps", "{{ source.pod_name }}", Text, flowEvent(), "core dns.1*>x"},
		{"unset is unknown", "f.{{ destination.namespace }}.x", NATS, flowEvent(), "f.unknown.x"},
		{"unset oneof is unknown", "f.{{ l4.UDP.source_port }}", Kafka, flowEvent(), "f.unknown"},
		{"lost", "f.{{ verdict }}.{{ source.namespace }}", NATS, lost, "f.lost.lost"},
		{"literal", "hubble-flows", Kafka, flowEvent(), "hubble-flows"},
		{"two in a token", "f.{{ verdict }}-{{ l4.TCP.source_port }}", NATS, flowEvent(), "f.DROPPED-443"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tm, err := Parse(tt.tmpl, tt.target)
			if err != nil {
				t.Fatal(err)
			}
			got := string(tm.Append([]byte("prefix:"), tt.e))
			if got != "prefix:"+tt.want {
				t.Errorf("got %q, want %q", got, "prefix:"+tt.want)
			}
		})
	}
}

func TestKafkaTopicLength(t *testing.T) {
	tm, err := Parse("t.{{ source.pod_name }}", Kafka)
	if err != nil {
		t.Fatal(err)
	}
	e := flowEvent()
	e.Flow.Source.PodName = strings.Repeat("a", 400)
	if got := tm.Append(nil, e); len(got) != MaxKafkaTopic {
		t.Errorf("len %d, want %d", len(got), MaxKafkaTopic)
	}
}

// TestKafkaTopicRenderedDots: a topic that renders as "." or ".." (which
// Kafka rejects) has its dots replaced by "_"; a literal of 249 characters
// is valid.
func TestKafkaTopicRenderedDots(t *testing.T) {
	tm, err := Parse("{{ source.pod_name }}", Kafka)
	if err != nil {
		t.Fatal(err)
	}
	for in, want := range map[string]string{".": "_", "..": "__", "...": "...", ".a": ".a"} {
		e := flowEvent()
		e.Flow.Source.PodName = in
		if got := string(tm.Append(nil, e)); got != want {
			t.Errorf("%q renders %q, want %q", in, got, want)
		}
	}
	if _, err := Parse(strings.Repeat("t", MaxKafkaTopic), Kafka); err != nil {
		t.Errorf("a 249-character topic: %v", err)
	}
}

func TestParseErrors(t *testing.T) {
	tests := []struct {
		tmpl   string
		target Target
		offset int
		msg    string
	}{
		{"", Kafka, 0, "empty template"},
		{"a.{{ verdict", Kafka, 2, "unclosed {{"},
		{"a.{{ }}", Kafka, 2, "empty placeholder"},
		{"a.}}", Kafka, 2, "without {{"},
		{"a.{{ nope }}", Kafka, 5, `has no field "nope"`},
		{"a.{{ source.nope }}", NATS, 5, `has no field "nope"`},
		{"a b.{{ verdict }}", Kafka, 1, "not allowed in a Kafka topic"},
		{"a.{{ verdict }}/x", Kafka, 15, "not allowed in a Kafka topic"},
		{"a.*.{{ verdict }}", NATS, 2, "not allowed in a NATS subject"},
		{"a.>", NATS, 2, "not allowed in a NATS subject"},
		{"a..{{ verdict }}", NATS, 0, "token 2 is empty"},
		{"{{ verdict }}.", NATS, 0, "token 2 is empty"},
		{"a.{{ verdict {{ x }}", NATS, 2, "unclosed {{"},
		{".", Kafka, 0, "not a valid Kafka topic"},
		{"..", Kafka, 0, "not a valid Kafka topic"},
		{strings.Repeat("t", 250), Kafka, 249, "at most 249 characters, this one has 250"},
		{strings.Repeat("t", 249) + ".{{ verdict }}", Kafka, 0, "literal text of this template alone has 250"},
		{"flows.é", Kafka, 6, "'é' is not allowed in a Kafka topic"},
	}
	for _, tt := range tests {
		t.Run(tt.tmpl, func(t *testing.T) {
			_, err := Parse(tt.tmpl, tt.target)
			var te *Error
			if !errors.As(err, &te) {
				t.Fatalf("error %v, want *Error", err)
			}
			if te.Offset != tt.offset || !strings.Contains(te.Msg, tt.msg) {
				t.Errorf("got offset %d %q, want offset %d containing %q", te.Offset, te.Msg, tt.offset, tt.msg)
			}
		})
	}
}

func TestParseNodePosition(t *testing.T) {
	var doc yaml.Node
	src := "topic: hubble.{{ nope }}\nsubject: \"a.{{ verdict }}.*\"\n"
	if err := yaml.Unmarshal([]byte(src), &doc); err != nil {
		t.Fatal(err)
	}
	m := doc.Content[0]
	_, err := ParseNode(m.Content[1], Kafka)
	var ce *config.Error
	if !errors.As(err, &ce) || ce.Line != 1 || ce.Col != 18 {
		t.Errorf("topic error %v, want at 1:18", err)
	}
	_, err = ParseNode(m.Content[3], NATS)
	if !errors.As(err, &ce) || ce.Line != 2 || ce.Col != 27 {
		t.Errorf("subject error %v, want at 2:27", err)
	}
}

func TestWildcard(t *testing.T) {
	for tmpl, want := range map[string]string{
		"hubble.flows.{{ verdict }}":               "hubble.flows.*",
		"f.x{{ verdict }}y.{{ source.namespace }}": "f.*.*",
		"lost.flows": "lost.flows",
	} {
		tm, err := Parse(tmpl, NATS)
		if err != nil {
			t.Fatal(err)
		}
		if got := tm.Wildcard(); got != want {
			t.Errorf("%s: got %q, want %q", tmpl, got, want)
		}
	}
}

func TestAppendAllocs(t *testing.T) {
	tm, err := Parse("hubble.{{ verdict }}.{{ source.namespace }}.{{ l4.TCP.destination_port }}", NATS)
	if err != nil {
		t.Fatal(err)
	}
	e := flowEvent()
	buf := make([]byte, 0, 256)
	if n := testing.AllocsPerRun(100, func() { buf = tm.Append(buf[:0], e) }); n != 0 {
		t.Errorf("%v allocs per render, want 0", n)
	}
}

func BenchmarkAppend(b *testing.B) {
	tm, err := Parse("hubble.{{ verdict }}.{{ source.namespace }}", Kafka)
	if err != nil {
		b.Fatal(err)
	}
	e := flowEvent()
	buf := make([]byte, 0, 256)
	b.ReportAllocs()
	for b.Loop() {
		buf = tm.Append(buf[:0], e)
	}
}

// FuzzParse checks that Parse never panics and that every template it
// accepts renders a valid name for its target.
func FuzzParse(f *testing.F) {
	for _, s := range []string{"hubble.flows.{{ verdict }}", "{{source.pod_name}}", "a.{{", "}}", "{{ }}", "a..b", "x{{ l4.TCP.destination_port }}y"} {
		f.Add(s, uint8(1))
		f.Add(s, uint8(2))
	}
	e := flowEvent()
	f.Fuzz(func(t *testing.T, s string, target uint8) {
		tg := Target(target % 3)
		tm, err := Parse(s, tg)
		if err != nil {
			return
		}
		out := tm.Append(nil, e)
		lost := tm.Append(nil, &pipeline.Event{Lost: &flowpb.LostEvent{}})
		for _, r := range [][]byte{out, lost} {
			switch tg {
			case Kafka:
				for _, c := range r {
					if !kafkaOK(c) {
						t.Fatalf("template %q rendered %q", s, r)
					}
				}
			case NATS:
				for _, tok := range strings.Split(string(r), ".") {
					if tok == "" || strings.ContainsAny(tok, " \t\r\n*>") {
						t.Fatalf("template %q rendered %q", s, r)
					}
				}
			}
		}
	})
}

// Time placeholders render the event's UTC time, LostEvents included; the
// path target keeps a value inside one path element.
func TestPathAndTime(t *testing.T) {
	ts := timestamppb.New(time.Date(2025, 3, 7, 4, 9, 0, 0, time.FixedZone("x", 5*3600)))
	fe := flowEvent()
	fe.Flow.Time = ts
	fe.Flow.Source.PodName = "a/b\\c\x01.."
	lost := &pipeline.Event{Lost: &flowpb.LostEvent{NumEventsLost: 3}, Time: ts}
	tests := []struct {
		name, tmpl string
		e          *pipeline.Event
		want       string
	}{
		{"partitions", "/d/dt={{ time.date }}/hr={{ time.hour }}", fe, "/d/dt=2025-03-06/hr=23"},
		{"parts", "{{ time.year }}/{{ time.month }}/{{ time.day }}/{{ time.minute }}", fe, "2025/03/06/09"},
		{"lost keeps time", "dt={{ time.date }}/{{ verdict }}", lost, "dt=2025-03-06/lost"},
		{"no time", "{{ time.hour }}", &pipeline.Event{Flow: &flowpb.Flow{}}, "unknown"},
		{"separators replaced", "/d/{{ source.pod_name }}", fe, "/d/a_b_c_.."},
		{"dotdot stays for CleanPath", "/d/{{ source.namespace }}", &pipeline.Event{Flow: &flowpb.Flow{Source: &flowpb.Endpoint{Namespace: ".."}}}, "/d/.."},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tm, err := Parse(tt.tmpl, Path)
			if err != nil {
				t.Fatal(err)
			}
			if got := string(tm.Append(nil, tt.e)); got != tt.want {
				t.Errorf("got %q, want %q", got, tt.want)
			}
		})
	}
	for _, bad := range []string{"/d/../x", "./{{ verdict }}", "/d/{{ verdict }}/..", "/d/\x01"} {
		if _, err := Parse(bad, Path); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
	for p, ok := range map[string]bool{"/d/x": true, "/d/..": false, "/d/./x": false, "/d//x": false, "/d/..x": true, "rel/x": true} {
		if err := CleanPath(p); (err == nil) != ok {
			t.Errorf("CleanPath(%q) = %v", p, err)
		}
	}
}

// TestTimeKey: events whose TimeKey is the same render alike, over a wide
// range of times (before 1970 too); templates with another placeholder,
// or none, and events without a normalized time have no key.
func TestTimeKey(t *testing.T) {
	ev := func(sec int64, nanos int32) *pipeline.Event {
		return &pipeline.Event{Time: &timestamppb.Timestamp{Seconds: sec, Nanos: nanos}}
	}
	for _, src := range []string{"dt={{ time.date }}/hr={{ time.hour }}", "{{ time.minute }}", "{{time.year}}/{{time.month}}/{{time.day}}"} {
		tm, err := Parse(src, Path)
		if err != nil {
			t.Fatal(err)
		}
		seen := map[int64]string{}
		for sec := int64(-200_000); sec < 200_000; sec += 7 {
			for _, s := range []int64{sec, sec + 1_700_000_000, sec - 1_700_000_000} {
				e := ev(s, int32((s%1000+1000)%1000)*1000)
				k, ok := tm.TimeKey(e)
				if !ok {
					t.Fatalf("%s: no key for %d", src, s)
				}
				got := string(tm.Append(nil, e))
				if prev, dup := seen[k]; dup && prev != got {
					t.Fatalf("%s: key %d renders %q and %q (second %d)", src, k, prev, got, s)
				}
				seen[k] = got
			}
		}
	}
	path, err := Parse("{{ verdict }}/{{ time.hour }}", Path)
	if err != nil {
		t.Fatal(err)
	}
	lit, err := Parse("flows", Path)
	if err != nil {
		t.Fatal(err)
	}
	hour, err := Parse("{{ time.hour }}", Path)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name string
		tm   *Template
		e    *pipeline.Event
	}{
		{"a field placeholder", path, ev(1, 0)},
		{"no placeholder", lit, ev(1, 0)},
		{"no time", hour, &pipeline.Event{}},
		{"nanos past a second", hour, ev(3599, 1e9)},
		{"negative nanos", hour, ev(3600, -1)},
	} {
		if k, ok := c.tm.TimeKey(c.e); ok {
			t.Errorf("%s: key %d, want none", c.name, k)
		}
	}
}
