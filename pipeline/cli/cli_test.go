package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"runtime/debug"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	flowpb "github.com/flowbus/flowbus/flow"
	"github.com/flowbus/flowbus/pipeline"
	"github.com/flowbus/flowbus/pipeline/config"
)

// Test-only components: a finite source and a sink that counts.

type cliSource struct {
	Count int `yaml:"count" default:"0" doc:"how many flows to emit"`
}

func (s *cliSource) Run(ctx context.Context, out pipeline.Output) error {
	for i := 0; i < s.Count; {
		b := pipeline.NewBatch()
		for j := 0; j < 50 && i < s.Count; j++ {
			b.Next().FlowStorage().Verdict = flowpb.Verdict_FORWARDED
			i++
		}
		if err := out.Emit(ctx, b); err != nil {
			return nil
		}
	}
	return nil
}

type cliSink struct {
	Timeout config.Duration `yaml:"timeout"`
}

func (cliSink) Write(context.Context, *pipeline.Batch) (int, error) { return 0, nil }
func (cliSink) Close(context.Context) error                         { return nil }

type cliPass struct{}

func (cliPass) Process(*pipeline.Batch) {}

func init() {
	pipeline.RegisterSource(pipeline.Spec{Type: "cli-count", Summary: "test source", Example: "type: cli-count\ncount: 3\n"}, func(b *pipeline.Build, s *cliSource) (*cliSource, error) {
		return s, nil
	})
	pipeline.RegisterTransform(pipeline.Spec{Type: "cli-pass", Summary: "test transform"}, pipeline.DropsNone, func(b *pipeline.Build, _ *struct{}) (cliPass, error) {
		return cliPass{}, nil
	})
	pipeline.RegisterSink(pipeline.Spec{Type: "cli-sink", Summary: "test sink"}, func(b *pipeline.Build, s *cliSink) (*cliSink, error) {
		return s, nil
	})
}

func execute(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var o, e bytes.Buffer
	code = Main(context.Background(), args, &o, &e)
	return code, o.String(), e.String()
}

func writeConfig(t *testing.T, src string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "pipeline.yaml")
	if err := os.WriteFile(path, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestComponents(t *testing.T) {
	code, out, _ := execute(t, "components")
	if code != 0 || !regexp.MustCompile(`(?m)^source +cli-count +test source$`).MatchString(out) ||
		!regexp.MustCompile(`(?m)^sink +cli-sink +test sink$`).MatchString(out) {
		t.Errorf("components: exit %d\n%s", code, out)
	}
	code, out, _ = execute(t, "components", "cli-count")
	for _, want := range []string{"cli-count (source): test source", "Keys (besides type):", "  count  (integer, default 0)\n      how many flows to emit", "Example:\n\n  type: cli-count\n  count: 3\n"} {
		if code != 0 || !strings.Contains(out, want) {
			t.Errorf("components cli-count: exit %d, output lacks %q:\n%s", code, want, out)
		}
	}
	code, _, errOut := execute(t, "components", "nope")
	if code != 1 || !strings.Contains(errOut, `unknown component type "nope"`) {
		t.Errorf("components nope: exit %d, %q", code, errOut)
	}
}

func TestValidateReportsEachError(t *testing.T) {
	path := writeConfig(t, `sources:
  gen:
    type: cli-count
    count: 10
    colour: blue
transforms:
  a: {type: cli-pass, inputs: [gen, b]}
  b: {type: cli-pass, inputs: [a]}
sinks:
  out:
    type: cli-sink
    inputs: [b, missing]
    timeout: [1s]
`)
	code, stdout, stderr := execute(t, "validate", "-c", path)
	if code != 1 || stdout != "" {
		t.Errorf("exit %d, stdout %q", code, stdout)
	}
	want := []string{
		path + `:5:5: source "gen" (cli-count): unknown key "colour" (valid keys: count)`,
		path + `:8:32: transform "b": input "a" closes a cycle: a -> b -> a`,
		path + `:12:17: sink "out": unknown input "missing" (sources and transforms: gen, a, b)`,
		path + `:13:14: sink "out" (cli-sink): expected a duration like 1s or 500ms, got a list`,
	}
	got := strings.Split(strings.TrimSuffix(stderr, "\n"), "\n")
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("stderr:\n%s\nwant:\n%s", stderr, strings.Join(want, "\n"))
	}
	for _, line := range got {
		if !regexp.MustCompile(`^.+:\d+:\d+: .+$`).MatchString(line) {
			t.Errorf("not FILE:LINE:COL: %q", line)
		}
	}
}

func TestValidateOK(t *testing.T) {
	path := writeConfig(t, "sources: {g: {type: cli-count}}\nsinks: {s: {type: cli-sink, inputs: [g]}}\n")
	code, stdout, stderr := execute(t, "validate", "--config", path)
	if code != 0 || stdout != path+": ok (1 sources, 0 transforms, 1 sinks)\n" || stderr != "" {
		t.Errorf("exit %d, stdout %q, stderr %q", code, stdout, stderr)
	}
	code, _, stderr = execute(t, "validate", "-c", filepath.Join(t.TempDir(), "none.yaml"))
	if code != 1 || !strings.Contains(stderr, "no such file") {
		t.Errorf("missing file: exit %d, stderr %q", code, stderr)
	}
}

