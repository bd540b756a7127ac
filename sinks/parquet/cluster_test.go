package parquet

import (
	"fmt"
	"slices"
	"testing"
)

// TestCluster holds rows from reused buffers, as the writer gets them
// from jobs, and checks that a flush writes each row whole (its own JSON,
// lists and pointed-to values, though the buffers changed since) and in
// order: by source and destination, arrival order among equals.
func TestCluster(t *testing.T) {
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
	c := newCluster(100)
	// One set of buffers for every run, overwritten like a job's.
	js := make([]byte, 0, 64)
	var bools [3]bool
	var int32s [3]int32
	n := 0
	for _, run := range runs {
		rows := make([]Row, len(run))
		js = js[:0]
		for i, r := range run {
			start := len(js)
			js = fmt.Appendf(js, `{"n":%d}`, n)
			n++
			rows[i] = Row{SourcePod: r.src, DestinationPod: r.dst, ExportJSON: js[start:len(js):len(js)], SourceLabels: slices.Clone(r.labels)}
			if r.reply != nil {
				bools[i] = *r.reply
				rows[i].IsReply = &bools[i]
			}
			if r.cpu != nil {
				int32s[i] = *r.cpu
				rows[i].LostCPU = &int32s[i]
			}
		}
		c.add(rows)
		// The job's buffers are reused: scribble over them.
		for i := range js {
			js[i] = '#'
		}
		bools, int32s = [3]bool{}, [3]int32{9, 9, 9}
		for i := range rows {
			for k := range rows[i].SourceLabels {
				rows[i].SourceLabels[k] = "stale"
			}
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
	if len(c.rows) != 0 {
		t.Error("the cluster still holds rows after a flush")
	}
	for _, r := range c.rows[:cap(c.rows)] {
		if r.SourcePod != "" || r.ExportJSON != nil {
			t.Fatalf("the cluster keeps a flushed row: %+v", r)
		}
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
	c.add(in)
	var got []string
	if err := c.flush(func(rows []Row) error {
		for _, r := range rows {
			got = append(got, string(r.ExportJSON))
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if want := []string{"1", "3", "2", "0"}; !slices.Equal(got, want) {
		t.Errorf("flushed %q, want %q", got, want)
	}
}
