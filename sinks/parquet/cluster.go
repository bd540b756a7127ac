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
// which is time order for one source. A run is at most max rows.
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
	order  []int32
	out    []Row
}

func newCluster(max int) *cluster { return &cluster{max: max} }

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
	for i := range rows {
		r := rows[i]
		c.js = append(c.js, r.ExportJSON...)
		c.jsEnd = append(c.jsEnd, len(c.js))
		var e [3]int
		for k, l := range [3][]string{r.TCPFlags, r.SourceLabels, r.DestinationLabels} {
			c.lists = append(c.lists, l...)
			e[k] = len(c.lists)
		}
		c.ends = append(c.ends, e)
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
		c.rows = append(c.rows, r)
	}
}

// flush writes the held rows, ordered, with write and forgets them.
func (c *cluster) flush(write func([]Row) error) error {
	if len(c.rows) == 0 {
		return nil
	}
	c.order = c.order[:0]
	for i := range c.rows {
		c.order = append(c.order, int32(i))
	}
	slices.SortFunc(c.order, func(a, b int32) int {
		if d := compareRows(&c.rows[a], &c.rows[b]); d != 0 {
			return d
		}
		return cmp.Compare(a, b)
	})
	// The ordered copies get their slices and pointers: row i's JSON and
	// lists start where row i-1's end.
	c.out = c.out[:0]
	for _, i := range c.order {
		r := c.rows[i]
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
		c.out = append(c.out, r)
	}
	err := write(c.out)
	c.drop()
	return err
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
}

// listOf is lists[from:to], or nil when empty (a null list).
func listOf(lists []string, from, to int) []string {
	if from == to {
		return nil
	}
	return lists[from:to:to]
}

// compareRows orders rows by where the flow comes from and goes to, then
// by what it is. It stops at the first key that differs (cmp.Or would
// compare every key, on the sort's hot path).
func compareRows(x, y *Row) int {
	if d := cmp.Compare(x.SourceNamespace, y.SourceNamespace); d != 0 {
		return d
	}
	if d := cmp.Compare(x.SourcePod, y.SourcePod); d != 0 {
		return d
	}
	if d := cmp.Compare(x.DestinationNamespace, y.DestinationNamespace); d != 0 {
		return d
	}
	if d := cmp.Compare(x.DestinationPod, y.DestinationPod); d != 0 {
		return d
	}
	if d := cmp.Compare(x.Type, y.Type); d != 0 {
		return d
	}
	if d := cmp.Compare(x.Verdict, y.Verdict); d != 0 {
		return d
	}
	if d := cmp.Compare(x.TrafficDirection, y.TrafficDirection); d != 0 {
		return d
	}
	if d := cmp.Compare(x.Protocol, y.Protocol); d != 0 {
		return d
	}
	if d := cmp.Compare(x.DestinationPort, y.DestinationPort); d != 0 {
		return d
	}
	return cmp.Compare(x.Summary, y.Summary)
}
