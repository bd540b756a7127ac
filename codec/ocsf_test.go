package codec

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	flowpb "github.com/flowbus/flowbus/flow"
	"github.com/flowbus/flowbus/flow/flowjson"
	"github.com/flowbus/flowbus/flow/observer"
	"github.com/flowbus/flowbus/internal/cputime"
	"github.com/flowbus/flowbus/pipeline"
	"github.com/flowbus/flowbus/sources/generate"
)

// The attributes OCSF 1.3.0 requires of a Network Activity event (class
// 4001): the base event's (classification: activity_id, category_uid,
// class_uid, type_uid; occurrence: time; severity_id, metadata), the
// network category's (dst_endpoint), and action_id of the
// security_control profile the encoding declares. Objects: metadata
// requires product and version, product requires vendor_name and name or
// uid, a network endpoint at least one of its identifying attributes, and
// connection_info requires direction_id.
var (
	ocsfBaseRequired    = []string{"activity_id", "category_uid", "class_uid", "type_uid", "time", "severity_id", "metadata"}
	ocsfNetworkRequired = append(slices.Clone(ocsfBaseRequired), "dst_endpoint", "action_id")
	ocsfMetadataReq     = []string{"product", "version"}
	ocsfProductReq      = []string{"vendor_name"}
	ocsfProductOneOf    = []string{"name", "uid"}
	ocsfEndpointOneOf   = []string{"ip", "uid", "name", "hostname", "svc_name", "instance_uid", "interface_uid", "interface_name"}
	ocsfConnInfoReq     = []string{"direction_id"}

	// Enumerations of OCSF 1.3.0 for the attributes the encoding sets.
	ocsfEnums = map[string][]int{
		"activity_id":    {0, 1, 2, 3, 4, 5, 6, 7, 99},
		"severity_id":    {0, 1, 2, 3, 4, 5, 6, 99},
		"action_id":      {0, 1, 2, 99},
		"disposition_id": {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 99},
	}
)

// validateOCSF checks one encoded event against the schema's required
// attributes, enumerations and the classification arithmetic.
func validateOCSF(line []byte) error {
	var ev map[string]any
	if err := json.Unmarshal(line, &ev); err != nil {
		return fmt.Errorf("not JSON: %v", err)
	}
	class, ok := ev["class_uid"].(float64)
	if !ok {
		return fmt.Errorf("class_uid missing")
	}
	required := ocsfBaseRequired
	switch class {
	case 4001:
		required = ocsfNetworkRequired
		if ev["category_uid"] != 4.0 {
			return fmt.Errorf("category_uid %v, want 4", ev["category_uid"])
		}
	case 0:
		if ev["category_uid"] != 0.0 {
			return fmt.Errorf("category_uid %v, want 0", ev["category_uid"])
		}
	default:
		return fmt.Errorf("class_uid %v", class)
	}
	for _, k := range required {
		if _, ok := ev[k]; !ok {
			return fmt.Errorf("required attribute %s missing", k)
		}
	}
	for k, allowed := range ocsfEnums {
		if v, ok := ev[k]; ok {
			f, isNum := v.(float64)
			if !isNum || !slices.Contains(allowed, int(f)) {
				return fmt.Errorf("%s = %v is not in the enumeration", k, v)
			}
		}
	}
	if ev["type_uid"] != class*100+ev["activity_id"].(float64) {
		return fmt.Errorf("type_uid %v is not class_uid*100+activity_id", ev["type_uid"])
	}
	if tm, ok := ev["time"].(float64); !ok || tm < 1e12 {
		return fmt.Errorf("time %v is not milliseconds since the epoch", ev["time"])
	}
	md, ok := ev["metadata"].(map[string]any)
	if !ok {
		return fmt.Errorf("metadata is not an object")
	}
	if err := hasAll(md, "metadata", ocsfMetadataReq); err != nil {
		return err
	}
	if md["version"] != OCSFVersion {
		return fmt.Errorf("metadata.version %v", md["version"])
	}
	prod, _ := md["product"].(map[string]any)
	if err := hasAll(prod, "metadata.product", ocsfProductReq); err != nil {
		return err
	}
	if err := hasOne(prod, "metadata.product", ocsfProductOneOf); err != nil {
		return err
	}
	for _, ep := range []string{"src_endpoint", "dst_endpoint"} {
		if v, ok := ev[ep]; ok {
			m, _ := v.(map[string]any)
			if err := hasOne(m, ep, ocsfEndpointOneOf); err != nil {
				return err
			}
		}
	}
	if v, ok := ev["connection_info"]; ok {
		m, _ := v.(map[string]any)
		if err := hasAll(m, "connection_info", ocsfConnInfoReq); err != nil {
			return err
		}
		if d := m["direction_id"].(float64); !slices.Contains([]float64{0, 1, 2, 3, 99}, d) {
			return fmt.Errorf("connection_info.direction_id %v", d)
		}
	}
	if v, ok := ev["unmapped"]; ok {
		if _, ok := v.(map[string]any); !ok {
			return fmt.Errorf("unmapped is not an object")
		}
	}
	return nil
}

