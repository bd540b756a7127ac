package config

import (
	"errors"
	"testing"

	"gopkg.in/yaml.v3"
)

// FuzzParse: any input gives a config or positioned errors, never a panic.
func FuzzParse(f *testing.F) {
	for _, s := range []string{
		"sources: {a: {type: t}}\nsinks: {b: {type: t, inputs: [a]}}\n",
		"node_name: ${N:-x}\nbuffer: {events: ${E:-5}, when_full: drop_newest}\n",
		"lost_event_interval: 1s\nshutdown_timeout: 0\nmetrics: {listen: \"\"}\n",
		"a: &x {b: 1}\nc: *x\n<<: *x\n",
		"sources:\n  a: [\n",
		"$${X} ${ ${1} ${A:-${B}}",
		"---\n...\n---\n",
		billionLaughs(),
	} {
		f.Add(s)
	}
	env := func(k string) (string, bool) {
		if k == "SET" {
			return "v}", true
		}
		return "", false
	}
	f.Fuzz(func(t *testing.T, src string) {
		c, err := Parse([]byte(src), env)
		if err == nil {
			if c == nil {
				t.Fatal("nil config without error")
			}
			return
		}
		var es Errors
		if !errors.As(err, &es) || len(es) == 0 {
			t.Fatalf("error %T %v is not Errors", err, err)
		}
		for _, e := range es {
			if e.Line < 0 || e.Col < 0 || e.Msg == "" {
				t.Fatalf("bad error %+v", e)
			}
		}
	})
}

// FuzzDecode: decoding any YAML into a rich struct never panics and every
// error has a position.
func FuzzDecode(f *testing.F) {
	for _, s := range []string{
		"must: x\npath: /tmp\ncount: 3\nrate: 1.5\nfollow: true\ntimeout: 1s\n",
		"brokers: [a, b]\nheaders: {a: b}\nrotate: {max_size_mb: 1}\nallow: [{a: 1}]\n",
		"small: 300\ncount: -1\nseed: 0x10\nrate: .inf\n",
		"any: [1, {a: b}]\nraw: *x\n",
		"? [a]\n: b\n",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, src string) {
		var doc yaml.Node
		if yaml.Unmarshal([]byte(src), &doc) != nil {
			return
		}
		var o opts
		err := Decode(&doc, &o)
		if err == nil {
			return
		}
		var es Errors
		if !errors.As(err, &es) || len(es) == 0 {
			t.Fatalf("error %T %v is not Errors", err, err)
		}
		for _, e := range es {
			if e.Line < 1 || e.Col < 1 {
				t.Fatalf("error without a position: %+v", e)
			}
		}
	})
}
