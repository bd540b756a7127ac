package config

import (
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"
)

type rotate struct {
	MaxSizeMB  int  `yaml:"max_size_mb"`
	MaxBackups uint `yaml:"max_backups"`
	Compress   bool `yaml:"compress"`
}

type common struct {
	Name string `yaml:"name"`
}

type opts struct {
	common   `yaml:",inline"`
	Path     string            `yaml:"path"`
	Count    uint64            `yaml:"count"`
	Rate     float64           `yaml:"rate"`
	Seed     int64             `yaml:"seed"`
	Small    int8              `yaml:"small"`
	Follow   bool              `yaml:"follow"`
	Timeout  Duration          `yaml:"timeout"`
	Brokers  []string          `yaml:"brokers"`
	Headers  map[string]string `yaml:"headers"`
	Rotate   *rotate           `yaml:"rotate"`
	Nested   rotate            `yaml:"nested"`
	Allow    []yaml.Node       `yaml:"allow"`
	Raw      *yaml.Node        `yaml:"raw"`
	Any      any               `yaml:"any"`
	Required string            `yaml:"must,required"`
	Skipped  string            `yaml:"-"`
}

func parse(t *testing.T, src string) *yaml.Node {
	t.Helper()
	var doc yaml.Node
	if err := yaml.Unmarshal([]byte(src), &doc); err != nil {
		t.Fatalf("parse: %v", err)
	}
	return &doc
}

func TestDecodeValid(t *testing.T) {
	n := parse(t, `
name: x
must: here
path: /tmp/out
count: 10
rate: 2.5
seed: -3
small: 127
follow: true
timeout: 1m30s
brokers: [a:9092, b:9092]
headers: {x: "1", y: two}
rotate: {max_size_mb: 5, max_backups: 2, compress: false}
nested:
  max_size_mb: 7
allow:
  - {source_pod: ["kube-system/"]}
  - {verdict: [DROPPED]}
raw: {anything: [1, 2]}
any: {k: [1, true]}
`)
	var o opts
	if err := Decode(n, &o); err != nil {
		t.Fatal(err)
	}
	want := opts{
		common:   common{Name: "x"},
		Required: "here",
		Path:     "/tmp/out", Count: 10, Rate: 2.5, Seed: -3, Small: 127, Follow: true,
		Timeout: Duration(90 * time.Second),
		Brokers: []string{"a:9092", "b:9092"},
		Headers: map[string]string{"x": "1", "y": "two"},
		Rotate:  &rotate{MaxSizeMB: 5, MaxBackups: 2},
		Nested:  rotate{MaxSizeMB: 7},
		Any:     map[string]any{"k": []any{1, true}},
	}
	got := o
	got.Allow, got.Raw = nil, nil
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %+v\nwant %+v", got, want)
	}
	if len(o.Allow) != 2 || o.Allow[0].Kind != yaml.MappingNode || o.Allow[1].Line != 18 {
		t.Errorf("allow nodes not passed through: %+v", o.Allow)
	}
	if o.Raw == nil || o.Raw.Kind != yaml.MappingNode || o.Raw.Line != 19 || o.Raw.Column != 6 {
		t.Errorf("raw node not passed through: %+v", o.Raw)
	}
	var f struct {
		X string `yaml:"x"`
	}
	if err := Decode(parse(t, "x: ~"), &f); err != nil || f.X != "" {
		t.Errorf("null: %v %q", err, f.X)
	}
	if err := Decode(nil, &f); err != nil {
		t.Errorf("nil node: %v", err)
	}
}

