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
