// Package flowfilter implements Hubble's flow filters (flow.FlowFilter)
// with Hubble's exact results; the `filter` transform and the `sample`
// transform's `keep` list are built on it.
//
// A FlowFilter is compiled once (CIDRs, regular expressions, label
// selectors, CEL programs) into a list of predicates; all of them must
// match (AND). Within one field the values are alternatives (OR). A list of
// filters matches when any filter matches (an empty list matches
// everything), and a deny list excludes a flow when any of its filters
// matches (an empty deny list excludes nothing). This is Hubble's
// `Apply(allow, deny, ev) = allow.MatchOne(ev) && deny.MatchNone(ev)`.
//
// The rules for each field follow Cilium's pkg/hubble/filters (v1.20.2);
// each predicate in fields_*.go states the rule it implements, down to the
// corner cases Hubble's documentation does not mention: e.g. an empty
// node_name never matches a node_name filter.
//
// Known limits: between two `cidr:` labels, selection is by prefix
// containment as in Cilium's labels package, rebuilt from its description;
// CEL expressions whose statically estimated worst-case cost exceeds
// CELMaxCost are rejected (Hubble v1.20.2 accepts them and has no bound),
// and an accepted one that passes CELMaxRuntimeCost or CELMaxEvalTime on
// one flow (thousands of labels) does not match that flow;
// the node_name filter reads the flow's own node_name, as Hubble does, not
// the envelope's.
//
// Matching allocates nothing: label selectors, FQDN and node name patterns,
// URL paths and the common CEL expressions are evaluated by allocation-free
// code (see labels.go, glob.go, fields_*.go, celfast.go).
package flowfilter

import (
	"errors"
	"fmt"
	"strings"

	"gopkg.in/yaml.v3"

	flowpb "github.com/flowbus/flowbus/flow"
	"github.com/flowbus/flowbus/pipeline"
	"github.com/flowbus/flowbus/pipeline/config"
)

// Filter is a compiled allow list and deny list.
//
// Concurrency: Match and MatchEvent may be called from one goroutine at a
// time only (the CEL evaluators reuse one activation each, and the
// http_path filter one buffer). Use Clone to get an independent copy for
// another goroutine.
type Filter struct {
	allow, deny       []*flowFilter
	srcAllow, srcDeny []*flowpb.FlowFilter
}

// flowFilter is one compiled FlowFilter: every predicate must match.
type flowFilter struct {
	preds []predicate
}

type predicate func(*flowpb.Flow) bool

func (ff *flowFilter) match(fl *flowpb.Flow) bool {
	for _, p := range ff.preds {
		if !p(fl) {
			return false
		}
	}
	return true
}

// New compiles the allow and deny lists. An invalid filter is an error of
// type *Error naming the list, the filter, the field and the value.
func New(allow, deny []*flowpb.FlowFilter) (*Filter, error) {
	f := &Filter{srcAllow: allow, srcDeny: deny}
	var err error
	if f.allow, err = f.compileList("allow", allow); err != nil {
		return nil, err
	}
	if f.deny, err = f.compileList("deny", deny); err != nil {
		return nil, err
	}
	return f, nil
}

func (*Filter) compileList(list string, ffs []*flowpb.FlowFilter) ([]*flowFilter, error) {
	out := make([]*flowFilter, 0, len(ffs))
	for i, ff := range ffs {
		if ff == nil {
			ff = &flowpb.FlowFilter{}
		}
		cf, err := compile(ff)
		if err != nil {
			var fe *Error
			if errors.As(err, &fe) {
				fe.List, fe.Index = list, i
				return nil, fe
			}
			return nil, &Error{List: list, Index: i, ValueIndex: -1, Err: err}
		}
		out = append(out, cf)
	}
	return out, nil
}

// Match reports whether fl passes: it matches some allow filter (or there
// are none) and no deny filter. A nil flow passes.
func (f *Filter) Match(fl *flowpb.Flow) bool {
	if fl == nil {
		return true
	}
	if len(f.allow) > 0 {
		ok := false
		for _, ff := range f.allow {
			if ff.match(fl) {
				ok = true
				break
			}
		}
		if !ok {
			return false
		}
	}
	for _, ff := range f.deny {
		if ff.match(fl) {
			return false
		}
	}
	return true
}

// MatchEvent reports whether e passes. LostEvents always pass: a LostEvent
// is never filtered away, so every consumer learns of every loss.
func (f *Filter) MatchEvent(e *pipeline.Event) bool {
	if e.Lost != nil || e.Flow == nil {
		return true
	}
	return f.Match(e.Flow)
}

// Empty reports whether f has neither allow nor deny filters (it passes
// everything).
func (f *Filter) Empty() bool { return len(f.allow) == 0 && len(f.deny) == 0 }

// Clone returns a copy of f that may be used on another goroutine
// concurrently with f. It compiles the filters again.
func (f *Filter) Clone() *Filter {
	c, err := New(f.srcAllow, f.srcDeny)
	if err != nil {
		panic("filter: recompiling valid filters failed: " + err.Error())
	}
	return c
}

