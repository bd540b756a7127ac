package parquet

import (
	"cmp"
	"slices"
)

// cluster holds a file's rows back to write them in runs ordered by
// source and destination, so that similar rows sit side by side in the
// pages: zstd then finds the long parts two flows between the same pods
// share (labels, names, workloads) in the row before, and the dictionary
// columns get runs. Rows that compare equal keep their arrival order,
// which is time order for one source. A run is complete once it holds max
// rows (it ends with a whole job, so it may hold a batch more).
//
// Held rows are copies: the export JSON, the lists and the values behind
// the pointers live in the cluster's own buffers, since the job they came
// from is reused once the writer is done with it. Their strings are the
// flows' own, which never change.
type cluster struct {
	max    int
	rows   []Row // held rows, without their slices; pointers only mark non-null
	js     []byte
	jsEnd  []int
	lists  []string
	ends   [][3]int // ends in lists of each row's flags, source and destination labels
	bools  []bool
	int32s []int32
	out    []Row

	// Ordering: rows are grouped by pair as they come (gid), the groups
	// are ordered, then each group's rows by the keys that follow; so a
	// run is ordered with few comparisons of whole rows.
	groupOf map[pair]int32
	pairs   []pair  // by group id
	gid     []int32 // group id of each held row
	gstart  []int32 // by group id: where its rows start in order
	gorder  []int32 // group ids, ordered
	order   []int32 // held rows, ordered

	loaded uintptr // keeps prefetchRow's loads
}

// pair is where rows come from and go to: the first keys of the order.
type pair struct{ srcNs, srcPod, dstNs, dstPod string }

func comparePairs(x, y *pair) int {
	if d := cmp.Compare(x.srcNs, y.srcNs); d != 0 {
		return d
	}
	if d := cmp.Compare(x.srcPod, y.srcPod); d != 0 {
		return d
	}
	if d := cmp.Compare(x.dstNs, y.dstNs); d != 0 {
		return d
	}
	return cmp.Compare(x.dstPod, y.dstPod)
}

func newCluster(max int) *cluster { return &cluster{max: max, groupOf: map[pair]int32{}} }

// clusters keeps the clusters of completed files for new ones: a cluster's
// buffers grow to a run's size (megabytes), once.
type clusters struct {
	max   int // rows per run; 0: files write rows in arrival order
	spare []*cluster
}

// get returns a cluster for a new file, or nil when rows are not ordered.
func (cs *clusters) get() *cluster {
	if cs.max <= 0 {
		return nil
	}
	if n := len(cs.spare); n > 0 {
		c := cs.spare[n-1]
		cs.spare = cs.spare[:n-1]
		return c
	}
	return newCluster(cs.max)
}

// put takes back the cluster of a file that is complete or removed.
func (cs *clusters) put(c *cluster) {
	if c != nil {
		c.drop()
		cs.spare = append(cs.spare, c)
	}
}

// full reports whether the cluster holds a whole run.
func (c *cluster) full() bool { return len(c.rows) >= c.max }

// add holds copies of rows.
func (c *cluster) add(rows []Row) {
	if c.js == nil && len(rows) > 0 {
		c.reserve(rows)
	}
	for i := range rows {
		c.rows = append(c.rows, rows[i])
		r := &c.rows[len(c.rows)-1]
		c.js = append(c.js, r.ExportJSON...)
		c.jsEnd = append(c.jsEnd, len(c.js))
		var e [3]int
		c.lists = append(c.lists, r.TCPFlags...)
		e[0] = len(c.lists)
		c.lists = append(c.lists, r.SourceLabels...)
		e[1] = len(c.lists)
		c.lists = append(c.lists, r.DestinationLabels...)
		e[2] = len(c.lists)
		c.ends = append(c.ends, e)
		k := pair{r.SourceNamespace, r.SourcePod, r.DestinationNamespace, r.DestinationPod}
		g, ok := c.groupOf[k]
		if !ok {
			g = int32(len(c.pairs))
			c.groupOf[k] = g
			c.pairs = append(c.pairs, k)
		}
		c.gid = append(c.gid, g)
		var b bool
		if r.IsReply != nil {
			b = *r.IsReply
		}
		c.bools = append(c.bools, b)
		var v int32
		if r.LostCPU != nil {
			v = *r.LostCPU
		}
		c.int32s = append(c.int32s, v)
		r.ExportJSON, r.TCPFlags, r.SourceLabels, r.DestinationLabels = nil, nil, nil, nil
	}
}

// reserve sizes the buffers of a new cluster for a run of rows like
// these (a run may end a batch past max), instead of growing them by
// copies: the JSON buffer of a run is megabytes.
func (c *cluster) reserve(rows []Row) {
	js, lists := 0, 0
	for i := range rows {
		js += len(rows[i].ExportJSON)
		lists += len(rows[i].TCPFlags) + len(rows[i].SourceLabels) + len(rows[i].DestinationLabels)
	}
	n := c.max + len(rows)
	c.js = make([]byte, 0, js/len(rows)*n*5/4)
	c.jsEnd = make([]int, 0, n)
	c.rows = make([]Row, 0, n)
	c.ends = make([][3]int, 0, n)
	c.gid = make([]int32, 0, n)
	c.order = make([]int32, 0, n)
	c.bools = make([]bool, 0, n)
	c.int32s = make([]int32, 0, n)
	c.out = make([]Row, 0, outChunk)
	c.lists = make([]string, 0, lists/len(rows)*n*5/4)
}

