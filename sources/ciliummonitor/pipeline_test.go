package ciliummonitor_test

import (
	"context"
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/protojson"

	"github.com/flowbus/flowbus/flow/datapath"
	"github.com/flowbus/flowbus/flow/monitor"
	"github.com/flowbus/flowbus/flow/observer"
	"github.com/flowbus/flowbus/pipeline"
	"github.com/flowbus/flowbus/pipeline/config"
	_ "github.com/flowbus/flowbus/sinks/file"
)

// TestPipelineReplay runs a recorded monitor stream through a pipeline
// into a Hubble JSON file: flows with their node name, in order, and the
// perf loss as a lost_events line with its CPU.
func TestPipelineReplay(t *testing.T) {
	dir := t.TempDir()
	rec := filepath.Join(dir, "monitor.gob")
	out := filepath.Join(dir, "out.jsonl")
	r, err := monitor.CreateRecorder(rec)
	if err != nil {
		t.Fatal(err)
	}
	const n = 1500
	for i := 0; i < n; i++ {
		if err := r.Sample(i%2, traceSample(uint16(1024+i))); err != nil {
			t.Fatal(err)
		}
		if i == 700 {
			if err := r.Lost(1, 9); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	cfg := fmt.Sprintf(`node_name: kind-worker
metrics: {listen: ""}
sources: {mon: {type: cilium-monitor, path: %q}}
sinks: {out: {type: file, inputs: [mon], path: %q, encoding: json}}
`, rec, out)
	c, err := config.Parse([]byte(cfg), func(string) (string, bool) { return "", false })
	if err != nil {
		t.Fatal(err)
	}
	p, err := pipeline.New(c, pipeline.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(data)), "\n")
	if len(lines) != n+1 {
		t.Fatalf("%d lines, want %d", len(lines), n+1)
	}
	port, losses := 1024, 0
	for i, line := range lines {
		var resp observer.GetFlowsResponse
		if err := protojson.Unmarshal([]byte(line), &resp); err != nil {
			t.Fatalf("line %d: %v", i+1, err)
		}
		// The runtime reports losses in the sink's stream per interval,
		// not in place.
		if le := resp.GetLostEvents(); le != nil {
			if le.NumEventsLost != 9 || le.Cpu.GetValue() != 1 || le.Source.String() != "PERF_EVENT_RING_BUFFER" {
				t.Fatalf("line %d: want the perf loss, got %s", i+1, line)
			}
			losses++
			continue
		}
		f := resp.GetFlow()
		if f == nil || resp.NodeName != "kind-worker" || f.NodeName != "kind-worker" {
			t.Fatalf("line %d: %s", i+1, line)
		}
		if got := f.GetL4().GetTCP().GetSourcePort(); got != uint32(port) {
			t.Fatalf("line %d: source port %d, want %d (order)", i+1, got, port)
		}
		port++
		if !strings.Contains(line, `"Summary":"TCP Flags: SYN"`) || !strings.Contains(line, `"trace_observation_point":"TO_ENDPOINT"`) {
			t.Fatalf("line %d: %s", i+1, line)
		}
	}
	if losses != 1 {
		t.Errorf("%d lost_events lines, want 1", losses)
	}
}

// traceSample is a v2 TraceNotify (to-endpoint, new connection) of an
// Ethernet/IPv4/TCP SYN from the given source port.
func traceSample(sport uint16) []byte {
	ne := binary.NativeEndian
	pkt := make([]byte, 14+20+20)
	pkt[12] = 0x08
	ip := pkt[14:]
	ip[0], ip[3], ip[9] = 0x45, 40, 6
	copy(ip[12:], []byte{10, 0, 0, 1})
	copy(ip[16:], []byte{10, 0, 0, 2})
	binary.BigEndian.PutUint16(ip[20:], sport)
	binary.BigEndian.PutUint16(ip[22:], 80)
	ip[32], ip[33] = 5<<4, 0x02
	b := make([]byte, 56, 56+len(pkt))
	b[0] = datapath.MessageTypeTrace
	ne.PutUint16(b[12:], uint16(len(pkt)))
	b[14] = 2
	return append(b, pkt...)
}
