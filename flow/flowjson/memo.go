package flowjson

import (
	"slices"
	"strings"
	"sync"

	flowpb "github.com/flowbus/flowbus/flow"
)

// encodeCache remembers the JSON of the parts of flows that repeat from
// flow to flow: the endpoints and the node labels it encoded last. A
// node's flows come from and go to the same few hundred endpoints, an
// endpoint (labels, names, workloads) is a third of a flow's JSON, and
// the node's labels are another tenth. An endpoint is compared, field by
// field, with the two its set remembers, node labels with the list their
// slot remembers; an equal one's JSON is copied instead of encoded.
// Comparing costs a few memory compares, encoding a check of every byte
// for escapes: a stream of the generate source's flows encodes in a third
// less time.
//
// The cache keeps copies of the strings it compares with, never the
// strings themselves: it holds on to no flow, and to no block of a
// decoder's that strings share. One goroutine uses a cache at a time;
// AppendExport and AppendFlow take one from a pool.
type encodeCache struct {
	sets       [endpointSets]endpointSet
	nodeLabels [nodeLabelSlots]cachedList
	loaded     uintptr // keeps prefetch's loads
}

// nodeLabelSlots is the number of lists of node labels a cache remembers,
// one per slot, chosen by the lists' lengths and last bytes: a node's
// flows all have its labels, a relay's come from a few nodes.
const nodeLabelSlots = 16

// endpointSets is the number of sets in a cache. An endpoint's set is
// chosen by its identity, ID and pod name; each set remembers two
// endpoints, and a new one replaces the one used less recently.
const endpointSets = 128

type endpointSet struct {
	ways [2]cachedEndpoint
	old  uint8 // the way used less recently
}

// cachedEndpoint is an endpoint and its JSON. Every field of
// flow.Endpoint takes part in the comparison (TestEndpointCacheFields
// fails when the message gains one).
type cachedEndpoint struct {
	used         bool
	id, identity uint32
	cluster, ns  string
	pod          string
	labels       []string
	workloads    []string // names and kinds, one after the other
	strs         []string // the strings above, in one copy (see detach)
	json         []byte
}

var encodeCaches = sync.Pool{New: func() any { return new(encodeCache) }}

// appendEndpoint appends m's JSON, byte for byte what the generated
// appendEndpoint appends. A nil cache encodes every time.
func (c *encodeCache) appendEndpoint(dst []byte, m *flowpb.Endpoint) ([]byte, error) {
	if c == nil || m == nil {
		return appendEndpoint(dst, m)
	}
	set := &c.sets[setOf(m)]
	for w := range set.ways {
		if s := &set.ways[w]; s.used && s.holds(m) {
			set.old = uint8(1 - w)
			return append(dst, s.json...), nil
		}
	}
	n := len(dst)
	dst, err := appendEndpoint(dst, m)
	if err != nil {
		return dst, err
	}
	set.ways[set.old].store(m, dst[n:])
	set.old = 1 - set.old
	return dst, nil
}

// setOf hashes what tells a node's endpoints apart: the identity (one per
// set of security labels), the endpoint ID (local endpoints) and the pod
// name, whose end differs between the pods of one workload.
func setOf(m *flowpb.Endpoint) int {
	h := m.Identity*0x9e3779b1 ^ m.ID*0x85ebca77 ^ uint32(len(m.PodName))*0xc2b2ae3d
	if n := len(m.PodName); n >= 4 {
		p := m.PodName[n-4:]
		h ^= uint32(p[0]) | uint32(p[1])<<8 | uint32(p[2])<<16 | uint32(p[3])<<24
	}
	h ^= h >> 15
	h *= 0x2c1b3c6d
	h ^= h >> 12
	return int(h % endpointSets)
}

// holds reports whether m equals the endpoint s keeps.
func (s *cachedEndpoint) holds(m *flowpb.Endpoint) bool {
	if s.id != m.ID || s.identity != m.Identity || len(s.labels) != len(m.Labels) || len(s.workloads) != 2*len(m.Workloads) ||
		s.pod != m.PodName || s.ns != m.Namespace || s.cluster != m.ClusterName {
		return false
	}
	for i, l := range m.Labels {
		if s.labels[i] != l {
			return false
		}
	}
	for i, w := range m.Workloads {
		if w == nil || s.workloads[2*i] != w.Name || s.workloads[2*i+1] != w.Kind {
			return false
		}
	}
	return true
}

// store makes s keep m and its JSON, js. An endpoint with a nil workload
// is not kept (holds never matches one).
func (s *cachedEndpoint) store(m *flowpb.Endpoint, js []byte) {
	s.used = false
	for _, w := range m.Workloads {
		if w == nil {
			return
		}
	}
	s.strs = append(append(s.strs[:0], m.ClusterName, m.Namespace, m.PodName), m.Labels...)
	for _, w := range m.Workloads {
		s.strs = append(s.strs, w.Name, w.Kind)
	}
	detach(s.strs)
	s.id, s.identity = m.ID, m.Identity
	s.cluster, s.ns, s.pod = s.strs[0], s.strs[1], s.strs[2]
	s.labels, s.workloads = s.strs[3:3+len(m.Labels)], s.strs[3+len(m.Labels):]
	s.json = append(s.json[:0], js...)
	s.used = true
}

// detach makes the strings of l copies, all in one new string: a cache
// keeps no string of a flow's, nor the block a decoder's strings share.
func detach(l []string) {
	n := 0
	for _, v := range l {
		n += len(v)
	}
	var b strings.Builder
	b.Grow(n)
	for _, v := range l {
		b.WriteString(v)
	}
	all := b.String()
	for i, v := range l {
		l[i], all = all[:len(v)], all[len(v):]
	}
}

// cachedList is a list of strings and its JSON array.
type cachedList struct {
	used bool
	strs []string
	json []byte
}

// appendNodeLabels appends the JSON array of a flow's node labels, l.
func (c *encodeCache) appendNodeLabels(dst []byte, l []string) ([]byte, error) {
	if c == nil {
		return appendStrings(dst, l)
	}
	h := uint32(len(l))
	for _, v := range l {
		h = h*31 + uint32(len(v))
		if len(v) > 0 {
			h = h*31 + uint32(v[len(v)-1])
		}
	}
	s := &c.nodeLabels[h%nodeLabelSlots]
	if s.used && slices.Equal(s.strs, l) {
		return append(dst, s.json...), nil
	}
	n := len(dst)
	dst, err := appendStrings(dst, l)
	if err != nil {
		return dst, err
	}
	s.store(l, dst[n:])
	return dst, nil
}

func (s *cachedList) store(l []string, js []byte) {
	s.strs = append(s.strs[:0], l...)
	detach(s.strs)
	s.json = append(s.json[:0], js...)
	s.used = true
}