// flush writes the held rows, ordered, with write and forgets them.
func (c *cluster) flush(write func([]Row) error) error {
	if len(c.rows) == 0 {
		return nil
	}
	c.sort()
	// The ordered copies get their slices and pointers: row i's JSON and
	// lists start where row i-1's end. They go to write a chunk at a time:
	// a copy of the whole run would be megabytes more.
	c.out = c.out[:0]
	var err error
	for k, i := range c.order {
		if k+prefetchAhead < len(c.order) {
			c.loaded += prefetchRow(&c.rows[c.order[k+prefetchAhead]])
		}
		c.out = append(c.out, c.rows[i])
		r := &c.out[len(c.out)-1]
		js, lists := 0, 0
		if i > 0 {
			js, lists = c.jsEnd[i-1], c.ends[i-1][2]
		}
		e := c.ends[i]
		r.ExportJSON = c.js[js:c.jsEnd[i]:c.jsEnd[i]]
		r.TCPFlags = listOf(c.lists, lists, e[0])
		r.SourceLabels = listOf(c.lists, e[0], e[1])
		r.DestinationLabels = listOf(c.lists, e[1], e[2])
		if r.IsReply != nil {
			r.IsReply = &c.bools[i]
		}
		if r.LostCPU != nil {
			r.LostCPU = &c.int32s[i]
		}
		if len(c.out) == outChunk {
			if err = write(c.out); err != nil {
				break
			}
			c.out = c.out[:0]
		}
	}
	if err == nil && len(c.out) > 0 {
		err = write(c.out)
	}
	c.drop()
	return err
}

// prefetchAhead is how far ahead in the order flush loads the held rows
// (prefetchRow).
const prefetchAhead = 8

// prefetchRow loads a word of each field of r, and so each of its cache
// lines, and returns their sum, for the caller to keep. flush reads the held rows in their order, which
// is not where they lie: a run's rows take megabytes, and each would cost
// a memory latency. Loaded a few rows ahead, while flush copies the rows
// before, they arrive side by side.
func prefetchRow(r *Row) uintptr {
	return uintptr(r.Time) + uintptr(len(r.NodeName)+len(r.Type)+len(r.Verdict)+
		len(r.DropReasonDesc)+len(r.TrafficDirection)+len(r.IPVersion)+
		len(r.SourceIP)+len(r.DestinationIP)+len(r.Protocol)+len(r.TCPFlags)+
		len(r.SourceNamespace)+len(r.SourcePod)+len(r.SourceWorkload)+
		len(r.SourceLabels)+len(r.SourceService)+len(r.DestinationNamespace)+
		len(r.DestinationPod)+len(r.DestinationWorkload)+len(r.DestinationLabels)+
		len(r.DestinationService)+len(r.L7Type)+len(r.L7Protocol)+len(r.Summary)+
		len(r.LostSource)+len(r.ExportJSON)) + uintptr(r.kind)
}

// outChunk is the number of ordered rows flush hands to write at once.
const outChunk = 1024

// sort fills order with the held rows' indexes, ordered: the groups by
// their pairs, each group's rows (in arrival order, as placed) by the
// keys after the pair, arrival order among equals.
func (c *cluster) sort() {
	ng := len(c.pairs)
	c.gorder = c.gorder[:0]
	for g := range ng {
		c.gorder = append(c.gorder, int32(g))
	}
	slices.SortFunc(c.gorder, func(a, b int32) int { return comparePairs(&c.pairs[a], &c.pairs[b]) })
	c.gstart = slices.Grow(c.gstart[:0], ng)[:ng]
	clear(c.gstart)
	for _, g := range c.gid {
		c.gstart[g]++
	}
	at := int32(0)
	for _, g := range c.gorder {
		n := c.gstart[g]
		c.gstart[g] = at
		at += n
	}
	c.order = slices.Grow(c.order[:0], len(c.rows))[:len(c.rows)]
	for i, g := range c.gid {
		c.order[c.gstart[g]] = int32(i)
		c.gstart[g]++
	}
	from := 0
	for _, g := range c.gorder {
		to := int(c.gstart[g])
		if to-from > 1 {
			slices.SortFunc(c.order[from:to], func(a, b int32) int {
				if d := compareKind(&c.rows[a], &c.rows[b]); d != 0 {
					return d
				}
				return cmp.Compare(a, b)
			})
		}
		from = to
	}
}

// drop forgets the held rows, and the strings they share with flows; the
// buffers stay for the next rows.
func (c *cluster) drop() {
	clear(c.rows)
	clear(c.out)
	clear(c.lists)
	c.rows, c.out, c.lists = c.rows[:0], c.out[:0], c.lists[:0]
	c.js, c.jsEnd, c.ends = c.js[:0], c.jsEnd[:0], c.ends[:0]
	c.bools, c.int32s = c.bools[:0], c.int32s[:0]
	clear(c.groupOf)
	clear(c.pairs)
	c.pairs, c.gid = c.pairs[:0], c.gid[:0]
}

// listOf is lists[from:to], or nil when empty (a null list).
func listOf(lists []string, from, to int) []string {
	if from == to {
		return nil
	}
	return lists[from:to:to]
}

// compareKind orders the rows of one pair by what the flow is: type,
// verdict, traffic direction, protocol and destination port (packed in
// kind), then summary.
func compareKind(x, y *Row) int {
	if d := cmp.Compare(x.kind, y.kind); d != 0 {
		return d
	}
	return cmp.Compare(x.Summary, y.Summary)
}