func TestDecodeErrors(t *testing.T) {
	for _, tc := range []struct {
		name, src string
		want      []string // "LINE:COL: substring"
	}{
		{"unknown key", "must: x\npaht: /x", []string{`2:1: unknown key "paht" (valid keys: allow, any, brokers, count, follow, headers, must, name, nested, path, rate, raw, rotate, seed, small, timeout)`}},
		{"unknown nested key", "must: x\nrotate:\n  max_size: 1", []string{`3:3: unknown key "max_size" (valid keys: compress, max_backups, max_size_mb)`}},
		{"string wanted", "must: x\npath: [a]", []string{`2:7: expected a string, got a list`}},
		{"int wanted", "must: x\ncount: many", []string{`2:8: expected a non-negative integer, got string "many"`}},
		{"negative uint", "must: x\ncount: -1", []string{`2:8: expected a non-negative integer, got -1`}},
		{"overflow", "must: x\nsmall: 128", []string{`2:8: integer 128 out of range for int8`}},
		{"quoted int", "must: x\nseed: \"5\"", []string{`2:7: expected an integer, got string "5"`}},
		{"bool wanted", "must: x\nfollow: 1", []string{`2:9: expected true or false, got integer "1"`}},
		{"float wanted", "must: x\nrate: fast", []string{`2:7: expected a number, got string "fast"`}},
		{"duration", "must: x\ntimeout: 5", []string{`2:10: invalid duration "5"`}},
		{"duration list", "must: x\ntimeout: [1s]", []string{`2:10: expected a duration like 1s or 500ms, got a list`}},
		{"list wanted", "must: x\nbrokers: a", []string{`2:10: expected a list, got string "a"`}},
		{"map wanted", "must: x\nheaders: [a]", []string{`2:10: expected a mapping, got a list`}},
		{"struct wanted", "must: x\nrotate: 3", []string{`2:9: expected a mapping, got integer "3"`}},
		{"duplicate", "must: x\npath: a\npath: b", []string{`3:1: duplicate key "path"`}},
		{"required", "path: a", []string{`1:1: missing required key "must"`}},
		{"top not mapping", "- a", []string{`1:1: expected a mapping, got a list`}},
		{"all errors", "must: x\npath: [a]\nnope: 1\nrotate: {compress: maybe, max_backups: x}\nbrokers: [a, {b: c}]", []string{
			`2:7: expected a string`,
			`3:1: unknown key "nope"`,
			`4:20: expected true or false, got string "maybe"`,
			`4:40: expected a non-negative integer`,
			`5:14: expected a string, got a mapping`,
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var o opts
			err := Decode(parse(t, tc.src), &o)
			es, ok := err.(Errors)
			if !ok {
				t.Fatalf("got %T %v, want Errors", err, err)
			}
			if len(es) != len(tc.want) {
				t.Fatalf("got %d errors:\n%v\nwant %d", len(es), es, len(tc.want))
			}
			for i, w := range tc.want {
				pos, msg, _ := strings.Cut(w, ": ")
				got := es[i].Error()
				if !strings.HasPrefix(got, "<config>:"+pos+": ") || !strings.Contains(got, msg) {
					t.Errorf("error %d = %q, want at %s containing %q", i, got, pos, msg)
				}
			}
		})
	}
}

func TestDurationZero(t *testing.T) {
	var o struct {
		D Duration `yaml:"d"`
	}
	o.D = Duration(time.Second)
	if err := Decode(parse(t, "d: 0"), &o); err != nil || o.D != 0 {
		t.Fatalf("got %v %v", o.D, err)
	}
	if err := Decode(parse(t, "d: 500ms"), &o); err != nil || o.D.D() != 500*time.Millisecond {
		t.Fatalf("got %v %v", o.D, err)
	}
	if err := Decode(parse(t, "d: -1s"), &o); err == nil {
		t.Fatal("negative duration accepted")
	}
}

func TestDecodeBadTarget(t *testing.T) {
	var o opts
	if err := Decode(parse(t, "a: 1"), o); err == nil {
		t.Fatal("non-pointer target accepted")
	}
}

func TestDecodeAliases(t *testing.T) {
	var o struct {
		A []any          `yaml:"a"`
		B map[string]int `yaml:"b"`
		C map[string]int `yaml:"c"`
		D []yaml.Node    `yaml:"d"`
		E *[]yaml.Node   `yaml:"e"`
		F map[string]any `yaml:"f"`
		G rec            `yaml:"g"`
	}
	err := Decode(parse(t, "b: &m {x: 1}\nc: *m\ng: &s {k: *s}\n"), &o)
	if o.C["x"] != 1 || err == nil || !strings.Contains(err.Error(), "3:11: alias *s refers to itself") {
		t.Errorf("got %v %+v", err, o)
	}
	// Exponential expansion is cut short.
	src := "a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n"
	for i := 1; i < 9; i++ {
		src += fmt.Sprintf("a%d: &a%d [*a%d, *a%d, *a%d, *a%d, *a%d, *a%d, *a%d, *a%d, *a%d, *a%d]\n", i, i, i-1, i-1, i-1, i-1, i-1, i-1, i-1, i-1, i-1, i-1)
	}
	var m struct {
		A0 []string                 `yaml:"a0"`
		A1 [][]string               `yaml:"a1"`
		A2 [][][]string             `yaml:"a2"`
		A3 [][][][]string           `yaml:"a3"`
		A4 [][][][][]string         `yaml:"a4"`
		A5 [][][][][][]string       `yaml:"a5"`
		A6 [][][][][][][]string     `yaml:"a6"`
		A7 [][][][][][][][]string   `yaml:"a7"`
		A8 [][][][][][][][][]string `yaml:"a8"`
	}
	if err := Decode(parse(t, src), &m); err == nil || !strings.Contains(err.Error(), "YAML aliases expand to more than 1000000 nodes (through alias *a") {
		t.Errorf("got %v", err)
	}
	// So is a wide one: few aliases (under any alias count) of a big node.
	wide := "big: &b [" + strings.Repeat("x, ", 2000) + "x]\nl: [" + strings.Repeat("*b, ", 999) + "*b]\n"
	var w struct {
		Big []string   `yaml:"big"`
		L   [][]string `yaml:"l"`
	}
	err = Decode(parse(t, wide), &w)
	if err == nil || !strings.Contains(err.Error(), "2:") || !strings.Contains(err.Error(), "aliases expand to more than") {
		t.Errorf("wide: got %v", err)
	}
}

type rec struct {
	K *rec `yaml:"k"`
}