func hasAll(m map[string]any, what string, keys []string) error {
	for _, k := range keys {
		if _, ok := m[k]; !ok {
			return fmt.Errorf("%s: required attribute %s missing", what, k)
		}
	}
	return nil
}

func hasOne(m map[string]any, what string, keys []string) error {
	for _, k := range keys {
		if _, ok := m[k]; ok {
			return nil
		}
	}
	return fmt.Errorf("%s: none of %s", what, strings.Join(keys, ", "))
}

// Every generated flow (every protocol, L7, drops, both IP versions) and
// LostEvents encode to valid OCSF; the mapped fields carry the flow's
// values, and raw_data is the Hubble export line.
func TestOCSF(t *testing.T) {
	g := generate.NewGenerator(11)
	b := pipeline.NewBatch()
	defer b.Release()
	enc := NewOCSF(true)
	var buf []byte
	now := int64(1764000000123456789)
	seen := map[float64]int{}
	for i := range 5000 {
		b.Truncate(0)
		e := b.Next()
		g.Fill(e, now+int64(i)*1000)
		var err error
		if buf, err = enc.Append(buf[:0], e); err != nil {
			t.Fatal(err)
		}
		if buf[len(buf)-1] != '\n' {
			t.Fatalf("no newline: %s", buf)
		}
		line := buf[:len(buf)-1]
		if err := validateOCSF(line); err != nil {
			t.Fatalf("flow %d: %v\n%s", i, err, line)
		}
		var ev struct {
			ActivityID float64 `json:"activity_id"`
			Time       int64
			ActionID   int `json:"action_id"`
			Src        struct {
				IP   string
				Port uint32
				Name string
			} `json:"src_endpoint"`
			Dst struct {
				IP   string
				Port uint32
			} `json:"dst_endpoint"`
			Conn struct {
				ProtocolName string `json:"protocol_name"`
				TCPFlags     *int   `json:"tcp_flags"`
			} `json:"connection_info"`
			Metadata struct{ UID string }
			Unmapped struct {
				Verdict string
				Source  struct {
					Namespace string
					Labels    []string
				}
			}
			RawData string `json:"raw_data"`
		}
		if err := json.Unmarshal(line, &ev); err != nil {
			t.Fatal(err)
		}
		f := e.Flow
		seen[ev.ActivityID]++
		if ev.Time != f.Time.AsTime().UnixMilli() || ev.Src.IP != f.IP.GetSource() || ev.Dst.IP != f.IP.GetDestination() ||
			ev.Metadata.UID != f.Uuid || ev.Unmapped.Verdict != f.Verdict.String() || ev.Src.Name != f.Source.GetPodName() ||
			ev.Unmapped.Source.Namespace != f.Source.GetNamespace() || !slices.Equal(ev.Unmapped.Source.Labels, f.Source.GetLabels()) {
			t.Fatalf("flow %d: mapped %+v\nfrom %v", i, ev, f)
		}
		if (f.Verdict == flowpb.Verdict_DROPPED) != (ev.ActionID == 2) {
			t.Fatalf("flow %d: verdict %v, action_id %d", i, f.Verdict, ev.ActionID)
		}
		if tcp := f.L4.GetTCP(); tcp != nil {
			if ev.Conn.ProtocolName != "tcp" || ev.Dst.Port != tcp.DestinationPort || ev.Src.Port != tcp.SourcePort || ev.Conn.TCPFlags == nil {
				t.Fatalf("flow %d: TCP mapped %+v from %v", i, ev, tcp)
			}
		}
		var raw observer.ExportEvent
		if err := flowjson.Unmarshal([]byte(ev.RawData), &raw); err != nil || raw.GetFlow().GetUuid() != f.Uuid {
			t.Fatalf("flow %d: raw_data %v: %.200s", i, err, ev.RawData)
		}
	}
	if seen[6] == 0 || seen[1]+seen[2]+seen[3] == 0 {
		t.Errorf("activities seen: %v", seen)
	}

	// A LostEvent is a Base Event; a flow without endpoints still names
	// its destination.
	b.Truncate(0)
	lost := b.Next()
	lost.Lost = &flowpb.LostEvent{Source: flowpb.LostEventSource_OBSERVER_EVENTS_QUEUE, NumEventsLost: 7, Cpu: wrapperspb.Int32(1)}
	lost.NodeName, lost.Time = "n1", timestamppb.New(time.Unix(1764000000, 0))
	bare := b.Next()
	bare.FlowStorage().Time = timestamppb.New(time.Unix(1764000000, 0))
	for _, e := range []*pipeline.Event{lost, bare} {
		for _, enc := range []OCSF{NewOCSF(false), NewOCSF(true)} {
			out, err := enc.Append(nil, e)
			if err != nil {
				t.Fatal(err)
			}
			if err := validateOCSF(out[:len(out)-1]); err != nil {
				t.Errorf("%v: %v\n%s", e, err, out)
			}
		}
	}
	out, _ := NewOCSF(false).Append(nil, lost)
	if !strings.Contains(string(out), `"class_uid":0,`) || !strings.Contains(string(out), `"num_events_lost":7`) {
		t.Errorf("LostEvent: %s", out)
	}
}

