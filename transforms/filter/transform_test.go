package filter_test

import (
	"bufio"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/protojson"
	"gopkg.in/yaml.v3"

	flowpb "github.com/flowbus/flowbus/flow"
	"github.com/flowbus/flowbus/flow/observer"
	"github.com/flowbus/flowbus/flowfilter"
	"github.com/flowbus/flowbus/internal/testflow"
	"github.com/flowbus/flowbus/pipeline"
	"github.com/flowbus/flowbus/pipeline/config"
	_ "github.com/flowbus/flowbus/sinks/discard"
	_ "github.com/flowbus/flowbus/sinks/file"
	_ "github.com/flowbus/flowbus/sources/file"
	"github.com/flowbus/flowbus/transforms/filter"
)

// loadPipeline builds a pipeline from a config document, as the runtime
// does.
func loadPipeline(t testing.TB, cfg string) (*pipeline.Pipeline, error) {
	t.Helper()
	c, err := config.Parse([]byte(cfg), func(string) (string, bool) { return "", false })
	if err != nil {
		return nil, err
	}
	return pipeline.New(c, pipeline.Options{})
}

func TestTransformConfigErrors(t *testing.T) {
	tests := []struct {
		transform string
		line, col int
		msg       string
	}{
		{"{type: filter, inputs: [in], allow: [{source_ip: [\"1.2.3\"]}]}", 4, 56, `allow[0]: source_ip[0] "1.2.3": invalid IP address`},
		{"{type: filter, inputs: [in], deny: [{}, {protocol: [tcp, ftp]}]}", 4, 63, `deny[1]: protocol[1] "ftp": unknown protocol`},
		{"{type: filter, inputs: [in], allow: [{experimental: {cel_expression: [\"_flow.verdict\"]}}]}", 4, 76, `must be bool`},
		{"{type: filter, inputs: [in], allow: [{nope: 1}]}", 4, 44, `unknown FlowFilter field "nope"`},
		{"{type: filter, inputs: [in], allwo: []}", 4, 35, `allwo`},
		{"{type: filter, inputs: [in], allow: {source_pod: [a]}}", 4, 42, `want a list`},
	}
	for _, tt := range tests {
		t.Run(tt.msg, func(t *testing.T) {
			src := "metrics: {listen: \"\"}\nsources: {in: {type: file, path: /dev/null}}\ntransforms:\n  f: " + tt.transform +
				"\nsinks: {out: {type: discard, inputs: [f]}}\n"
			_, err := loadPipeline(t, src)
			if err == nil {
				t.Fatal("no error")
			}
			es := config.Positioned(err, nil)
			found := false
			for _, e := range es {
				if strings.Contains(e.Msg, tt.msg) {
					found = true
					if e.Line != tt.line || e.Col != tt.col {
						t.Errorf("%q at %d:%d, want %d:%d", e.Msg, e.Line, e.Col, tt.line, tt.col)
					}
				}
			}
			if !found {
				t.Errorf("errors %v do not mention %q", err, tt.msg)
			}
		})
	}
}

