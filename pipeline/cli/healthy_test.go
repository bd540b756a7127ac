package cli

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/flowbus/flowbus/pipeline"
)

// awaySink stands for a broker sink whose broker is away at start: it
// fails Start only when the run requires healthy sinks.
type awaySink struct{ require bool }

func (s *awaySink) Start(context.Context) error {
	if s.require {
		return errors.New("broker unreachable")
	}
	return nil
}
func (*awaySink) Write(context.Context, *pipeline.Batch) (int, error) { return 0, nil }
func (*awaySink) Close(context.Context) error                         { return nil }

func init() {
	pipeline.RegisterSink(pipeline.Spec{Type: "cli-away", Summary: "test sink whose broker is away"}, func(b *pipeline.Build, _ *struct{}) (*awaySink, error) {
		return &awaySink{require: b.RequireHealthy}, nil
	})
}

// TestRequireHealthy: --require-healthy reaches the sinks (Build), so a
// sink whose broker is away makes the run exit 1; without it the run
// starts.
func TestRequireHealthy(t *testing.T) {
	path := writeConfig(t, `
metrics: {listen: ""}
sources: {g: {type: cli-count, count: 10}}
sinks: {s: {type: cli-away, inputs: [g]}}
`)
	for _, args := range [][]string{{"run", "--require-healthy", "-c", path}, {"--require-healthy", "-c", path}} {
		code, _, stderr := execute(t, args...)
		if code != 1 || !strings.Contains(stderr, "broker unreachable") {
			t.Errorf("%q: exit %d, stderr %q; want exit 1 naming the start failure", args, code, stderr)
		}
	}
	if code, _, stderr := execute(t, "run", "-c", path); code != 0 || !strings.Contains(stderr, "received=10 delivered=10") {
		t.Errorf("without --require-healthy: exit %d, stderr %q", code, stderr)
	}
}
