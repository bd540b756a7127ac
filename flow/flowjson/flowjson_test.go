package flowjson

import (
	"bytes"
	"encoding/json"
	"fmt"
	"testing"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	flowpb "github.com/flowbus/flowbus/flow"
	"github.com/flowbus/flowbus/flow/flowjson/randflow"
	"github.com/flowbus/flowbus/flow/observer"
)

// reference is Hubble's exporter: protojson with proto names, re-encoded
// by encoding/json (compact, HTML-escaped).
func reference(env *observer.GetFlowsResponse) ([]byte, error) {
	raw, err := protojson.MarshalOptions{UseProtoNames: true}.Marshal(env)
	if err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	if err := json.Compact(&buf, raw); err != nil {
		return nil, err
	}
	var esc bytes.Buffer
	json.HTMLEscape(&esc, buf.Bytes())
	return esc.Bytes(), nil
}

func envelope(f *flowpb.Flow, l *flowpb.LostEvent, node string, t *timestamppb.Timestamp) *observer.GetFlowsResponse {
	env := &observer.GetFlowsResponse{NodeName: node, Time: t}
	switch {
	case f != nil:
		env.ResponseTypes = &observer.GetFlowsResponse_Flow{Flow: f}
	case l != nil:
		env.ResponseTypes = &observer.GetFlowsResponse_LostEvents{LostEvents: l}
	}
	return env
}

// fastDecode runs the decoder without the protojson fallback.
func fastDecode(line []byte, ev *observer.ExportEvent) error {
	d := newDecoder(line, fastArena)
	defer func() { fastArena = d.a }()
	if err := d.decodeExport(ev); err != nil {
		return err
	}
	if !d.end() {
		return errFallback
	}
	return nil
}

// fastArena is the strings' storage of fastDecode, shared by every call
// like a Decoder's, so the tests cross its blocks' boundaries.
var fastArena arena

// event is one random export line's content.
type event struct {
	f    *flowpb.Flow
	l    *flowpb.LostEvent
	node string
	t    *timestamppb.Timestamp
}

func randomEvent(b *randflow.Builder) event {
	var ev event
	switch n := b.R.IntN(10); {
	case n < 7:
		ev.f = b.Flow()
		ev.node = ev.f.NodeName
		ev.t = ev.f.Time
	case n < 9:
		ev.l = b.LostEvent()
		ev.node = b.String()
		ev.t = b.Timestamp()
	default:
		if b.R.IntN(2) == 0 {
			ev.f = b.Flow()
		}
		if b.R.IntN(2) == 0 {
			ev.node = b.String()
		}
		if b.R.IntN(2) == 0 {
			ev.t = b.Timestamp()
		}
	}
	return ev
}

// checkEvent compares the fast encoder with the reference and, when the
// line is valid, the decoders with protojson; it reports whether the
// reference accepted the event and whether the fast decoder took its
// fast path. dec is reused storage.
func checkEvent(t *testing.T, ev event, dec *observer.ExportEvent) (ok, fast bool) {
	t.Helper()
	want, wantErr := reference(envelope(ev.f, ev.l, ev.node, ev.t))
	got, err := AppendExport([]byte("prefix"), ev.f, ev.l, ev.node, ev.t)
	if (err != nil) != (wantErr != nil) {
		t.Fatalf("error mismatch: fast %v, reference %v\nflow: %v", err, wantErr, ev.f)
	}
	if err != nil {
		if string(got) != "prefix" {
			t.Fatalf("failed append changed dst: %q", got)
		}
		return false, false
	}
	if !bytes.HasPrefix(got, []byte("prefix")) || !bytes.Equal(got[6:], want) {
		t.Fatalf("encoding differs\nfast: %s\nref:  %s", got[6:], want)
	}
	line := want

	var ref observer.ExportEvent
	if err := protojson.Unmarshal(line, &ref); err != nil {
		t.Fatalf("protojson cannot decode the reference line: %v\n%s", err, line)
	}
	fastErr := fastDecode(line, dec)
	if fastErr != nil {
		if err := Unmarshal(line, dec); err != nil {
			t.Fatalf("Unmarshal: %v\n%s", err, line)
		}
	}
	if !proto.Equal(dec, &ref) {
		t.Fatalf("decoded differs (fast path %v)\nline: %s\nfast: %v\nref:  %v", fastErr == nil, line, dec, &ref)
	}
	again, err := AppendExport(nil, dec.GetFlow(), dec.GetLostEvents(), dec.NodeName, dec.Time)
	if err != nil || !bytes.Equal(again, line) {
		t.Fatalf("re-encoding the decoded line: %v\n got %s\nwant %s", err, again, line)
	}
	return true, fastErr == nil
}