// Strings are escaped as JSON requires, invalid UTF-8 replaced.
func TestOCSFStrings(t *testing.T) {
	for _, s := range []string{"plain", `q"uote\back`, "ctl\x01\n\t", "ünïcode ✓", "bad\xffutf8", "<html>&"} {
		got := appendJSONString(nil, s)
		var back string
		if err := json.Unmarshal(got, &back); err != nil {
			t.Fatalf("%q: %s: %v", s, got, err)
		}
		want := strings.ToValidUTF8(s, "\uFFFD")
		if back != want {
			t.Errorf("%q: round-trips to %q", s, back)
		}
	}
}

func BenchmarkEncodeOCSF(b *testing.B) {
	g := generate.NewGenerator(1)
	batch := pipeline.NewBatch()
	defer batch.Release()
	for i := range 512 {
		g.Fill(batch.Next(), 1_764_072_000_000_000_000+int64(i))
	}
	enc := NewOCSF(false)
	var buf []byte
	var err error
	bytes := 0
	b.ReportAllocs()
	cpu := cpuTime()
	i := 0
	for b.Loop() {
		if buf, err = enc.Append(buf[:0], &batch.Events[i%512]); err != nil {
			b.Fatal(err)
		}
		bytes += len(buf)
		i++
	}
	b.ReportMetric(float64(bytes)/float64(i), "bytes/flow")
	b.ReportMetric(float64(cpuTime()-cpu)/float64(i), "cpu-ns/op")
}

// cpuTime is the CPU time the process used, in ns: on a shared machine it
// shows the cost of a benchmark better than the wall-clock time does.
func cpuTime() int64 { return int64(cputime.Process()) }
