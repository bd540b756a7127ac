package flowjson

import (
	"bytes"
	"math/bits"
	"math/rand/v2"
	"runtime"
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/flowbus/flowbus/flow/flowjson/randflow"
	"github.com/flowbus/flowbus/flow/observer"
)

// compareDecoders checks Unmarshal against protojson on one input: the same
// acceptance, and equal messages. When the fast path alone accepts the
// input, protojson must accept it with the same result.
func compareDecoders(t testing.TB, line []byte, dec *observer.ExportEvent) (fast bool) {
	var ref observer.ExportEvent
	refErr := protojson.Unmarshal(line, &ref)

	var fastEv observer.ExportEvent
	fastErr := fastDecode(line, &fastEv)
	if fastErr == nil {
		if refErr != nil {
			t.Fatalf("fast path accepted what protojson rejects (%v): %q", refErr, line)
		}
		if !proto.Equal(&fastEv, &ref) {
			t.Fatalf("fast path differs on %q\nfast: %v\nref:  %v", line, &fastEv, &ref)
		}
	}
	err := Unmarshal(line, dec)
	if (err != nil) != (refErr != nil) {
		t.Fatalf("Unmarshal error %v, protojson %v: %q", err, refErr, line)
	}
	if err == nil && !proto.Equal(dec, &ref) {
		t.Fatalf("Unmarshal differs on %q\ngot:  %v\nref:  %v", line, dec, &ref)
	}
	return fastErr == nil
}