// TestRandomEventsMatchReference is the equivalence test over fuzzed flows:
// byte-identical encoding, and decoding that equals protojson's.
func TestRandomEventsMatchReference(t *testing.T) {
	n := 20000
	if testing.Short() {
		n = 3000
	}
	var valid, fast, anys int
	dec := new(observer.ExportEvent) // reused: exercises storage reuse
	for i := range n {
		b := randflow.New(uint64(i), i%2 == 1)
		ev := randomEvent(b)
		ok, f := checkEvent(t, ev, dec)
		if ok {
			valid++
			if f {
				fast++
			} else if ev.f.GetExtensions() != nil {
				anys++
			}
		}
	}
	t.Logf("%d events: %d valid, %d decoded on the fast path, %d fell back for an Any", n, valid, fast, anys)
	if valid < n/2 {
		t.Fatalf("only %d of %d events valid", valid, n)
	}
	if fast+anys != valid {
		t.Fatalf("%d valid lines left the fast path without an Any", valid-fast-anys)
	}
}

func TestStringEscapingEveryByte(t *testing.T) {
	var cases []string
	for c := 0; c < 0x80; c++ {
		cases = append(cases, string(rune(c)), "x"+string(rune(c))+"y")
	}
	cases = append(cases, "\u2028", "\u2029", "a\u2028\u2029b", "é", "\U0001f642", "\ufffd",
		"\xff", "a\xc3", "\xed\xa0\x80", "\xf4\x90\x80\x80", "<>&", "")
	for _, s := range cases {
		f := &flowpb.Flow{Uuid: s, NodeLabels: []string{s}}
		ev := event{f: f, node: s}
		checkEvent(t, ev, new(observer.ExportEvent))
	}
}

func TestEdgeMessages(t *testing.T) {
	ts := func(s int64, n int32) *timestamppb.Timestamp { return &timestamppb.Timestamp{Seconds: s, Nanos: n} }
	cases := []event{
		{},
		{f: &flowpb.Flow{}},
		{l: &flowpb.LostEvent{}},
		{f: &flowpb.Flow{Time: ts(1, 0), NodeName: "my-node"}, node: "my-node", t: ts(1, 0)},
		{l: &flowpb.LostEvent{Source: flowpb.LostEventSource_PERF_EVENT_RING_BUFFER, NumEventsLost: 7, Cpu: wrapperspb.Int32(3)}, node: "n", t: ts(1704103200, 123456000)},
		{f: &flowpb.Flow{IsReply: wrapperspb.Bool(false), L4: &flowpb.Layer4{Protocol: &flowpb.Layer4_TCP{}}}},
		{f: &flowpb.Flow{L4: &flowpb.Layer4{Protocol: (*flowpb.Layer4_UDP)(nil)}}},
		{f: &flowpb.Flow{L4: &flowpb.Layer4{Protocol: (*flowpb.Layer4_TCP)(nil)}}},
		{f: &flowpb.Flow{L4: &flowpb.Layer4{Protocol: &flowpb.Layer4_TCP{TCP: &flowpb.TCP{}}}}},
		{f: &flowpb.Flow{L4: &flowpb.Layer4{Protocol: &flowpb.Layer4_UDP{}}}},
		{f: &flowpb.Flow{Destination: &flowpb.Endpoint{Labels: []string{}, Workloads: []*flowpb.Workload{}}}},
		{f: &flowpb.Flow{Source: &flowpb.Endpoint{Workloads: []*flowpb.Workload{nil, {}}}}},
		{f: &flowpb.Flow{DropReasonDesc: 250, Verdict: -1, Type: flowpb.FlowType_L7}},
		{f: &flowpb.Flow{Time: ts(-62135596800, 0)}},
		{f: &flowpb.Flow{Time: ts(253402300799, 999999999)}},
		{f: &flowpb.Flow{Time: ts(253402300800, 0)}},
		{f: &flowpb.Flow{Time: ts(0, 1e9)}},
		{f: &flowpb.Flow{Time: ts(-1, 0)}},
		{f: &flowpb.Flow{Time: ts(951782400, 10)}}, // 2000-02-29
		{f: &flowpb.Flow{SocketCookie: 1<<64 - 1, CgroupId: 1}},
		{f: &flowpb.Flow{EventType: &flowpb.CiliumEventType{Type: -2147483648, SubType: 2147483647}}},
	}
	for i, ev := range cases {
		t.Run(fmt.Sprint(i), func(t *testing.T) { checkEvent(t, ev, new(observer.ExportEvent)) })
	}
}

// TestTimestampsAgainstTime checks the calendar arithmetic over the whole
// range against package time.
func TestTimestampsAgainstTime(t *testing.T) {
	b := randflow.New(7, false)
	for range 200000 {
		ts := b.Timestamp()
		got, err := appendTimestamp(nil, ts.Seconds, ts.Nanos)
		if err != nil {
			t.Fatal(err)
		}
		want, _ := reference(&observer.GetFlowsResponse{Time: ts})
		if `{"time":`+string(got)+`}` != string(want) {
			t.Fatalf("%v: got %s, want %s", ts, got, want)
		}
		var back timestamppb.Timestamp
		d := newDecoder(got, arena{})
		if err := d.timestamp(&back); err != nil || back.Seconds != ts.Seconds || back.Nanos != ts.Nanos {
			t.Fatalf("decoding %s: %v %v", got, &back, err)
		}
	}
}
