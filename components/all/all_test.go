package all

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/flowbus/flowbus/pipeline"
	"github.com/flowbus/flowbus/pipeline/reference"
)

const (
	regenerate  = "FLOWBUS_UPDATE=1 go test -run TestReference ./components/all"
	docsFile    = "../../docs/components.md"
	readmeFile  = "../../README.md"
	readmeBegin = "<!-- components:begin -->"
	readmeEnd   = "<!-- components:end -->"
)

// TestSpecs: every registered type has a summary, an example that decodes,
// and a description of every key.
func TestSpecs(t *testing.T) {
	cs := pipeline.Components()
	if len(cs) < 13 {
		t.Fatalf("%d component types registered, want at least 13", len(cs))
	}
	for _, c := range cs {
		name := c.Kind + " " + c.Type
		if c.Example == "" {
			t.Errorf("%s: no example", name)
		} else if err := c.CheckExample(); err != nil {
			t.Errorf("%s: the example does not decode: %v", name, err)
		}
		if strings.HasSuffix(c.Summary, ".") || strings.Contains(c.Summary, "\n") {
			t.Errorf("%s: the summary must be one line without a final period: %q", name, c.Summary)
		}
		for _, k := range c.Keys {
			if k.Doc == "" {
				t.Errorf("%s: key %s has no doc tag", name, k.Path)
			}
			if k.Required && k.Default != "" {
				t.Errorf("%s: key %s is required and has a default", name, k.Path)
			}
		}
	}
}

// TestReference: docs/components.md and README's component table are
// generated from the specs; FLOWBUS_UPDATE=1 rewrites them.
func TestReference(t *testing.T) {
	cs := pipeline.Components()
	docs := reference.Markdown(cs, regenerate)
	readme, err := os.ReadFile(readmeFile)
	if err != nil {
		t.Fatal(err)
	}
	newReadme, ok := reference.Replace(string(readme), readmeBegin, readmeEnd, reference.Table(cs))
	if !ok {
		t.Fatalf("README.md lacks the lines %s and %s around the component table", readmeBegin, readmeEnd)
	}
	if os.Getenv("FLOWBUS_UPDATE") == "1" {
		if err := os.MkdirAll(filepath.Dir(docsFile), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(docsFile, []byte(docs), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(readmeFile, []byte(newReadme), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	if got, err := os.ReadFile(docsFile); err != nil || string(got) != docs {
		t.Errorf("docs/components.md is stale: run %s", regenerate)
	}
	if newReadme != string(readme) {
		t.Errorf("README.md's component table is stale: run %s", regenerate)
	}
}