func TestDecodeForms(t *testing.T) {
	cases := []struct {
		line string
		fast bool // expected to stay on the fast path
	}{
		{`{"flow":{"time":"2024-01-01T10:00:00.123456Z","uuid":"u","verdict":"FORWARDED"},"node_name":"n","time":"2024-01-01T10:00:00.123456Z"}`, true},
		{` { "flow" : { "IP" : { "source" : "1.2.3.4" , "ipVersion" : "IPv4" } } } `, true},
		{"{\"flow\":{}\n}\r\n", true},
		{`{"flow":{"nodeName":"camel","dropReasonDesc":"POLICY_DENIED","isReply":true,"trafficDirection":2}}`, true},
		{`{"flow":{"drop_reason_desc":250,"verdict":-3}}`, true},
		{`{"flow":{"socket_cookie":42,"cgroup_id":"18446744073709551615","proxy_port":"8080"}}`, true},
		{`{"flow":{"socket_cookie":"18446744073709551616"}}`, false},
		{`{"flow":{"proxy_port":4294967296}}`, false},
		{`{"flow":{"proxy_port":-1}}`, false},
		{`{"flow":{"proxy_port":1.0}}`, false},
		{`{"flow":{"proxy_port":1e2}}`, false},
		{`{"flow":{"proxy_port":"1e2"}}`, false},
		{`{"flow":{"proxy_port":" 1"}}`, false},
		{`{"flow":{"proxy_port":01}}`, false},
		{`{"flow":{"proxy_port":"01"}}`, false},
		{`{"flow":{"proxy_port":-0}}`, false},
		{`{"flow":{"event_type":{"type":-2147483648,"sub_type":"2147483647"}}}`, true},
		{`{"flow":{"event_type":{"type":-2147483649}}}`, false},
		{`{"flow":{"verdict":"1"}}`, false},
		{`{"flow":{"verdict":"NOPE"}}`, false},
		{`{"flow":{"verdict":null,"uuid":null,"source":null,"l4":null,"time":null,"node_labels":null}}`, true},
		{`{"flow":{"uuid":null,"uuid":"x"}}`, false},
		{`{"flow":{"uuid":"x","uuid":"x"}}`, false},
		{`{"flow":{"node_name":"a","nodeName":"b"}}`, false},
		{`{"flow":{"l4":{"TCP":{},"UDP":{}}}}`, false},
		{`{"flow":{"l4":{"TCP":null,"UDP":{"source_port":53}}}}`, true},
		{`{"flow":{"l7":{"http":{"url":"http://x/?a=1\u0026b=\u003c2\u003e","headers":[{"key":"k","value":"\"v\"\\\/\b\f\n\r\t"}]}}}}`, true},
		{`{"flow":{"uuid":"\ud83d\ude42"}}`, false},
		{`{"flow":{"uuid":"\ud83d"}}`, false},
		{`{"flow":{"uuid":"\u00e9\u2028"}}`, true},
		{`{"flow":{"uuid":"\x"}}`, false},
		{"{\"flow\":{\"uuid\":\"a\x01\"}}", false},
		{"{\"flow\":{\"uuid\":\"a\xff\"}}", false},
		{"{\"flow\":{\"uuid\":\"\xc3\xa9\"}}", true},
		{`{"flow":{"\u0075uid":"x"}}`, false},
		{`{"flow":{"unknown":1}}`, false},
		{`{"flow":{"source":{"labels":["a",null]}}}`, false},
		{`{"flow":{"source":{"labels":["a",]}}}`, false},
		{`{"flow":{"source":{"labels":[],"workloads":[{},{"name":"w"}]}}}`, true},
		{`{"flow":{"is_reply":false,"extensions":null}}`, true},
		{`{"flow":{"extensions":{"@type":"type.googleapis.com/flow.Emitter","name":"e"}}}`, false},
		{`{"flow":{"reply":true,"Summary":"s","Type":"L7"}}`, true},
		{`{"flow":{"reply":1}}`, false},
		{`{"flow":{"reply":"true"}}`, false},
		{`{"flow":{"time":"2024-01-01T10:00:00+01:00"}}`, false},
		{`{"flow":{"time":"2024-01-01t10:00:00z"}}`, false},
		{`{"flow":{"time":"2024-02-30T10:00:00Z"}}`, false},
		{`{"flow":{"time":"2024-02-29T23:59:59.1Z"}}`, true},
		{`{"flow":{"time":"2023-02-29T10:00:00Z"}}`, false},
		{`{"flow":{"time":"2024-01-01T24:00:00Z"}}`, false},
		{`{"flow":{"time":"2024-01-01T10:00:60Z"}}`, false},
		{`{"flow":{"time":"2024-01-01T10:00:00.1234567891Z"}}`, false},
		{`{"flow":{"time":"2024-01-01T10:00:00.Z"}}`, false},
		{`{"flow":{"time":"0000-01-01T00:00:00Z"}}`, false},
		{`{"flow":{"time":"9999-12-31T23:59:59.999999999Z"}}`, true},
		{`{"flow":{"time":1}}`, false},
		// The envelope's time repeats the flow's, or does not.
		{`{"flow":{"time":"2024-01-01T10:00:00.5Z"},"time":"2024-01-01T10:00:00.5Z"}`, true},
		{`{"flow":{"time":"2024-01-01T10:00:00.5Z"},"time":"2024-01-01T10:00:00.50Z"}`, true},
		{`{"flow":{"time":"2024-01-01T10:00:00.5Z"},"time":"2024-01-01T10:00:01Z"}`, true},
		{`{"flow":{"time":"2023-02-29T10:00:00Z"},"time":"2023-02-29T10:00:00Z"}`, false},
		{`{"flow":{"time":"2024-01-01T10:00:00Z"},"time":"2023-02-29T10:00:00Z"}`, false},
		{`{"lost_events":{"source":"PERF_EVENT_RING_BUFFER","num_events_lost":"7","cpu":3,"first":"1970-01-01T00:00:00Z"},"node_name":"n"}`, true},
		{`{"lostEvents":{"cpu":"3","numEventsLost":7},"nodeName":"n"}`, true},
		{`{"lost_events":{"cpu":null}}`, true},
		{`{"flow":{},"lost_events":{}}`, false},
		{`{"flow":null,"lost_events":{}}`, true},
		{`{"agent_event":{"type":"AGENT_STARTED"},"node_name":"n"}`, false},
		{`{"debug_event":{}}`, false},
		{`{"node_status":{}}`, false},
		{`{"node_name":"n","time":"1970-01-01T00:00:01Z"}`, true},
		{`{}`, true},
		// Members out of field order, after a prefix of a longer name, with
		// JSON names and with whitespace before the colon: the lookup past
		// the canonical order.
		{`{"flow":{"uuid":"u","time":"2024-01-01T10:00:00Z","verdict":"DROPPED","Type":"L7","verdict":"DROPPED"}}`, false},
		{`{"flow":{"Summary":"s","uuid":"u","source_names":["a"],"source":{"namespace":"n"},"IP":{"ipVersion":"IPv6","source":"::1"}}}`, true},
		{`{"flow":{"source":{"pod_name":"p","labels":["l"],"ID":1,"podName":"q"}}}`, false},
		{`{"flow":{"source" :{"namespace":"n"},"destination":{"namespace" : "m","ID":2}}}`, true},
		{`{"flow":{"sourceNames":["a"],"source_names":["b"]}}`, false},
		{`{"flow":{"destination_names":["a"],"source_names":["b"],"node_labels":["c"]}}`, true},
		{`{"flow":{"uuid":"a\"b","uuid2":1}}`, false},
		{`{"flow":{"uuid":"0123456789abcdef\u00e9x","node_name":"\u2028\u2029abécdefgh€"}}`, true},
		{"{\"flow\":{\"uuid\":\"0123456\x7f89abcdef\"}}", true},
		{"{\"flow\":{\"uuid\":\"0123456789\x1fabcdef\"}}", false},
		{"{\"flow\":{\"uuid\":\"01234567\xe9abcdef\"}}", false},
		{`{"flow":{}}x`, false},
		{`{"flow":{}`, false},
		{`{"flow":{},}`, false},
		{`{,"flow":{}}`, false},
		{`[]`, false},
		{``, false},
		{`null`, false},
	}
	dec := new(observer.ExportEvent)
	for _, c := range cases {
		if fast := compareDecoders(t, []byte(c.line), dec); fast != c.fast {
			t.Errorf("fast path %v, want %v: %s", fast, c.fast, c.line)
		}
	}
}

