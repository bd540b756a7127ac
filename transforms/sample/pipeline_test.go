package sample_test

import (
	"bufio"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/flowbus/flowbus/pipeline"
	"github.com/flowbus/flowbus/pipeline/config"
	_ "github.com/flowbus/flowbus/sinks/file"
	_ "github.com/flowbus/flowbus/sources/generate"
	_ "github.com/flowbus/flowbus/transforms/fieldmask"
	_ "github.com/flowbus/flowbus/transforms/ratelimit"
	_ "github.com/flowbus/flowbus/transforms/redact"
	_ "github.com/flowbus/flowbus/transforms/sample"
)

// TestPipeline runs generated flows through redact, sample, ratelimit and
// fieldmask in the pipeline runtime: the summary counts sampled and
// rate-limited flows and reconciles, and the file sink gets what was
// delivered, masked and redacted.
func TestPipeline(t *testing.T) {
	dir := t.TempDir()
	out := filepath.Join(dir, "out.json")
	cfg := `
node_name: n1
metrics: {listen: ""}
sources:
  gen: {type: generate, count: 50000, seed: 1}
transforms:
  red:
    type: redact
    inputs: [gen]
    ip: {mode: truncate, ipv4_prefix: 8, ipv6_prefix: 16}
  samp:
    type: sample
    inputs: [red]
    rate: 10
    keep: [{verdict: [DROPPED]}]
  rl:
    type: ratelimit
    inputs: [samp]
    events_per_second: 100
    burst: 10
  mask:
    type: fieldmask
    inputs: [rl]
    include: [time, node_name, verdict, IP.source, IP.destination]
sinks:
  out: {type: file, inputs: [mask], path: ` + out + `, encoding: json}
`
	c, err := config.Parse([]byte(cfg), func(string) (string, bool) { return "", false })
	if err != nil {
		t.Fatal(err)
	}
	p, err := pipeline.New(c, pipeline.Options{})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	sum, err := p.Run(ctx)
	if err != nil {
		t.Fatal(err)
	}
	tot := sum.Total
	t.Log(tot)
	if !tot.Reconciles() || tot.Received != 50000 || tot.Sampled < 40000 || tot.RateLimited == 0 || tot.Delivered == 0 || tot.Filtered != 0 || tot.Lost != 0 {
		t.Errorf("summary %v", tot)
	}

	fh, err := os.Open(out)
	if err != nil {
		t.Fatal(err)
	}
	defer fh.Close()
	lines := 0
	sc := bufio.NewScanner(fh)
	for sc.Scan() {
		lines++
		var ev struct {
			Flow map[string]json.RawMessage `json:"flow"`
		}
		if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
			t.Fatalf("line %d: %v", lines, err)
		}
		for k := range ev.Flow {
			switch k {
			case "time", "node_name", "verdict", "IP":
			default:
				t.Fatalf("line %d has %s: %s", lines, k, sc.Text())
			}
		}
		var ip struct{ Source, Destination string }
		if err := json.Unmarshal(ev.Flow["IP"], &ip); err != nil {
			t.Fatalf("line %d: IP: %v", lines, err)
		}
		for _, a := range []string{ip.Source, ip.Destination} {
			// A flow without addresses has "IP":{}: the mask creates it.
			if a != "" && !strings.HasSuffix(a, ".0.0.0") && !strings.HasSuffix(a, "::") {
				t.Fatalf("line %d: address %q not truncated", lines, a)
			}
		}
	}
	if uint64(lines) != tot.Delivered {
		t.Errorf("%d lines, %d delivered", lines, tot.Delivered)
	}
}
