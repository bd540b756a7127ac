package seqcheck_test

import (
	"bytes"
	"strings"
	"testing"

	"github.com/flowbus/flowbus/internal/seqcheck"
	"github.com/flowbus/flowbus/internal/sinkutil"
	"github.com/flowbus/flowbus/pipeline"
)

func TestParseSeq(t *testing.T) {
	b := pipeline.NewBatch()
	defer b.Release()
	b.Next()
	b.Next()
	b.SetSeq(1764777600123456, 41)
	v, _ := sinkutil.AppendSeq(nil, sinkutil.SeqPrefix("n1", "a/b"), b, 1)
	if sinkutil.HeaderSeq != seqcheck.Header {
		t.Fatalf("the sinks write %q, check-seq reads %q", sinkutil.HeaderSeq, seqcheck.Header)
	}
	for _, tc := range []struct {
		in, stream string
		n          uint64
		err        bool
	}{
		{in: string(v), stream: "n1/a/b/1764777600123456", n: 42},
		{in: "n1/bus/5/1", stream: "n1/bus/5", n: 1},
		{in: "n1/bus/5/0", err: true},
		{in: "n1/bus/x/3", err: true},
		{in: "bus/5/3", err: true},
		{in: "7", err: true},
		{in: "", err: true},
	} {
		stream, n, err := seqcheck.ParseSeq(tc.in)
		if (err != nil) != tc.err || stream != tc.stream || n != tc.n {
			t.Errorf("ParseSeq(%q) = %q %d %v", tc.in, stream, n, err)
		}
	}
}

func TestReport(t *testing.T) {
	c := seqcheck.New()
	for _, v := range []string{"n1/s/1/1", "n1/s/1/2", "n1/s/1/2", "n1/s/1/5", "n1/s/2/1", "", "bad"} {
		c.Add(v)
	}
	r := c.Report()
	if r.Missing != 2 || r.Duplicates != 1 || r.NoHeader != 1 || r.Bad != 1 || len(r.Streams) != 2 {
		t.Fatalf("report %+v", r)
	}
	var out bytes.Buffer
	r.Write(&out)
	for _, want := range []string{"n1/s/1: events=3 last=5 missing=2 duplicates=1", "  gaps: 3-4", "check-seq: streams=2 records=7 missing=2 duplicates=1 no_header=1 malformed=1"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("report lacks %q:\n%s", want, out.String())
		}
	}
}
