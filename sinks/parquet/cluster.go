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
// The rows of a job whose rows all go to one file are not copied: the
// cluster points at them where the job filled them (the rows, their
// lists, their JSON and the values behind their pointers) and holds the
// job, which is not reused until the cluster drops them (see job.hold).
// The rows of a job split between files are copied into the cluster's
// own buffers, their strings included: holding the job instead would keep
// all of it for a few rows, as long as the slowest of those files holds
// them.
type cluster struct {
	max  int
	rows []*Row // held rows, in their jobs or in own
	jobs []*job // the jobs the held rows live in, one hold each
	out  []Row  // ordered rows for write, a chunk at a time

	// Copied rows, and their JSON, lists, strings and pointed-to values.
	// A row points into these as they were when it was copied: when one of
	// them grows into a new array, the rows before keep the old one.
	own    []Row
	js     []byte
	lists  []string
	text   stringStore
	bools  []bool
	int32s []int32

	// Ordering: rows are grouped by pair as they come (gid), the groups
	// are ordered, then each group's rows by the keys that follow; so a
	// run is ordered with few comparisons of whole rows.
	groupOf map[pair]int32
	pairs   []pair  // by group id
	gid     []int32 // group id of each held row
	gstart  []int32 // by group id: where its rows start in order
	gorder  []int32 // group ids, ordered
	order   []int32 // held rows, ordered
	sorted  bool    // order is up to date

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

// add holds rows. With a job, the rows live in j until the cluster drops
// them: it takes a hold on j. Without one, it copies them.
func (c *cluster) add(rows []Row, j *job) {
	if len(rows) == 0 {
		return
	}
	if j != nil {
		j.hold()
		c.jobs = append(c.jobs, j)
	}
	if c.rows == nil {
		n := c.max + len(rows)
		c.rows = make([]*Row, 0, n)
		c.gid = make([]int32, 0, n)
		c.order = make([]int32, 0, n)
		c.out = make([]Row, 0, outChunk)
	}
	for i := range rows {
		r := &rows[i]
		if j == nil {
			r = c.copyRow(r)
		}
		c.rows = append(c.rows, r)
		k := pair{r.SourceNamespace, r.SourcePod, r.DestinationNamespace, r.DestinationPod}
		g, ok := c.groupOf[k]
		if !ok {
			g = int32(len(c.pairs))
			c.groupOf[k] = g
			c.pairs = append(c.pairs, k)
		}
		c.gid = append(c.gid, g)
	}
}

// copyRow copies r into the cluster's own buffers, its strings included:
// they are in r's job, which is reused.
func (c *cluster) copyRow(r *Row) *Row {
	c.own = append(c.own, *r)
	o := &c.own[len(c.own)-1]
	start := len(c.js)
	c.js = append(c.js, r.ExportJSON...)
	o.ExportJSON = c.js[start:len(c.js):len(c.js)]
	o.TCPFlags = copyList(&c.lists, r.TCPFlags)
	o.SourceLabels = copyList(&c.lists, r.SourceLabels)
	o.DestinationLabels = copyList(&c.lists, r.DestinationLabels)
	o.ownStrings(&c.text)
	if r.IsReply != nil {
		c.bools = append(c.bools, *r.IsReply)
		o.IsReply = &c.bools[len(c.bools)-1]
	}
	if r.LostCPU != nil {
		c.int32s = append(c.int32s, *r.LostCPU)
		o.LostCPU = &c.int32s[len(c.int32s)-1]
	}
	return o
}

// flush writes the held rows, ordered, with write and forgets them.
// The ordered copies go to write a chunk at a time: a copy of the whole
// run would be megabytes more.
func (c *cluster) flush(write func([]Row) error) error {
	if len(c.rows) == 0 {
		return nil
	}
	if !c.sorted {
		c.sort()
	}
	var err error
	for from := 0; from < len(c.order) && err == nil; from += outChunk {
		c.out = c.gather(c.out[:0], from, min(from+outChunk, len(c.order)))
		err = write(c.out)
	}
	c.drop()
	return err
}

// gather appends copies of the held rows order[from:to] to out.
func (c *cluster) gather(out []Row, from, to int) []Row {
	for k := from; k < to; k++ {
		if k+prefetchAhead < len(c.order) {
			c.loaded += prefetchRow(c.rows[c.order[k+prefetchAhead]])
		}
		out = append(out, *c.rows[c.order[k]])
	}
	return out
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
	c.sorted = true
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
				if d := compareKind(c.rows[a], c.rows[b]); d != 0 {
					return d
				}
				return cmp.Compare(a, b)
			})
		}
		from = to
	}
}

// drop forgets the held rows and releases their jobs; the buffers stay
// for the next rows.
func (c *cluster) drop() {
	for _, j := range c.jobs {
		j.release()
	}
	clear(c.jobs)
	clear(c.rows)
	clear(c.out)
	clear(c.own)
	clear(c.lists)
	c.jobs, c.rows, c.out, c.own, c.lists = c.jobs[:0], c.rows[:0], c.out[:0], c.own[:0], c.lists[:0]
	c.js, c.bools, c.int32s = c.js[:0], c.bools[:0], c.int32s[:0]
	c.text.reset()
	clear(c.groupOf)
	clear(c.pairs)
	c.pairs, c.gid = c.pairs[:0], c.gid[:0]
	c.sorted = false
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