func TestProcessKeepsLostEvents(t *testing.T) {
	f, err := flowfilter.New([]*flowpb.FlowFilter{{Verdict: []flowpb.Verdict{flowpb.Verdict_DROPPED}}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	tr := filter.NewTransform(f)
	b := pipeline.NewBatch()
	defer b.Release()
	for i := 0; i < 10; i++ {
		e := b.Next()
		if i%3 == 0 {
			e.Lost = &flowpb.LostEvent{NumEventsLost: uint64(i + 1)}
			continue
		}
		fl := e.FlowStorage()
		fl.Verdict = flowpb.Verdict_FORWARDED
		if i%2 == 0 {
			fl.Verdict = flowpb.Verdict_DROPPED
		}
		fl.Uuid = fmt.Sprint(i)
	}
	tr.Process(b)
	var got []string
	for _, e := range b.Events {
		if e.Lost != nil {
			got = append(got, fmt.Sprintf("lost%d", e.Lost.NumEventsLost))
		} else {
			got = append(got, e.Flow.Uuid)
		}
	}
	if want := "lost1 2 lost4 4 lost7 8 lost10"; strings.Join(got, " ") != want {
		t.Errorf("kept %v, want %s", got, want)
	}
	// A filter that removes everything still keeps the LostEvents.
	none, _ := flowfilter.New(nil, []*flowpb.FlowFilter{{}})
	filter.NewTransform(none).Process(b)
	if b.Len() != 4 {
		t.Errorf("after deny-all: %d events, want the 4 LostEvents", b.Len())
	}
}

// writeCorpus writes n varied flows (and a LostEvent every 100 lines) as
// Hubble export JSON lines, and returns the flows.
func writeCorpus(t testing.TB, path string, n int) []*flowpb.Flow {
	t.Helper()
	r := rand.New(rand.NewPCG(7, 8))
	out, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	w := bufio.NewWriter(out)
	var flows []*flowpb.Flow
	opts := protojson.MarshalOptions{UseProtoNames: true}
	for i := 0; i < n; i++ {
		var resp *observer.GetFlowsResponse
		if i%100 == 99 {
			resp = &observer.GetFlowsResponse{ResponseTypes: &observer.GetFlowsResponse_LostEvents{LostEvents: &flowpb.LostEvent{
				Source: flowpb.LostEventSource_HUBBLE_RING_BUFFER, NumEventsLost: 3}}, NodeName: "n1"}
		} else {
			fl := filterTestFlow(r, i)
			flows = append(flows, fl)
			resp = &observer.GetFlowsResponse{ResponseTypes: &observer.GetFlowsResponse_Flow{Flow: fl}, NodeName: fl.NodeName, Time: fl.Time}
		}
		b, err := opts.Marshal(resp)
		if err != nil {
			t.Fatal(err)
		}
		w.Write(b)
		w.WriteByte('\n')
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
	return flows
}

const e2eFilter = `
    allow:
      - verdict: [DROPPED]
      - source_pod: ["kube-system/"]
        protocol: [udp]
      - experimental:
          cel_expression: ["has(_flow.l4.TCP) && _flow.l4.TCP.destination_port == 443u"]
    deny:
      - source_label: ["reserved:host"]
`

// TestFileFilterFile runs file → filter → file and checks that exactly the
// flows the filter passes, and every LostEvent, come out, in order.
func TestFileFilterFile(t *testing.T) {
	dir := t.TempDir()
	in, out := filepath.Join(dir, "in.jsonl"), filepath.Join(dir, "out.jsonl")
	flows := writeCorpus(t, in, 2000)
	cfg := fmt.Sprintf(`metrics: {listen: ""}
sources: {in: {type: file, path: %q}}
transforms:
  f:
    type: filter
    inputs: [in]%s
sinks: {out: {type: file, inputs: [f], path: %q, encoding: json}}
`, in, e2eFilter, out)
	p, err := loadPipeline(t, cfg)
	if err != nil {
		t.Fatal(err)
	}
	sum, err := p.Run(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	// The expected result, from the filter itself.
	var doc yaml.Node
	if err := yaml.Unmarshal([]byte(strings.ReplaceAll(e2eFilter, "\n    ", "\n")), &doc); err != nil {
		t.Fatal(err)
	}
	root := doc.Content[0]
	allow, err := flowfilter.ParseFilters(root.Content[1])
	if err != nil {
		t.Fatal(err)
	}
	deny, err := flowfilter.ParseFilters(root.Content[3])
	if err != nil {
		t.Fatal(err)
	}
	f, err := flowfilter.New(allow, deny)
	if err != nil {
		t.Fatal(err)
	}
	var want []string
	lost := 0
	for i, fl := range flows {
		if f.Match(fl) {
			want = append(want, fl.Uuid)
		}
		if i%99 == 98 {
			want = append(want, "lost")
			lost++
		}
	}
	data, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, line := range strings.Split(strings.TrimSpace(string(data)), "\n") {
		var resp observer.GetFlowsResponse
		if err := protojson.Unmarshal([]byte(line), &resp); err != nil {
			t.Fatalf("output line %q: %v", line, err)
		}
		if resp.GetLostEvents() != nil {
			got = append(got, "lost")
		} else {
			got = append(got, resp.GetFlow().GetUuid())
		}
	}
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("output differs: got %d events, want %d", len(got), len(want))
	}
	kept := len(want) - lost
	if kept == 0 || kept == len(flows) {
		t.Errorf("the filter kept %d of %d flows: not a useful test", kept, len(flows))
	}
	if sum.Total.Filtered != uint64(len(flows)-kept) {
		t.Errorf("summary %v: filtered %d, want %d", sum, sum.Total.Filtered, len(flows)-kept)
	}
}

// filterTestFlow makes a varied flow with a unique uuid.
func filterTestFlow(r *rand.Rand, i int) *flowpb.Flow {
	fl := testflow.Random(r)
	fl.Uuid = fmt.Sprintf("flow-%d", i)
	return fl
}

// TestTransformAllErrors checks that every invalid filter is reported, for
// `flowbus validate`.
func TestTransformAllErrors(t *testing.T) {
	for _, tc := range []struct {
		name, transform string
		want            []string
	}{
		{"build errors", `{type: filter, inputs: [in], allow: [{source_ip: [x]}, {}, {protocol: [ftp]}], deny: [{node_name: [a/b/c]}]}`,
			[]string{"4:56: transform \"f\" (filter): allow[0]: source_ip[0]", "4:77: transform \"f\" (filter): allow[2]: protocol[0]", "4:105: transform \"f\" (filter): deny[0]: node_name[0]"}},
		{"parse errors", `{type: filter, inputs: [in], allow: [{nope: 1}, {verdict: [X]}], deny: [5]}`,
			[]string{`4:44: transform "f" (filter): unknown FlowFilter field "nope"`, `4:65: transform "f" (filter): field "verdict": unknown Verdict "X"`, `4:78: transform "f" (filter): filter 0: want a FlowFilter mapping`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			src := "metrics: {listen: \"\"}\nsources: {in: {type: file, path: /dev/null}}\ntransforms:\n  f: " + tc.transform +
				"\nsinks: {out: {type: discard, inputs: [f]}}\n"
			_, err := loadPipeline(t, src)
			es := config.Positioned(err, nil)
			if len(es) != len(tc.want) {
				t.Fatalf("got %d errors, want %d:\n%v", len(es), len(tc.want), err)
			}
			for i, e := range es {
				if !strings.Contains(e.Error(), tc.want[i]) {
					t.Errorf("error %d: %q does not contain %q", i, e.Error(), tc.want[i])
				}
			}
		})
	}
}
