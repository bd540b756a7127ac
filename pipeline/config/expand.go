package config

import "gopkg.in/yaml.v3"

// MaxExpandedNodes bounds the size of a config document with its YAML
// aliases expanded, and the nodes one Decode visits through aliases. An
// alias is a reference, so a few kilobytes of nested aliases can stand for
// billions of nodes ("billion laughs"); every reader of the config (the
// top-level decode, each component's decode, filters) walks the expanded
// tree, so the whole document is measured once when it is parsed. Real
// configs stay far below: a node is a key, a value or a list item.
const MaxExpandedNodes = 1_000_000

// checkExpansion returns an error at the alias that takes the expanded
// size of the document rooted at n past MaxExpandedNodes, or nil. It runs
// in time linear in the document's own size: the expanded size of each
// anchored node is computed once.
func checkExpansion(n *yaml.Node) *Error {
	x := expansion{sizes: map[*yaml.Node]int{}, active: map[*yaml.Node]bool{}}
	x.walk(n)
	return x.err
}

type expansion struct {
	total  int
	sizes  map[*yaml.Node]int  // expanded sizes of alias targets
	active map[*yaml.Node]bool // alias targets being measured (cycles)
	err    *Error
}

// walk adds the expanded size of n to total and stops at the first alias
// that takes it past the limit.
func (x *expansion) walk(n *yaml.Node) {
	if x.err != nil || n == nil {
		return
	}
	if n.Kind == yaml.AliasNode {
		x.total += x.size(n.Alias)
		if x.total > MaxExpandedNodes {
			x.err = Errorf(n, "YAML aliases expand the config to more than %d nodes (alias *%s takes it past the limit); write the values out or use fewer aliases", MaxExpandedNodes, n.Value)
		}
		return
	}
	x.total++
	for _, c := range n.Content {
		x.walk(c)
	}
}

// size returns the expanded size of n, saturated just past the limit. A
// cycle counts as one node: Decode reports it on its own.
func (x *expansion) size(n *yaml.Node) int {
	if n == nil || x.active[n] {
		return 1
	}
	if s, ok := x.sizes[n]; ok {
		return s
	}
	x.active[n] = true
	s := 1
	if n.Kind == yaml.AliasNode {
		s = x.size(n.Alias)
	} else {
		for _, c := range n.Content {
			if s += x.size(c); s > MaxExpandedNodes {
				s = MaxExpandedNodes + 1
				break
			}
		}
	}
	delete(x.active, n)
	x.sizes[n] = s
	return s
}
