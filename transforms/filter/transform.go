// Package filter is the `filter` transform: it keeps the flows that pass
// its allow and deny lists of Hubble FlowFilters (package flowfilter) and
// always passes LostEvents. Its keys: `flowbus components filter`, or
// docs/components.md.
package filter

import (
	"gopkg.in/yaml.v3"

	"github.com/flowbus/flowbus/flowfilter"
	"github.com/flowbus/flowbus/pipeline"
	"github.com/flowbus/flowbus/pipeline/config"
)

func init() {
	pipeline.RegisterTransform(pipeline.Spec{
		Type:        "filter",
		Summary:     "keeps the flows that pass Hubble FlowFilter allow and deny lists, with Hubble's semantics; LostEvents always pass",
		Description: `A flow passes when it matches at least one allow filter (or allow is empty) and no deny filter, as with hubble observe --allowlist/--denylist. A FlowFilter is a mapping of Hubble's flow.FlowFilter fields in their JSON names (source_pod, verdict, http_status, ...); its fields must all match, and the values of one field are alternatives. Removed flows are counted as filtered.`,
		Example: `type: filter
inputs: [flows]
allow:
  - source_pod: [kube-system/]
  - verdict: [DROPPED]
deny:
  - protocol: [ICMPv4]
`,
	}, pipeline.DropsFiltered, FromOptions)
}

// Options are the `filter` transform's keys.
type Options struct {
	Allow *yaml.Node `yaml:"allow" type:"list of FlowFilter" doc:"a flow passes when it matches one of these Hubble FlowFilters; empty: every flow"`
	Deny  *yaml.Node `yaml:"deny" type:"list of FlowFilter" doc:"a flow matching one of these Hubble FlowFilters is removed"`
}

// Transform is the `filter` pipeline stage: it removes the flows that f
// does not pass; LostEvents always pass.
type Transform struct {
	f    *flowfilter.Filter
	keep func(*pipeline.Event) bool
}

// FromOptions builds a filter transform from its decoded options.
func FromOptions(_ *pipeline.Build, o *Options) (*Transform, error) {
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
