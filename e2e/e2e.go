// Package e2e measures whole pipelines: configurations written in YAML,
// loaded and run by the real runtime with the real components (sources,
// transforms, sinks, and in-process peers such as kfake and an embedded
// NATS server). Its benchmarks report flows per second, CPU time per flow
// and allocations per flow; README.md ("Performance") has the command and
// the figures. The helpers here make the Hubble export files the
// benchmarks and the whole-process measurement read, and take the process's
// CPU time and resident memory.
package e2e

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	// Every component type, as in the binary.
	_ "github.com/flowbus/flowbus/components/all"
	"github.com/flowbus/flowbus/internal/cputime"
	"github.com/flowbus/flowbus/pipeline"
	"github.com/flowbus/flowbus/pipeline/config"
)

// Build parses a pipeline configuration (no ${VAR} substitution) and
// builds it, with relative paths taken from dir.
func Build(yamlText, dir string) (*pipeline.Pipeline, error) {
	c, err := config.Parse([]byte(yamlText), func(string) (string, bool) { return "", false })
	if err != nil {
		return nil, err
	}
	c.Dir = dir
	return pipeline.New(c, pipeline.Options{})
}

// Run builds and runs a pipeline to its end.
func Run(ctx context.Context, yamlText, dir string) (*pipeline.Summary, error) {
	p, err := Build(yamlText, dir)
	if err != nil {
		return nil, err
	}
	return p.Run(ctx)
}

// GenerateExport writes n generated flows (seeded, so the file is the same
// every time) to path as a Hubble export file (JSON lines), through the
// generate source and the json file sink: realistic enriched flows of every
// kind the generator makes.
func GenerateExport(path string, n int, seed uint64) error {
	s, err := Run(context.Background(), fmt.Sprintf(`
node_name: bench
metrics: {listen: ""}
sources:
  g: {type: generate, count: %d, seed: %d}
sinks:
  out: {type: file, inputs: [g], path: %q, encoding: json}
`, n, seed, path), "")
	if err != nil {
		return fmt.Errorf("generate %s: %w", path, err)
	}
	if s.Total.Delivered != uint64(n) {
		return fmt.Errorf("generate %s: wrote %d flows, want %d", path, s.Total.Delivered, n)
	}
	return nil
}

// CPUTime is the CPU time (user + system) the process has used.
func CPUTime() time.Duration { return cputime.Process() }

// RSS returns the process's resident set size (VmRSS) in bytes.
func RSS() (uint64, error) {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, err := strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			if err != nil {
				return 0, fmt.Errorf("VmRSS %q: %w", line, err)
			}
			return kb << 10, nil
		}
	}
	if err := sc.Err(); err != nil {
		return 0, err
	}
	return 0, fmt.Errorf("no VmRSS in /proc/self/status")
}
