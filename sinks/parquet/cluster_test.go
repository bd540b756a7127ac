package parquet

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
)

// TestCluster holds rows of jobs, as the writer gets them, in place and
// copied, and checks that a flush writes each row whole (its JSON, lists,
// strings and pointed-to values, though a copied row's job was reused
// since) and in order: by source and destination, arrival order among
// equals; and that a held job goes back to the spares only once the
// cluster has dropped its rows.
func TestCluster(t *testing.T) {
	for _, copied := range []bool{false, true} {
		t.Run(fmt.Sprintf("copied=%v", copied), func(t *testing.T) { testCluster(t, copied) })
	}
}

func testCluster(t *testing.T, copied bool) {
	type in struct {
		src, dst string
		reply    *bool
		cpu      *int32
		labels   []string
	}
	yes, cpu := true, int32(3)
	runs := [][]in{
		{{src: "b", dst: "x", reply: &yes, labels: []string{"app=b"}}, {src: "a", dst: "y"}, {src: "b", dst: "x"}},
		{{src: "a", dst: "x", labels: []string{"app=a", "tier=1"}}, {src: "", dst: "", cpu: &cpu}, {src: "b", dst: "x"}},
	}
	var spares jobSpares
	c := newCluster(100)
	n := 0
	for _, run := range runs {
		j := spares.get(nil)
		j.hold() // the writer's, while it writes the job
		j.fill.reset(len(run))
		rows := j.fill.rows
		for i, r := range run {
			start := len(j.js)
			j.js = fmt.Appendf(j.js, `{"n":%d}`, n)
			n++
			labels := slices.Clone(r.labels)
			for k, l := range labels {
				labels[k] = j.fill.text.copy(l)
			}
			rows[i] = Row{SourcePod: j.fill.text.copy(r.src), DestinationPod: j.fill.text.copy(r.dst),
				ExportJSON: j.js[start:len(j.js):len(j.js)], SourceLabels: labels}
			if r.reply != nil {
				j.fill.bools[i] = *r.reply
				rows[i].IsReply = &j.fill.bools[i]
			}
			if r.cpu != nil {
				j.fill.int32s[i] = *r.cpu
				rows[i].LostCPU = &j.fill.int32s[i]
			}
		}
		if copied {
			c.add(rows, nil)
			// The job is reused: scribble over its buffers.
			for i := range j.js {
				j.js[i] = '#'
			}
			for _, slab := range j.fill.text.slabs {
				for i := range slab {
					slab[i] = '#'
				}
			}
			clear(j.fill.bools)
			for i := range j.fill.int32s {
				j.fill.int32s[i] = 9
			}
			for i := range rows {
				for k := range rows[i].SourceLabels {
					rows[i].SourceLabels[k] = "stale"
				}
			}
			j.release()
			continue
		}
		c.add(rows, j)
		j.release()
		if len(spares.jobs) != 0 {
			t.Fatal("a job went back to the spares while a cluster holds its rows")
		}
	}
	var got []string
	if err := c.flush(func(rows []Row) error {
		for _, r := range rows {
			s := fmt.Sprintf("%s>%s %s %v", r.SourcePod, r.DestinationPod, r.ExportJSON, r.SourceLabels)
			if r.IsReply != nil {
				s += fmt.Sprintf(" reply=%v", *r.IsReply)
			}
			if r.LostCPU != nil {
				s += fmt.Sprintf(" cpu=%d", *r.LostCPU)
			}
			got = append(got, s)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	want := []string{
		`> {"n":4} [] cpu=3`,
		`a>x {"n":3} [app=a tier=1]`,
		`a>y {"n":1} []`,
		`b>x {"n":0} [app=b] reply=true`,
		`b>x {"n":2} []`,
		`b>x {"n":5} []`,
	}
	if !slices.Equal(got, want) {
		t.Errorf("flushed\n%q\nwant\n%q", got, want)
	}
	if len(c.rows) != 0 || len(c.jobs) != 0 {
		t.Error("the cluster still holds rows after a flush")
	}
	for _, r := range c.rows[:cap(c.rows)] {
		if r != nil {
			t.Fatalf("the cluster keeps a flushed row: %+v", *r)
		}
	}
	if !copied && len(spares.jobs) != len(runs) {
		t.Errorf("%d jobs back in the spares after the flush, want %d", len(spares.jobs), len(runs))
	}
}

// TestKindOf checks that the packed key orders by type, then verdict,
// direction, protocol and destination port, and that out-of-range enums
// and ports keep their place.
func TestKindOf(t *testing.T) {
	type k struct {
		typ, verdict, dir int32
		proto             uint8
		port              int32
	}
	for _, c := range []struct {
		name      string
		less, big k
	}{
		{"type first", k{1, 9, 2, 7, 65535}, k{2, 0, 0, 0, 0}},
		{"then verdict", k{1, 1, 2, 7, 65535}, k{1, 2, 0, 0, 0}},
		{"then direction", k{1, 1, 1, 7, 65535}, k{1, 1, 2, 0, 0}},
		{"then protocol", k{1, 1, 1, 1, 65535}, k{1, 1, 1, 2, 0}},
		{"then port", k{1, 1, 1, 1, 80}, k{1, 1, 1, 1, 443}},
		{"a port past int32 as unsigned", k{1, 1, 1, 1, 1 << 30}, k{1, 1, 1, 1, -1}},
		{"an enum past a byte after the known ones", k{10, 1, 1, 1, 0}, k{1000, 0, 0, 0, 0}},
		{"a negative enum first", k{-5, 9, 9, 9, 9}, k{1, 0, 0, 0, 0}},
	} {
		t.Run(c.name, func(t *testing.T) {
			a := kindOf(c.less.typ, c.less.verdict, c.less.dir, c.less.proto, c.less.port)
			b := kindOf(c.big.typ, c.big.verdict, c.big.dir, c.big.proto, c.big.port)
			if a >= b {
				t.Errorf("kindOf(%v) = %#x, not below kindOf(%v) = %#x", c.less, a, c.big, b)
			}
		})
	}
}

// TestClusterOrdersAPairByKind flushes the rows of one pair ordered by
// their packed key, then summary, then arrival.
func TestClusterOrdersAPairByKind(t *testing.T) {
	in := []Row{
		{SourcePod: "a", Summary: "z", kind: 2, ExportJSON: []byte("0")},
		{SourcePod: "a", Summary: "b", kind: 1, ExportJSON: []byte("1")},
		{SourcePod: "a", Summary: "a", kind: 2, ExportJSON: []byte("2")},
		{SourcePod: "a", Summary: "b", kind: 1, ExportJSON: []byte("3")},
	}
	c := newCluster(100)
	c.add(in, nil)
	got := flushJSON(t, c)
	if want := []string{"1", "3", "2", "0"}; !slices.Equal(got, want) {
		t.Errorf("flushed %q, want %q", got, want)
	}
}

// flushJSON flushes c and returns the export JSON of the rows it wrote.
func flushJSON(t *testing.T, c *cluster) []string {
	t.Helper()
	var got []string
	if err := c.flush(func(rows []Row) error {
		for _, r := range rows {
			got = append(got, string(r.ExportJSON))
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return got
}

// TestClusterChunks flushes a run of several chunks: every row once, in
// order; and a write that fails ends the flush with its error, the other
// chunks unwritten.
func TestClusterChunks(t *testing.T) {
	const n = 3*outChunk + 17
	in := make([]Row, n)
	for i := range in {
		in[i] = Row{SourcePod: fmt.Sprint(i % 7), kind: uint64(i % 3), ExportJSON: fmt.Append(nil, i)}
	}
	want := slices.Clone(in)
	slices.SortStableFunc(want, func(x, y Row) int {
		if d := strings.Compare(x.SourcePod, y.SourcePod); d != 0 {
			return d
		}
		return compareKind(&x, &y)
	})
	c := newCluster(n)
	c.add(in, nil)
	got := flushJSON(t, c)
	if len(got) != n {
		t.Fatalf("flushed %d rows, want %d", len(got), n)
	}
	for i := range want {
		if got[i] != string(want[i].ExportJSON) {
			t.Fatalf("row %d is %s, want %s", i, got[i], want[i].ExportJSON)
		}
	}

	c.add(in, nil)
	broken := errors.New("disk full")
	calls := 0
	err := c.flush(func([]Row) error {
		if calls++; calls == 2 {
			return broken
		}
		return nil
	})
	if !errors.Is(err, broken) || calls != 2 {
		t.Errorf("flush = %v after %d writes, want %v after 2", err, calls, broken)
	}
	if len(c.rows) != 0 || len(c.jobs) != 0 {
		t.Error("a failed flush did not drop the rows")
	}
}

// TestJobDense holds a job in place only when its rows fill most of its
// buffers.
func TestJobDense(t *testing.T) {
	for _, c := range []struct {
		name          string
		rows, rowsCap int
		js, jsCap     int
		want          bool
	}{
		{"a full batch", 512, 512, 600_000, 700_000, true},
		{"half the rows", 256, 512, 300_000, 600_000, true},
		{"few rows in large buffers", 100, 512, 100_000, 700_000, false},
		{"rows that fill their buffers, too few", minHeld - 1, minHeld - 1, 1000, 1000, false},
		{"short JSON in a large buffer", 512, 512, 100_000, 700_000, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			j := &job{js: make([]byte, c.js, c.jsCap)}
			j.fill.rows = make([]Row, c.rows, c.rowsCap)
			if got := j.dense(); got != c.want {
				t.Errorf("dense() = %v, want %v", got, c.want)
			}
		})
	}
}