// Error is an invalid FlowFilter: the list ("allow", "deny", or what the
// caller named it), the filter's index, the field (proto name, e.g.
// "source_ip" or "experimental.cel_expression") and, for a repeated field,
// the index of the offending value (-1 when the field as a whole is wrong).
type Error struct {
	List       string
	Index      int
	Field      string
	ValueIndex int
	Value      string
	Err        error
}

func (e *Error) Error() string {
	var b strings.Builder
	if e.List != "" {
		fmt.Fprintf(&b, "%s[%d]", e.List, e.Index)
	}
	if e.Field != "" {
		if b.Len() > 0 {
			b.WriteString(": ")
		}
		b.WriteString(e.Field)
		if e.ValueIndex >= 0 {
			fmt.Fprintf(&b, "[%d] %q", e.ValueIndex, e.Value)
		}
	}
	if b.Len() > 0 {
		b.WriteString(": ")
	}
	b.WriteString(e.Err.Error())
	return b.String()
}

func (e *Error) Unwrap() error { return e.Err }

// Positioned turns an error from New into a *config.Error at the position
// of the offending filter, field or value, given the YAML sequences the
// allow and deny lists were parsed from (either may be nil). Other errors
// are returned unchanged.
func Positioned(err error, allowNode, denyNode *yaml.Node) error {
	var fe *Error
	if !errors.As(err, &fe) {
		return err
	}
	var list *yaml.Node
	switch fe.List {
	case "allow":
		list = allowNode
	case "deny":
		list = denyNode
	}
	return config.Errorf(errorNode(list, fe), "%s", fe.Error())
}

// AllErrors returns every invalid filter of the allow and deny lists as
// positioned errors (New stops at the first): one error per invalid
// filter, as Positioned places it. It is for reporting configurations.
func AllErrors(allow, deny []*flowpb.FlowFilter, allowNode, denyNode *yaml.Node) config.Errors {
	var errs config.Errors
	check := func(list string, ffs []*flowpb.FlowFilter, node *yaml.Node) {
		for i, ff := range ffs {
			if ff == nil {
				continue
			}
			if _, err := compile(ff); err != nil {
				fe, ok := err.(*Error)
				if !ok {
					fe = &Error{ValueIndex: -1, Err: err}
				}
				fe.List, fe.Index = list, i
				errs = append(errs, config.Errorf(errorNode(node, fe), "%s", fe.Error()))
			}
		}
	}
	check("allow", allow, allowNode)
	check("deny", deny, denyNode)
	return errs
}

// PositionedList is Positioned for a single list, whatever New called it
// (e.g. a sample stage's keep list built with New(keep, nil)). Set the
// *Error's List first to name the list in the message.
func PositionedList(err error, listNode *yaml.Node) error {
	var fe *Error
	if !errors.As(err, &fe) {
		return err
	}
	return config.Errorf(errorNode(listNode, fe), "%s", fe.Error())
}

// errorNode finds the most precise node for fe within the sequence list.
func errorNode(list *yaml.Node, fe *Error) *yaml.Node {
	list = resolve(list)
	if list == nil || list.Kind != yaml.SequenceNode || fe.Index < 0 || fe.Index >= len(list.Content) {
		return list
	}
	item := resolve(list.Content[fe.Index])
	if item.Kind != yaml.MappingNode || fe.Field == "" {
		return item
	}
	n := item
	for _, part := range strings.Split(fe.Field, ".") {
		key, val := findKey(n, part)
		if key == nil {
			return n
		}
		n = val
		if val.Kind != yaml.MappingNode {
			if val.Kind == yaml.SequenceNode && fe.ValueIndex >= 0 && fe.ValueIndex < len(val.Content) {
				return val.Content[fe.ValueIndex]
			}
			if val.Kind == yaml.SequenceNode {
				return key
			}
			return val
		}
	}
	return n
}

// findKey returns the key and value nodes of a field in a mapping, by proto
// name or lowerCamel JSON name.
func findKey(m *yaml.Node, protoName string) (key, val *yaml.Node) {
	camel := lowerCamel(protoName)
	for i := 0; i+1 < len(m.Content); i += 2 {
		k := resolve(m.Content[i])
		if k.Value == protoName || k.Value == camel {
			return k, resolve(m.Content[i+1])
		}
	}
	return nil, nil
}

func lowerCamel(s string) string {
	var b strings.Builder
	up := false
	for _, r := range s {
		if r == '_' {
			up = true
			continue
		}
		if up && 'a' <= r && r <= 'z' {
			r -= 'a' - 'A'
		}
		up = false
		b.WriteRune(r)
	}
	return b.String()
}

// fieldErr makes an *Error about field (its proto name), value i.
func fieldErr(field string, i int, value string, err error) error {
	return &Error{Field: field, ValueIndex: i, Value: value, Err: err}
}

func fieldErrf(field string, i int, value string, format string, args ...any) error {
	return fieldErr(field, i, value, fmt.Errorf(format, args...))
}
