package reference

import (
	"strings"
	"testing"

	"github.com/flowbus/flowbus/pipeline"
	"github.com/flowbus/flowbus/pipeline/config"
)

var sample = []pipeline.Component{
	{Kind: "source", Spec: pipeline.Spec{Type: "gen", Summary: "makes flows", Example: "type: gen\n"},
		Keys: []config.Key{{Path: "count", Type: "integer", Default: "0", Doc: "how many | at most"}}},
	{Kind: "sink", Spec: pipeline.Spec{Type: "bus", Summary: "publishes"},
		Keys: []config.Key{{Path: "url", Type: "string", Required: true, Doc: "where"}, {Path: "tls.ca_file", Type: "string", Doc: "CA"}}},
}

func TestMarkdown(t *testing.T) {
	md := Markdown(sample, "regen")
	for _, want := range []string{
		"`regen`",
		"### source `gen`\n\nMakes flows.\n",
		"| `count` | integer | `0` | how many \\| at most |",
		"| `url` | string | required | where |",
		"```yaml\ntype: gen\n```",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("Markdown lacks %q:\n%s", want, md)
		}
	}
	table := Table(sample)
	if !strings.Contains(table, "| sink | `bus` | publishes | `url` |") {
		t.Errorf("Table lists nested keys or lacks one:\n%s", table)
	}
}

func TestReplace(t *testing.T) {
	doc := "a\n<!-- b -->\nold\n<!-- e -->\nz\n"
	got, ok := Replace(doc, "<!-- b -->", "<!-- e -->", "new\n")
	if !ok || got != "a\n<!-- b -->\nnew\n<!-- e -->\nz\n" {
		t.Errorf("Replace = %q, %v", got, ok)
	}
	if _, ok := Replace("no markers", "<!-- b -->", "<!-- e -->", "x"); ok {
		t.Error("Replace without markers succeeded")
	}
}
