// Package reference renders the reference of the registered component
// types from their specs (pipeline.Spec and the tags of their options,
// see config.Keys): plain text for `flowbus components`, and Markdown for
// docs/components.md and README's component table. Nothing about a
// component's keys is written by hand anywhere else.
package reference

import (
	"fmt"
	"io"
	"strings"

	"github.com/flowbus/flowbus/pipeline"
	"github.com/flowbus/flowbus/pipeline/config"
)

// Find returns the registered components whose type is typ (a source and
// a sink can share a type name, like file).
func Find(cs []pipeline.Component, typ string) []pipeline.Component {
	var out []pipeline.Component
	for _, c := range cs {
		if c.Type == typ {
			out = append(out, c)
		}
	}
	return out
}

// commonKeys are the keys the runtime handles for every component of a
// kind, before the component sees its own.
func commonKeys(kind string) string {
	switch kind {
	case "source":
		return "`type`"
	case "transform":
		return "`type`, `inputs`, `buffer`"
	}
	return "`type`, `inputs`, `buffer`, `encoding`"
}

// List writes one line per component: kind, type, summary.
func List(w io.Writer, cs []pipeline.Component) error {
	width := 0
	for _, c := range cs {
		width = max(width, len(c.Type))
	}
	for _, c := range cs {
		if _, err := fmt.Fprintf(w, "%-9s  %-*s  %s\n", c.Kind, width, c.Type, c.Summary); err != nil {
			return err
		}
	}
	return nil
}

// Text writes the reference of one component for a terminal.
func Text(w io.Writer, c pipeline.Component) error {
	var b strings.Builder
	fmt.Fprintf(&b, "%s (%s): %s\n", c.Type, c.Kind, c.Summary)
	if c.Description != "" {
		b.WriteString("\n")
		wrap(&b, c.Description, "", 78)
	}
	fmt.Fprintf(&b, "\nKeys (besides %s):\n", strings.ReplaceAll(commonKeys(c.Kind), "`", ""))
	if len(c.Keys) == 0 {
		b.WriteString("\n  none\n")
	}
	for _, k := range c.Keys {
		fmt.Fprintf(&b, "\n  %s  (%s)\n", k.Path, attributes(k))
		if k.Doc != "" {
			wrap(&b, k.Doc, "      ", 78)
		}
	}
	if c.Example != "" {
		b.WriteString("\nExample:\n\n")
		for _, line := range strings.Split(strings.TrimRight(c.Example, "\n"), "\n") {
			b.WriteString("  " + line + "\n")
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// attributes is "type, required" or "type, default D", and an example.
func attributes(k config.Key) string {
	s := k.Type
	if k.Required {
		s += ", required"
	}
	if k.Default != "" {
		s += ", default " + k.Default
	}
	if k.Example != "" {
		s += ", e.g. " + k.Example
	}
	return s
}

// wrap writes text in lines of at most width columns, each indented.
func wrap(b *strings.Builder, text, indent string, width int) {
	line := indent
	for _, word := range strings.Fields(text) {
		if len(line) > len(indent) && len(line)+1+len(word) > width {
			b.WriteString(line + "\n")
			line = indent
		}
		if len(line) > len(indent) {
			line += " "
		}
		line += word
	}
	if len(line) > len(indent) {
		b.WriteString(line + "\n")
	}
}

var kinds = []struct{ kind, title string }{
	{"source", "Sources"}, {"transform", "Transforms"}, {"sink", "Sinks"},
}

// Markdown returns docs/components.md: every component with its keys and
// example. regenerate is the command that writes it, named in its header.
func Markdown(cs []pipeline.Component, regenerate string) string {
	var b strings.Builder
	b.WriteString("# Components\n\n")
	fmt.Fprintf(&b, "<!-- Generated from the component specs by `%s`; do not edit. -->\n\n", regenerate)
	b.WriteString("Every component has a `type`; transforms and sinks also take `inputs` and `buffer`,\n" +
		"and sinks `encoding` (README \"Configuration\"). The keys below are each type's own.\n" +
		"`flowbus components TYPE` prints the same reference.\n")
	for _, k := range kinds {
		fmt.Fprintf(&b, "\n## %s\n", k.title)
		for _, c := range cs {
			if c.Kind != k.kind {
				continue
			}
			fmt.Fprintf(&b, "\n### %s `%s`\n\n%s.\n", c.Kind, c.Type, capitalize(c.Summary))
			if c.Description != "" {
				fmt.Fprintf(&b, "\n%s\n", c.Description)
			}
			if len(c.Keys) == 0 {
				b.WriteString("\nNo keys of its own.\n")
			} else {
				b.WriteString("\n| key | type | default | description |\n| --- | --- | --- | --- |\n")
				for _, key := range c.Keys {
					def := ""
					switch {
					case key.Required:
						def = "required"
					case key.Default != "":
						def = "`" + key.Default + "`"
					}
					doc := key.Doc
					if key.Example != "" {
						doc += " (e.g. `" + key.Example + "`)"
					}
					fmt.Fprintf(&b, "| `%s` | %s | %s | %s |\n", key.Path, key.Type, def, cell(doc))
				}
			}
			if c.Example != "" {
				fmt.Fprintf(&b, "\n```yaml\n%s\n```\n", strings.TrimRight(c.Example, "\n"))
			}
		}
	}
	return b.String()
}

// Table returns README's component table: kind, type, summary and the
// type's top-level keys.
func Table(cs []pipeline.Component) string {
	var b strings.Builder
	b.WriteString("| kind | type | what it does | keys |\n| --- | --- | --- | --- |\n")
	for _, k := range kinds {
		for _, c := range cs {
			if c.Kind != k.kind {
				continue
			}
			var keys []string
			for _, key := range c.Keys {
				if !strings.ContainsAny(key.Path, ".[") {
					keys = append(keys, "`"+key.Path+"`")
				}
			}
			if len(keys) == 0 {
				keys = []string{"none"}
			}
			fmt.Fprintf(&b, "| %s | `%s` | %s | %s |\n", c.Kind, c.Type, cell(c.Summary), strings.Join(keys, ", "))
		}
	}
	return b.String()
}

// cell escapes text for a Markdown table cell.
func cell(s string) string {
	return strings.ReplaceAll(s, "|", `\|`)
}

func capitalize(s string) string {
	if s == "" {
		return s
	}
	return strings.ToUpper(s[:1]) + s[1:]
}

// Replace returns doc with the text between the lines begin and end
// replaced by body; ok is false when the markers are missing.
func Replace(doc, begin, end, body string) (string, bool) {
	i := strings.Index(doc, begin+"\n")
	j := strings.Index(doc, end)
	if i < 0 || j < i {
		return doc, false
	}
	return doc[:i+len(begin)+1] + body + doc[j:], true
}
