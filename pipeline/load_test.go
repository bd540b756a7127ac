package pipeline_test

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/flowbus/flowbus/pipeline"
	"github.com/flowbus/flowbus/pipeline/config"
)

func loadErrors(t *testing.T, src string) []string {
	t.Helper()
	resetTestComponents()
	path := filepath.Join(t.TempDir(), "p.yaml")
	if err := os.WriteFile(path, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := pipeline.Load(path, pipeline.Options{})
	if err == nil {
		return nil
	}
	es, ok := err.(config.Errors)
	if !ok {
		t.Fatalf("got %T %v, want config.Errors", err, err)
	}
	var lines []string
	for _, e := range es {
		if e.File != path {
			t.Errorf("error without the file: %v", e)
		}
		lines = append(lines, strings.TrimPrefix(e.Error(), path+":"))
	}
	return lines
}

func TestLoadErrors(t *testing.T) {
	for _, tc := range []struct {
		name, src string
		want      []string // "LINE:COL: substring"
	}{
		{"the four of validate", `
sources:
  gen: {type: test-count, cuont: 5}
transforms:
  a: {type: test-odd, inputs: [gen, b]}
  b: {type: test-odd, inputs: [a]}
sinks:
  out: {type: test-rec, inputs: [a, nope], delay: fast}
`, []string{
			`3:27: source "gen" (test-count): unknown key "cuont" (valid keys: ack, batch, count, done, fail, hold, lost_every, odds)`,
			`6:32: transform "b": input "a" closes a cycle: a -> b -> a`,
			`8:37: sink "out": unknown input "nope" (sources and transforms: gen, a, b)`,
			`8:51: sink "out" (test-rec): invalid duration "fast"`,
		}},
		{"unknown type", `
sources:
  gen: {type: kafka}
sinks:
  out: {type: test-rec, inputs: [gen]}
`, []string{`3:15: unknown source type "kafka" (known source types: `}},
		{"missing type and inputs", `
sources:
  gen: {count: 1}
sinks:
  out: {type: test-rec}
`, []string{`3:3: source "gen" has no type`, `3:3: source "gen" is not an input`, `5:3: sink "out" has no inputs`}},
		{"sink as input", `
sources:
  gen: {type: test-count}
sinks:
  a: {type: test-rec, inputs: [gen]}
  b: {type: test-rec, inputs: [a]}
`, []string{`6:32: sink "b": input "a" is a sink`}},
		{"top level", `
buffer: {events: 0, when_full: later}
shutdown_timeout: soon
bogus: 1
sources: {}
sinks:
`, []string{
			`2:18: buffer events must be at least 1`,
			`2:32: when_full must be block, drop_newest or drop_oldest`,
			`3:19: invalid duration "soon"`,
			`4:1: unknown key "bogus" (valid keys: buffer, lost_event_interval, metrics, node_name, shutdown_timeout, sinks, sources, transforms)`,
			`5:10: the pipeline needs at least one source`,
			`6:7: the pipeline needs at least one sink`,
		}},
		{"encoding and buffer override", `
sources:
  gen: {type: test-count}
sinks:
  out: {type: test-rec, inputs: [gen], encoding: xml, buffer: {events: many}}
`, []string{`5:50: sink "out": encoding must be json, protobuf or ocsf`, `5:72: expected an integer`}},
		{"encoding mapping", `
sources:
  gen: {type: test-count}
sinks:
  a: {type: test-rec, inputs: [gen], encoding: {type: json, raw_data: true}}
  b: {type: test-rec, inputs: [gen], encoding: {type: ocsf, raw: true}}
  c: {type: test-rec, inputs: [gen], encoding: {raw_data: yes}}
  d: {type: test-rec, inputs: [gen], encoding: {type: ocsf, raw_data: true}}
`, []string{`5:48: sink "a": encoding.raw_data applies to the ocsf encoding only`, `6:61: sink "b": unknown key encoding.raw (known: type, raw_data)`, `7:59: sink "c": encoding.raw_data must be true or false`}},
		{"duplicate names", `
sources:
  x: {type: test-count}
sinks:
  x: {type: test-rec, inputs: [x]}
`, []string{`3:3: source "x" is not an input`, `5:3: sink name "x" is already used by a source (line 3)`}},
		{"yaml syntax", "sources:\n  a: [\n", []string{`2:1: invalid YAML`}},
		{"unset env", "node_name: ${FLOWBUS_TEST_UNSET_VAR}\n", []string{"1:1: the pipeline needs at least one source", "1:1: the pipeline needs at least one sink", `1:12: environment variable FLOWBUS_TEST_UNSET_VAR is not set`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := loadErrors(t, tc.src)
			if len(got) != len(tc.want) {
				t.Fatalf("got %d errors:\n%s\nwant %d", len(got), strings.Join(got, "\n"), len(tc.want))
			}
			for i, w := range tc.want {
				if !strings.Contains(got[i], w) {
					t.Errorf("error %d = %q, want %q", i, got[i], w)
				}
			}
		})
	}
}

func TestEnvSubstitution(t *testing.T) {
	t.Setenv("FLOWBUS_TEST_COUNT", "7")
	t.Setenv("FLOWBUS_TEST_NODE", "node-a")
	p := load(t, `
node_name: ${FLOWBUS_TEST_NODE}
metrics: {listen: "${FLOWBUS_TEST_LISTEN:-}"}
sources:
  gen:
    type: test-count
    count: "${FLOWBUS_TEST_COUNT}"
    batch: ${FLOWBUS_TEST_BATCH:-3}
sinks:
  out: {type: test-rec, inputs: [gen]}
`)
	if s := run(t, p, context.Background()); s.Total.Delivered != 7 {
		t.Errorf("summary %v", s)
	}
	// Without a reference, a quoted value stays a string.
	got := loadErrors(t, `
sources:
  gen: {type: test-count, count: "7"}
sinks:
  out: {type: test-rec, inputs: [gen]}
`)
	if len(got) != 1 || !strings.Contains(got[0], `expected an integer, got string "7"`) {
		t.Errorf("got %q", got)
	}
	c, err := config.Parse([]byte(`
node_name: ${FLOWBUS_TEST_NODE}$$x
sources:
  gen: {type: test-count, count: ${FLOWBUS_TEST_COUNT}}
sinks:
  out: {type: test-rec, inputs: [gen]}
`), os.LookupEnv)
	if err != nil || c.NodeName != "node-a$x" || c.Metrics.Listen != config.DefaultMetricsListen {
		t.Errorf("parse: %v %+v", err, c)
	}
	if v := config.Find(c.Sources[0].Node, "count"); v.ShortTag() != "!!int" || v.Value != "7" || v.Line != 4 {
		t.Errorf("count node %+v", v)
	}
}

// posSink's constructor reports its errors with Build.Errorf.
type posOptions struct {
	TLS *struct {
		CAFile string `yaml:"ca_file"`
	} `yaml:"tls"`
	Mode string `yaml:"mode" default:"fast"`
}

func init() {
	pipeline.RegisterSink(pipeline.Spec{Type: "test-pos", Summary: "test sink with positioned constructor errors"}, func(b *pipeline.Build, o *posOptions) (*lifeSink, error) {
		switch {
		case o.Mode != "fast":
			return nil, b.Errorf("mode", "mode %q: want fast", o.Mode)
		case o.TLS == nil:
			return nil, b.Errorf("tls.ca_file", "tls.ca_file is needed")
		case o.TLS.CAFile != "ca.pem":
			return nil, b.Errorf("tls.ca_file", "tls.ca_file %q: want ca.pem", o.TLS.CAFile)
		}
		return &lifeSink{}, nil
	})
}

// Build.Errorf positions a constructor's error at the value of a dotted
// key path, at the deepest node found when a key is absent, and the
// defaults of the spec apply before the constructor runs.
func TestConstructorErrorPositions(t *testing.T) {
	got := loadErrors(t, `metrics: {listen: ""}
sources: {gen: {type: test-count}}
sinks:
  a: {type: test-pos, inputs: [gen], tls: {ca_file: other.pem}}
  b: {type: test-pos, inputs: [gen]}
  c: {type: test-pos, inputs: [gen], tls: {ca_file: ca.pem}, mode: slow}
  d: {type: test-pos, inputs: [gen], tls: {ca_file: ca.pem}}
`)
	want := []string{
		`4:53: sink "a" (test-pos): tls.ca_file "other.pem": want ca.pem`,
		`5:6: sink "b" (test-pos): tls.ca_file is needed`,
		`6:68: sink "c" (test-pos): mode "slow": want fast`,
	}
	if !slices.Equal(got, want) {
		t.Errorf("errors:\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}