// TestDecodeReusesStorage checks that decoding into the same event again
// keeps nested messages and that fields absent from the second line end up
// unset.
func TestDecodeReusesStorage(t *testing.T) {
	first := `{"flow":{"time":"2024-01-01T10:00:00Z","source":{"labels":["a","b"],"workloads":[{"name":"w"}]},"l4":{"TCP":{"flags":{"SYN":true}}},"is_reply":true,"uuid":"u"},"node_name":"n","time":"2024-01-01T10:00:00Z"}`
	second := `{"flow":{"source":{"namespace":"ns"},"l4":{"TCP":{"source_port":1}}}}`
	ev := new(observer.ExportEvent)
	if err := Unmarshal([]byte(first), ev); err != nil {
		t.Fatal(err)
	}
	f := ev.GetFlow()
	src, tcp := f.Source, f.L4.GetTCP()
	if err := Unmarshal([]byte(second), ev); err != nil {
		t.Fatal(err)
	}
	g := ev.GetFlow()
	if g != f || g.Source != src || g.L4.GetTCP() != tcp {
		t.Fatal("nested storage not reused")
	}
	var want observer.ExportEvent
	if err := protojson.Unmarshal([]byte(second), &want); err != nil {
		t.Fatal(err)
	}
	if !proto.Equal(ev, &want) {
		t.Fatalf("stale fields survived:\n got %v\nwant %v", ev, &want)
	}
	line := []byte(second)
	if allocs := testing.AllocsPerRun(100, func() {
		if err := Unmarshal(line, ev); err != nil {
			t.Fatal(err)
		}
	}); allocs > 1 {
		t.Fatalf("%v allocations per reused decode", allocs)
	}
}

// TestDecoderInt64 covers the int64 reader the generator emits for int64
// fields: both bounds, quoted and bare, and overflow falling back.
func TestDecoderInt64(t *testing.T) {
	tests := []struct {
		in   string
		want int64
		err  bool
	}{
		{in: `0`, want: 0},
		{in: `"42"`, want: 42},
		{in: `-7`, want: -7},
		{in: `9223372036854775807`, want: 1<<63 - 1},
		{in: `"-9223372036854775808"`, want: -1 << 63},
		{in: `9223372036854775808`, err: true},
		{in: `-9223372036854775809`, err: true},
		{in: `-0`, err: true},
		{in: `"12`, err: true},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			d := newDecoder([]byte(tt.in), arena{})
			got, err := d.int64()
			if tt.err {
				if err == nil {
					t.Fatalf("int64(%s) = %d, want an error", tt.in, got)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("int64(%s) = %d, %v; want %d", tt.in, got, err, tt.want)
			}
		})
	}
}

// TestSpecial8 checks the string scanner's word test against a byte-by-byte
// scan: the first flagged byte is the first byte that ends, escapes or needs
// checking in a JSON string, in every position and for every byte value.
func TestSpecial8(t *testing.T) {
	special := func(c byte) bool { return c == '"' || c == '\\' || c < 0x20 || c >= 0x80 }
	check := func(w [8]byte) {
		t.Helper()
		want := 8
		for i, c := range w {
			if special(c) {
				want = i
				break
			}
		}
		got := 8
		if m := special8(load8(string(w[:]), 0)); m != 0 {
			got = bits.TrailingZeros64(m) >> 3
		}
		if got != want {
			t.Fatalf("%q: first special byte %d, want %d", w[:], got, want)
		}
	}
	for pos := 0; pos < 8; pos++ {
		for c := 0; c < 256; c++ {
			for _, fill := range []byte{'a', ' ', '!', 0x7f, '#', 0x21} {
				w := [8]byte{}
				for i := range w {
					w[i] = fill
				}
				w[pos] = byte(c)
				check(w)
				// A special byte after it must not hide it, and one before
				// it must win.
				if pos < 7 {
					w[7] = 0x01
					check(w)
				}
				if pos > 0 {
					w[0] = 0x1f
					check(w)
				}
			}
		}
	}
	r := rand.New(rand.NewPCG(1, 2))
	for range 200000 {
		var w [8]byte
		for i := range w {
			w[i] = byte(r.Uint32())
			if r.IntN(4) != 0 {
				w[i] = byte(0x20 + r.IntN(0x60))
			}
		}
		check(w)
	}
}