// Bare flowbus runs the pipeline; a finite one drains, prints the summary
// line and exits 0.
func TestRunPrintsSummary(t *testing.T) {
	path := writeConfig(t, `
metrics: {listen: "127.0.0.1:0"}
sources: {g: {type: cli-count, count: 1234}}
transforms: {p: {type: cli-pass, inputs: [g]}}
sinks: {s: {type: cli-sink, inputs: [p]}}
`)
	for _, args := range [][]string{{"-c", path}, {"run", "-c", path, "--log-level", "warn"}} {
		code, _, stderr := execute(t, args...)
		lines := strings.Split(strings.TrimSuffix(stderr, "\n"), "\n")
		last := lines[len(lines)-1]
		if code != 0 || last != "flowbus: received=1234 delivered=1234 filtered=0 sampled=0 rate_limited=0 lost=0" {
			t.Errorf("%q: exit %d, stderr:\n%s", args, code, stderr)
		}
	}
	if code, _, stderr := execute(t, "run", "-c", path, "--log-level", "loud"); code != 2 || !strings.Contains(stderr, "--log-level") {
		t.Errorf("bad log level: exit %d, %q", code, stderr)
	}
	if code, _, _ := execute(t, "run", "extra"); code != 2 {
		t.Errorf("extra argument: exit %d", code)
	}
}

func TestVersion(t *testing.T) {
	code, stdout, _ := execute(t, "version")
	want := "go " + strings.TrimPrefix(runtime.Version(), "go") + "\nschema " + flowpb.SchemaVersion + "\n"
	if code != 0 || !strings.HasPrefix(stdout, "flowbus ") || !strings.HasSuffix(stdout, want) {
		t.Errorf("exit %d, stdout %q", code, stdout)
	}
}

func TestCPUProfile(t *testing.T) {
	path := writeConfig(t, `
metrics: {listen: ""}
sources: {g: {type: cli-count, count: 100}}
sinks: {s: {type: cli-sink, inputs: [g]}}
`)
	prof := filepath.Join(t.TempDir(), "cpu.out")
	if code, _, stderr := execute(t, "run", "-c", path, "--cpuprofile", prof); code != 0 {
		t.Fatalf("exit %d, stderr:\n%s", code, stderr)
	}
	if fi, err := os.Stat(prof); err != nil || fi.Size() == 0 {
		t.Fatalf("no profile written: %v", err)
	}
	if code, _, stderr := execute(t, "run", "-c", path, "--cpuprofile", filepath.Join(t.TempDir(), "no", "such", "dir")); code == 0 || !strings.Contains(stderr, "--cpuprofile") {
		t.Errorf("unwritable profile: exit %d, %q", code, stderr)
	}
	var o, e bytes.Buffer
	root := NewCommand(&o, &e)
	root.SetArgs([]string{"run", "--help"})
	if err := root.Execute(); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(o.String()+e.String(), "cpuprofile") {
		t.Errorf("--cpuprofile is shown in the help")
	}
}

// cliForever emits a batch of 10 flows every millisecond until stopped.
type cliForever struct{}

func (cliForever) Run(ctx context.Context, out pipeline.Output) error {
	for {
		b := pipeline.NewBatch()
		for range 10 {
			b.Next().FlowStorage().Verdict = flowpb.Verdict_FORWARDED
		}
		if err := out.Emit(ctx, b); err != nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(time.Millisecond):
		}
	}
}

func init() {
	pipeline.RegisterSource(pipeline.Spec{Type: "cli-forever", Summary: "test source that runs until stopped"}, func(b *pipeline.Build, _ *struct{}) (cliForever, error) {
		return cliForever{}, nil
	})
}

