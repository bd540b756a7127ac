// Package filter is the `filter` transform: it keeps the flows that pass
// its allow and deny lists of Hubble FlowFilters (package flowfilter) and
// always passes LostEvents.
package filter

import (
	"gopkg.in/yaml.v3"

	"github.com/flowbus/flowbus/flowfilter"
	"github.com/flowbus/flowbus/pipeline"
	"github.com/flowbus/flowbus/pipeline/config"
)

func init() {
	pipeline.RegisterTransform("filter", pipeline.DropsFiltered, newTransform)
}

// options are the `filter` transform's keys (SPEC §5.2).
type options struct {
	Allow *yaml.Node `yaml:"allow"`
	Deny  *yaml.Node `yaml:"deny"`
}

// Transform is the `filter` pipeline stage: it removes the flows that f
// does not pass; LostEvents always pass.
type Transform struct {
	f    *flowfilter.Filter
	keep func(*pipeline.Event) bool
}

func newTransform(_ *pipeline.Build, node *yaml.Node) (pipeline.Transform, error) {
	var o options
	if err := config.Decode(node, &o); err != nil {
		return nil, err
	}
	// Report every invalid filter at once, for `flowbus validate`.
	allow, aerr := flowfilter.ParseFilters(o.Allow)
	deny, derr := flowfilter.ParseFilters(o.Deny)
	if aerr != nil || derr != nil {
		var errs config.Errors
		if aerr != nil {
			errs = append(errs, config.Positioned(aerr, o.Allow)...)
		}
		if derr != nil {
			errs = append(errs, config.Positioned(derr, o.Deny)...)
		}
		return nil, errs
	}
	f, err := flowfilter.New(allow, deny)
	if err != nil {
		if errs := flowfilter.AllErrors(allow, deny, o.Allow, o.Deny); len(errs) > 0 {
			return nil, errs
		}
		return nil, flowfilter.Positioned(err, o.Allow, o.Deny)
	}
	return NewTransform(f), nil
}

// NewTransform returns a transform applying f.
func NewTransform(f *flowfilter.Filter) *Transform {
	t := &Transform{f: f}
	t.keep = func(e *pipeline.Event) bool { return t.f.Match(e.Flow) }
	return t
}

// Process removes from b the flows that do not pass (b.Keep never shows
// LostEvents to the filter, so they always pass). The runtime counts the
// removed flows as filtered.
func (t *Transform) Process(b *pipeline.Batch) {
	if t.f.Empty() {
		return
	}
	b.Keep(t.keep)
}
