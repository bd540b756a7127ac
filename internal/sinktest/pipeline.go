package sinktest

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/proto"

	flowpb "github.com/flowbus/flowbus/flow"
	"github.com/flowbus/flowbus/flow/observer"
	"github.com/flowbus/flowbus/pipeline"
)

// Phased is a source for runtime tests: it emits Phases[i] batches of Per
// flows in phase i, numbering the flows from 0, and calls Before[i-1]
// before each phase after the first (a test hook that may block, e.g. to
// start or end a broker outage). Lost[i], when set, is a number of events
// the source reports lost (as a perf ring overflow) at the start of phase i.
type Phased struct {
	Phases []int
	Per    int
	Before []func()
	Lost   []uint64
}

// Total is the number of events p emits or reports lost: the summary's
// received.
func (p *Phased) Total() int {
	n := 0
	for _, b := range p.Phases {
		n += b * p.Per
	}
	for _, l := range p.Lost {
		n += int(l)
	}
	return n
}

// Run implements pipeline.Source.
func (p *Phased) Run(ctx context.Context, out pipeline.Output) error {
	n := 0
	for i, batches := range p.Phases {
		if i > 0 && i-1 < len(p.Before) && p.Before[i-1] != nil {
			p.Before[i-1]()
		}
		if i < len(p.Lost) && p.Lost[i] > 0 {
			out.Lost(flowpb.LostEventSource_PERF_EVENT_RING_BUFFER, 0, p.Lost[i])
		}
		for k := 0; k < batches; k++ {
			if err := out.Emit(ctx, Batch(n, p.Per)); err != nil {
				return nil
			}
			n += p.Per
		}
	}
	return nil
}

// RegisterPhased registers typ as a source type whose every instance is p.
func RegisterPhased(typ string, p *Phased) {
	pipeline.RegisterSource(pipeline.Spec{Type: typ, Summary: "a test source emitting batches in phases"}, func(*pipeline.Build, *struct{}) (*Phased, error) { return p, nil })
}

// Metric sums the values of the counters named name in reg.
func Metric(reg *prometheus.Registry, name string) float64 {
	mfs, err := reg.Gather()
	if err != nil {
		return -1
	}
	sum := 0.0
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			sum += m.GetCounter().GetValue()
		}
	}
	return sum
}

// RunLossesRefused runs a pipeline from src (a Phased source registered
// as the source type typ) into one sink whose destination refuses its
// LostEvents while it takes the flows: sink is the sink's YAML (its type
// and settings, at the left margin); the pipeline gives it the source's
// output as protobuf through a buffer that blocks when full, so a wedged
// sink would freeze the source. src's second phase waits for the sink's
// first failed LostEvent. RunLossesRefused checks that the run ends well
// within its 20s (the drain does not wait out shutdown_timeout for
// LostEvents the destination refuses), that every flow is delivered and
// every loss counted, and that the summary reconciles; it returns the
// summary's totals.
func RunLossesRefused(t *testing.T, typ string, src *Phased, sink string) pipeline.Counts {
	t.Helper()
	reg := prometheus.NewRegistry()
	src.Before = []func(){
		nil,
		func() { // the flush after the first loss has failed
			for deadline := time.Now().Add(10 * time.Second); Metric(reg, "flowbus_sink_lost_events_failed_total") < 1; time.Sleep(2 * time.Millisecond) {
				if time.Now().After(deadline) {
					t.Errorf("timed out waiting for a failed LostEvent")
					return
				}
			}
		},
	}
	sink = "    " + strings.ReplaceAll(strings.TrimSpace(sink), "\n", "\n    ")
	cfg := fmt.Sprintf(`
node_name: n1
lost_event_interval: 20ms
shutdown_timeout: 30s
metrics: {listen: ""}
sources:
  gen: {type: %s}
sinks:
  bus:
    inputs: [gen]
    encoding: protobuf
    buffer: {events: 1024, when_full: block}
%s
`, typ, sink)
	path := filepath.Join(t.TempDir(), "pipeline.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	p, err := pipeline.Load(path, pipeline.Options{Registry: reg})
	if err != nil {
		t.Fatal(err)
	}
	// A wedged sink would freeze the source for good: stop it after a while
	// so that the test fails instead of hanging.
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	start := time.Now()
	sum, err := p.Run(ctx)
	if err != nil {
		t.Fatal(err)
	}
	took := time.Since(start)
	tot := sum.Total
	t.Logf("summary: %s in %v", tot, took)
	if took > 15*time.Second {
		t.Errorf("Run took %v: the drain waited for LostEvents the destination refuses", took)
	}
	var flows, lost uint64
	for _, n := range src.Phases {
		flows += uint64(n * src.Per)
	}
	for _, n := range src.Lost {
		lost += n
	}
	if !tot.Reconciles() || tot.Received != flows+lost || tot.Delivered != flows || tot.Lost != lost {
		t.Fatalf("summary %s, want received=%d delivered=%d lost=%d", tot, flows+lost, flows, lost)
	}
	return tot
}

// CheckStream checks what a sink published in a run (payloads: binary
// observer.GetFlowsResponse messages) against the run's summary: every
// delivered flow is there exactly once, and the LostEvents count exactly the
// summary's lost.
func CheckStream(t testing.TB, payloads [][]byte, tot pipeline.Counts) {
	t.Helper()
	flows, lost := CountStream(t, payloads)
	if flows != tot.Delivered {
		t.Errorf("the bus holds %d flows, summary delivered=%d", flows, tot.Delivered)
	}
	if lost != tot.Lost {
		t.Errorf("LostEvents on the bus count %d, summary lost=%d", lost, tot.Lost)
	}
}

// CountStream counts the flows in payloads (binary
// observer.GetFlowsResponse messages), failing t on a flow published twice,
// and adds up the events its LostEvents report.
func CountStream(t testing.TB, payloads [][]byte) (flows, lost uint64) {
	t.Helper()
	seen := map[string]bool{}
	for _, p := range payloads {
		var env observer.GetFlowsResponse
		if err := proto.Unmarshal(p, &env); err != nil {
			t.Fatal(err)
		}
		if f := env.GetFlow(); f != nil {
			if seen[f.Uuid] {
				t.Errorf("flow %s published twice", f.Uuid)
			}
			seen[f.Uuid] = true
			flows++
		} else {
			lost += env.GetLostEvents().GetNumEventsLost()
		}
	}
	return flows, lost
}

// Get fetches url and returns the status code and body.
func Get(t testing.TB, url string) (int, string) {
	t.Helper()
	res, err := http.Get(url)
	if err != nil {
		t.Errorf("GET %s: %v", url, err)
		return 0, ""
	}
	defer res.Body.Close()
	body, _ := io.ReadAll(res.Body)
	return res.StatusCode, string(body)
}