// lockedBuffer is a bytes.Buffer safe for a writer and a reader.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// SIGHUP reloads (a valid configuration, then an invalid one) and SIGTERM
// drains; the summary counts both generations and the reloads.
func TestSignals(t *testing.T) {
	path := writeConfig(t, "metrics: {listen: \"\"}\nsources: {g: {type: cli-forever}}\nsinks: {s: {type: cli-sink, inputs: [g]}}\n")
	var stderr lockedBuffer
	done := make(chan int)
	go func() { done <- Main(context.Background(), []string{"run", "-c", path}, io.Discard, &stderr) }()
	waitFor := func(s string, n int) {
		t.Helper()
		for deadline := time.Now().Add(20 * time.Second); strings.Count(stderr.String(), s) < n; time.Sleep(time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("no %q in:\n%s", s, stderr.String())
			}
		}
	}
	// The signal handlers are installed before the pipeline runs.
	waitFor("pipeline running", 1)
	if err := os.WriteFile(path, []byte("metrics: {listen: \"\"}\nsources: {h: {type: cli-forever}}\nsinks: {s: {type: cli-sink, inputs: [h]}}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	syscall.Kill(os.Getpid(), syscall.SIGHUP)
	waitFor("reload done", 1)
	if err := os.WriteFile(path, []byte("sources: {h: {type: cli-forever, x: 1}}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	syscall.Kill(os.Getpid(), syscall.SIGHUP)
	waitFor("invalid configuration", 1)
	syscall.Kill(os.Getpid(), syscall.SIGTERM)
	if code := <-done; code != 0 {
		t.Fatalf("exit %d:\n%s", code, stderr.String())
	}
	if !strings.Contains(stderr.String(), `error="`+path+`:1:34: source \"h\" (cli-forever): unknown key \"x\"`) {
		t.Errorf("no positioned error in:\n%s", stderr.String())
	}
	last := regexp.MustCompile(`(?m)^flowbus: received=(\d+) delivered=(\d+) filtered=0 sampled=0 rate_limited=0 lost=0 reloads=1 reloads_failed=1$`).FindStringSubmatch(stderr.String())
	if last == nil || last[1] != last[2] || last[1] == "0" {
		t.Errorf("summary:\n%s", stderr.String())
	}
}

// The go command stamps its own version (a tag or a pseudo-version that
// names the commit) when it builds in a checkout; appending the revision to
// it again gave v0.0.0-…-1d085909b787+1d085909b787.
func TestBuildVersion(t *testing.T) {
	rev := debug.BuildSetting{Key: "vcs.revision", Value: "1d085909b787a1b2c3d4e5f60718293a4b5c6d7e"}
	clean := debug.BuildSetting{Key: "vcs.modified", Value: "false"}
	dirty := debug.BuildSetting{Key: "vcs.modified", Value: "true"}
	for _, tc := range []struct {
		main     string
		settings []debug.BuildSetting
		want     string
	}{
		{"v0.0.0-20261203131709-1d085909b787", []debug.BuildSetting{rev, clean}, "v0.0.0-20261203131709-1d085909b787"},
		{"v0.0.0-20261203131709-1d085909b787+dirty", []debug.BuildSetting{rev, dirty}, "v0.0.0-20261203131709-1d085909b787+dirty"},
		{"v0.2.0", []debug.BuildSetting{rev, clean}, "v0.2.0"},
		{"(devel)", []debug.BuildSetting{rev, clean}, "devel+1d085909b787"},
		{"(devel)", []debug.BuildSetting{rev, dirty}, "devel+1d085909b787.dirty"},
		{"(devel)", nil, "devel"},
		{"", nil, "devel"},
	} {
		if got := buildVersion(tc.main, tc.settings); got != tc.want {
			t.Errorf("buildVersion(%q, %v) = %q, want %q", tc.main, tc.settings, got, tc.want)
		}
		// Well-formed: one token, no repeated revision.
		got := buildVersion(tc.main, tc.settings)
		if strings.ContainsAny(got, " \n") || strings.Count(got, "1d085909b787") > 1 {
			t.Errorf("buildVersion(%q) = %q: not well-formed", tc.main, got)
		}
	}
}

func TestVersionFlag(t *testing.T) {
	_, want, _ := execute(t, "version")
	for _, flag := range []string{"--version", "-v"} {
		code, stdout, stderr := execute(t, flag)
		if code != 0 || stdout != want || stderr != "" {
			t.Errorf("%s: exit %d, stdout %q (want %q), stderr %q", flag, code, stdout, want, stderr)
		}
	}
}

func TestLogFormat(t *testing.T) {
	path := writeConfig(t, `
metrics: {listen: "127.0.0.1:0"}
sources: {g: {type: cli-count, count: 10}}
sinks: {s: {type: cli-sink, inputs: [g]}}
`)
	code, _, stderr := execute(t, "run", "-c", path, "--log-format", "json", "--log-level", "debug")
	if code != 0 {
		t.Fatalf("exit %d, stderr:\n%s", code, stderr)
	}
	var logged int
	for _, line := range strings.Split(strings.TrimSuffix(stderr, "\n"), "\n") {
		if strings.HasPrefix(line, "flowbus: ") {
			continue // the summary lines
		}
		var rec map[string]any
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Errorf("not a JSON log line: %q: %v", line, err)
			continue
		}
		if rec["level"] == nil || rec["msg"] == nil || rec["time"] == nil {
			t.Errorf("JSON log line without time, level or msg: %q", line)
		}
		logged++
	}
	if logged == 0 {
		t.Errorf("no log lines at debug level:\n%s", stderr)
	}
	if code, _, stderr := execute(t, "run", "-c", path, "--log-format", "xml"); code != 2 || !strings.Contains(stderr, "--log-format") {
		t.Errorf("bad log format: exit %d, %q", code, stderr)
	}
}

func TestCompletion(t *testing.T) {
	for _, shell := range []string{"bash", "zsh", "fish", "powershell"} {
		code, stdout, stderr := execute(t, "completion", shell)
		if code != 0 || !strings.Contains(stdout, "flowbus") || stderr != "" {
			t.Errorf("completion %s: exit %d, stderr %q, %d bytes", shell, code, stderr, len(stdout))
		}
	}
}