// TestDecoderKeepsStrings decodes many random lines with one Decoder into
// events that are all kept, overwriting each line's buffer after it is
// decoded, and checks at the end that every event still equals protojson's
// decoding: no string refers to a line, and no block is written twice.
func TestDecoderKeepsStrings(t *testing.T) {
	var dec Decoder
	var lines [][]byte
	var got []*observer.ExportEvent
	buf := make([]byte, 0, 1<<16)
	for i := range 3000 {
		b := randflow.New(uint64(i), false)
		var line []byte
		switch {
		case i%7 == 0:
			// Long strings, plain or escaped, that fill a block or
			// get an allocation of their own.
			f := randflow.Enriched()
			f.Uuid = strings.Repeat("u", 500+i%3000)
			if i%2 == 0 {
				f.Summary = strings.Repeat("a&b<", 100+i%700)
			}
			line, _ = AppendExport(nil, f, nil, f.NodeName, f.Time)
		case i%3 == 0:
			f := b.Flow()
			line, _ = AppendExport(nil, f, nil, f.NodeName, f.Time)
		default:
			line, _ = AppendExport(nil, randflow.Enriched(), nil, b.String(), b.Timestamp())
		}
		if line == nil {
			continue
		}
		buf = append(buf[:0], line...)
		ev := new(observer.ExportEvent)
		if err := dec.Unmarshal(buf, ev); err != nil {
			t.Fatalf("line %d: %v\n%s", i, err, line)
		}
		for j := range buf {
			buf[j] = 'x'
		}
		lines, got = append(lines, line), append(got, ev)
	}
	for i, line := range lines {
		var want observer.ExportEvent
		if err := protojson.Unmarshal(line, &want); err != nil {
			t.Fatal(err)
		}
		if !proto.Equal(got[i], &want) {
			t.Fatalf("event %d changed after later lines\n got %v\nwant %v", i, got[i], &want)
		}
	}
}

// TestDecoderAllocations checks what a Decoder allocates per enriched line
// into reused storage: about one block of strings per four lines, and
// fewer bytes than the line.
func TestDecoderAllocations(t *testing.T) {
	f := randflow.Enriched()
	line, err := AppendExport(nil, f, nil, f.NodeName, f.Time)
	if err != nil {
		t.Fatal(err)
	}
	var dec Decoder
	ev := new(observer.ExportEvent)
	if err := dec.Unmarshal(line, ev); err != nil {
		t.Fatal(err)
	}
	const n = 400
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	for range n {
		if err := dec.Unmarshal(line, ev); err != nil {
			t.Fatal(err)
		}
	}
	runtime.ReadMemStats(&after)
	perLine := float64(after.TotalAlloc-before.TotalAlloc) / n
	t.Logf("%d-byte line: %.0f bytes and %.2f allocations per line", len(line), perLine, float64(after.Mallocs-before.Mallocs)/n)
	if perLine >= float64(len(line)) {
		t.Fatalf("%.0f bytes allocated per %d-byte line", perLine, len(line))
	}
	// Unmarshal, without a Decoder, makes one allocation for all the
	// strings, escaped ones (the sample's URL) included.
	if !bytes.Contains(line, []byte(`\u0026`)) {
		t.Fatalf("the sample has no escaped string: %s", line)
	}
	if allocs := testing.AllocsPerRun(100, func() {
		if err := Unmarshal(line, ev); err != nil {
			t.Fatal(err)
		}
	}); allocs != 1 {
		t.Fatalf("Unmarshal: %v allocations per line, want 1", allocs)
	}
}

// TestDecoderDropsOldElements decodes a flow with two workloads, then one
// without: the element the storage keeps beyond the list's new length no
// longer holds the first line's strings (which share that line's copy).
func TestDecoderDropsOldElements(t *testing.T) {
	dec := new(observer.ExportEvent)
	for _, line := range []string{
		`{"flow":{"source":{"workloads":[{"name":"one","kind":"Deployment"},{"name":"two","kind":"Job"}]}}}`,
		`{"flow":{"source":{"pod_name":"p"}}}`,
	} {
		if err := Unmarshal([]byte(line), dec); err != nil {
			t.Fatal(err)
		}
	}
	ws := dec.GetFlow().GetSource().Workloads
	if len(ws) != 0 {
		t.Fatalf("workloads = %v, want none", ws)
	}
	for i, w := range ws[:cap(ws)] {
		if w != nil && (w.Name != "" || w.Kind != "") {
			t.Errorf("kept %q/%q beyond the length, at %d", w.Name, w.Kind, i)
		}
	}
}
