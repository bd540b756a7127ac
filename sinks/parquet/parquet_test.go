package parquet_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/apache/arrow-go/v18/parquet/file"
	"github.com/apache/arrow-go/v18/parquet/pqarrow"
	pq "github.com/parquet-go/parquet-go"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
	"google.golang.org/protobuf/types/known/wrapperspb"
	"gopkg.in/yaml.v3"

	flowpb "github.com/flowbus/flowbus/flow"
	"github.com/flowbus/flowbus/flow/flowjson"
	"github.com/flowbus/flowbus/flow/observer"
	"github.com/flowbus/flowbus/internal/duckdbtest"
	"github.com/flowbus/flowbus/pipeline"
	pqsink "github.com/flowbus/flowbus/sinks/parquet"
	"github.com/flowbus/flowbus/sources/generate"
)

func node(t testing.TB, cfg string) *yaml.Node {
	t.Helper()
	var n yaml.Node
	if err := yaml.Unmarshal([]byte(cfg), &n); err != nil {
		t.Fatal(err)
	}
	return n.Content[0]
}

// newSink builds and starts a parquet sink; lost receives its late losses.
func newSink(t testing.TB, cfg string, lost *int) *pqsink.Sink {
	t.Helper()
	s, err := pipeline.Make(&pipeline.Build{Name: "lake", Type: "parquet", NodeName: "n1", Dir: t.TempDir(),
		Log: slog.New(slog.NewTextHandler(io.Discard, nil))}, node(t, cfg), pqsink.New)
	if err != nil {
		t.Fatal(err)
	}
	s.SetLateLoss(func(n int) { *lost += n })
	if err := s.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	return s
}

// t0 is 2025-11-25 12:00:00 UTC.
const t0 = 1_764_072_000_000_000_000

// input is generated flows spread over two hours, and one LostEvent, in
// batches of 512; it returns the flows by uuid and the count per verdict.
func input(n int) ([]*pipeline.Batch, map[string]*flowpb.Flow, map[string]int) {
	g := generate.NewGenerator(7)
	flows := map[string]*flowpb.Flow{}
	verdicts := map[string]int{}
	var batches []*pipeline.Batch
	b := pipeline.NewBatch()
	for i := range n {
		if b.Len() == 512 {
			batches = append(batches, b)
			b = pipeline.NewBatch()
		}
		e := b.Next()
		g.Fill(e, t0+int64(i)*int64(2*time.Hour)/int64(n))
		flows[e.Flow.Uuid] = proto.Clone(e.Flow).(*flowpb.Flow)
		verdicts[e.Flow.Verdict.String()]++
	}
	e := b.Next()
	e.Lost = &flowpb.LostEvent{Source: flowpb.LostEventSource_PERF_EVENT_RING_BUFFER, NumEventsLost: 12, Cpu: wrapperspb.Int32(3)}
	e.NodeName, e.Time = "n1", timestamppb.New(time.Unix(0, t0))
	batches = append(batches, b)
	return batches, flows, verdicts
}

func write(t testing.TB, s pipeline.Sink, batches []*pipeline.Batch) {
	t.Helper()
	for _, b := range batches {
		failed, err := s.Write(context.Background(), b)
		if failed != 0 || err != nil {
			t.Fatalf("Write: failed %d, %v", failed, err)
		}
		b.Release()
	}
}

// files lists the files under dir, relative to it.
func files(t testing.TB, dir string) []string {
	t.Helper()
	var out []string
	filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			rel, _ := filepath.Rel(dir, p)
			out = append(out, rel)
		}
		return nil
	})
	sort.Strings(out)
	return out
}

// The files are Hive-partitioned by date and hour; DuckDB counts the rows
// per verdict as they went in, finds the LostEvent in its own columns, and
// every export_json round-trips to the flow that was written.
func TestDuckDB(t *testing.T) {
	dir := t.TempDir()
	lost := 0
	s := newSink(t, fmt.Sprintf("path: %s/dt={{ time.date }}/hr={{ time.hour }}\nrow_group_rows: 1000\n", dir), &lost)
	batches, flows, verdicts := input(5000)
	write(t, s, batches)
	for _, f := range files(t, dir) {
		if !strings.HasPrefix(filepath.Base(f), ".") || !strings.HasSuffix(f, ".parquet.tmp") {
			t.Fatalf("a file is visible before it is complete: %s", f)
		}
	}
	if rows, err := duckdbtest.TryQuery(t, "SELECT count(*) AS n FROM read_parquet('"+dir+"/**/*.parquet')"); err == nil {
		t.Fatalf("DuckDB finds rows before the files are complete: %v", rows)
	}
	if err := s.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	got := files(t, dir)
	if len(got) != 2 || !strings.HasPrefix(got[0], "dt=2025-11-25/hr=12/n1-") || !strings.HasPrefix(got[1], "dt=2025-11-25/hr=13/n1-") ||
		!strings.HasSuffix(got[1], ".parquet") {
		t.Fatalf("files: %v", got)
	}
	if lost != 0 {
		t.Errorf("late losses: %d", lost)
	}
	glob := "read_parquet('" + dir + "/**/*.parquet', hive_partitioning = true)"

	rows := duckdbtest.Query(t, "SELECT verdict, count(*) AS n FROM "+glob+" WHERE lost_source IS NULL GROUP BY verdict")
	gotV := map[string]int{}
	for _, r := range rows {
		n, _ := strconv.Atoi(fmt.Sprint(r["n"]))
		gotV[fmt.Sprint(r["verdict"])] = n
	}
	if fmt.Sprint(gotV) != fmt.Sprint(verdicts) {
		t.Errorf("DuckDB's count per verdict %v, want %v", gotV, verdicts)
	}
	rows = duckdbtest.Query(t, "SELECT hr, count(*) AS n FROM "+glob+" GROUP BY hr ORDER BY hr")
	if len(rows) != 2 || fmt.Sprint(rows[0]["n"]) != "2501" || fmt.Sprint(rows[1]["n"]) != "2500" {
		t.Errorf("rows per hour partition: %v", rows)
	}
	rows = duckdbtest.Query(t, "SELECT lost_source, num_events_lost, lost_cpu, verdict, node_name, CAST(time AS VARCHAR) AS time FROM "+glob+" WHERE lost_source IS NOT NULL")
	if len(rows) != 1 || rows[0]["lost_source"] != "PERF_EVENT_RING_BUFFER" || fmt.Sprint(rows[0]["num_events_lost"]) != "12" ||
		fmt.Sprint(rows[0]["lost_cpu"]) != "3" || rows[0]["verdict"] != nil || rows[0]["node_name"] != "n1" || rows[0]["time"] != "2025-11-25 12:00:00+00" {
		t.Errorf("the LostEvent row: %v", rows)
	}
	// Typed columns agree with the flows.
	rows = duckdbtest.Query(t, "SELECT typeof(time) AS tt, typeof(tcp_flags) AS tf, typeof(source_labels) AS tl, typeof(export_json) AS tj FROM "+glob+" LIMIT 1")
	if r := rows[0]; r["tt"] != "TIMESTAMP WITH TIME ZONE" || r["tf"] != "VARCHAR[]" || r["tl"] != "VARCHAR[]" || r["tj"] != "JSON" {
		t.Errorf("column types: %v", r)
	}
	rows = duckdbtest.Query(t, "SELECT export_json::VARCHAR AS j, source_ip, destination_port, protocol, tcp_flags, source_pod, destination_namespace, is_reply, summary, type FROM "+glob+" WHERE lost_source IS NULL")
	if len(rows) != len(flows) {
		t.Fatalf("%d flow rows, want %d", len(rows), len(flows))
	}
	for _, r := range rows {
		var ev observer.ExportEvent
		if err := flowjson.Unmarshal([]byte(r["j"].(string)), &ev); err != nil {
			t.Fatalf("export_json does not parse: %v", err)
		}
		f := ev.GetFlow()
		want := flows[f.GetUuid()]
		if !proto.Equal(f, want) {
			t.Fatalf("export_json round-trips to\n%v\nwant\n%v", f, want)
		}
		if r["source_ip"] != nilIfEmpty(want.GetIP().GetSource()) || r["source_pod"] != nilIfEmpty(want.GetSource().GetPodName()) ||
			r["destination_namespace"] != nilIfEmpty(want.GetDestination().GetNamespace()) || r["summary"] != nilIfEmpty(want.GetSummary()) ||
			r["type"] != want.GetType().String() {
			t.Fatalf("typed columns %v for flow %v", r, want)
		}
		if tcp := want.GetL4().GetTCP(); tcp != nil {
			if r["protocol"] != "TCP" || fmt.Sprint(r["destination_port"]) != fmt.Sprint(tcp.DestinationPort) {
				t.Fatalf("TCP columns %v for %v", r, tcp)
			}
			if tcp.GetFlags().GetSYN() && !strings.Contains(fmt.Sprint(r["tcp_flags"]), "SYN") {
				t.Fatalf("tcp_flags %v for %v", r["tcp_flags"], tcp.GetFlags())
			}
		}
		if want.IsReply != nil && r["is_reply"] != want.IsReply.Value {
			t.Fatalf("is_reply %v for %v", r["is_reply"], want.IsReply)
		}
	}

	// A second, independent Parquet implementation (Apache Arrow's) reads
	// the same files and counts the same verdicts.
	arrowV := map[string]int{}
	for _, name := range got {
		for k, v := range arrowVerdicts(t, filepath.Join(dir, name)) {
			arrowV[k] += v
		}
	}
	delete(arrowV, "") // the LostEvent
	if fmt.Sprint(arrowV) != fmt.Sprint(verdicts) {
		t.Errorf("Arrow's count per verdict %v, want %v", arrowV, verdicts)
	}
}

func nilIfEmpty(s string) any {
	if s == "" {
		return nil
	}
	return s
}

// arrowVerdicts reads a file with Apache Arrow's Parquet reader and counts
// its rows per verdict ("" for null).
func arrowVerdicts(t testing.TB, path string) map[string]int {
	t.Helper()
	r, err := file.OpenParquetFile(path, false)
	if err != nil {
		t.Fatalf("arrow: %s: %v", path, err)
	}
	defer r.Close()
	fr, err := pqarrow.NewFileReader(r, pqarrow.ArrowReadProperties{}, memory.DefaultAllocator)
	if err != nil {
		t.Fatal(err)
	}
	tbl, err := fr.ReadTable(context.Background())
	if err != nil {
		t.Fatalf("arrow: read %s: %v", path, err)
	}
	defer tbl.Release()
	idx := tbl.Schema().FieldIndices("verdict")
	if len(idx) != 1 {
		t.Fatalf("arrow: no verdict column in %s", path)
	}
	out := map[string]int{}
	for _, chunk := range tbl.Column(idx[0]).Data().Chunks() {
		col := chunk.(*array.String)
		for i := range col.Len() {
			if col.IsNull(i) {
				out[""]++
			} else {
				out[col.Value(i)]++
			}
		}
	}
	return out
}

// Page headers carry no statistics: an export_json page's would hold two
// whole flows (its min and max, twice with the deprecated fields), 6 kB a
// 4 MiB page or 3 bytes a flow. Row groups keep their bounds, except for
// export_json and the lists, whose bounds no reader prunes by.
func TestPagesCarryNoStatistics(t *testing.T) {
	dir := t.TempDir()
	lost := 0
	s := newSink(t, fmt.Sprintf("path: %s\nrow_group_rows: 1000\n", dir), &lost)
	batches, _, _ := input(3000)
	write(t, s, batches)
	if err := s.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	names := files(t, dir)
	if len(names) != 1 {
		t.Fatalf("files %v, want one", names)
	}
	r, err := file.OpenParquetFile(filepath.Join(dir, names[0]), false)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	schema := r.MetaData().Schema
	js := schema.ColumnIndexByName("export_json")
	pages := 0
	for g := range r.NumRowGroups() {
		rg := r.RowGroup(g)
		for _, c := range []struct {
			path   string
			bounds bool
		}{
			{"source_namespace", true},
			{"time", true},
			{"export_json", false},
			{"source_labels.list.element", false},
			{"tcp_flags.list.element", false},
		} {
			cc, err := rg.MetaData().ColumnChunk(schema.ColumnIndexByName(c.path))
			if err != nil {
				t.Fatalf("%s: %v", c.path, err)
			}
			st, err := cc.Statistics()
			if err != nil {
				t.Fatalf("%s: %v", c.path, err)
			}
			if has := st != nil && st.HasMinMax(); has != c.bounds {
				t.Errorf("row group %d: %s has bounds %v, want %v", g, c.path, has, c.bounds)
			}
		}
		pr, err := rg.GetColumnPageReader(js)
		if err != nil {
			t.Fatal(err)
		}
		for pr.Next() {
			if dp, ok := pr.Page().(file.DataPage); ok {
				pages++
				if st := dp.Statistics(); st.HasMin || st.HasMax {
					t.Errorf("row group %d: a page header holds statistics: min %d bytes, max %d", g, len(st.Min), len(st.Max))
				}
			}
		}
		if err := pr.Err(); err != nil {
			t.Fatal(err)
		}
	}
	if pages < 3 {
		t.Errorf("%d export_json pages, want one a row group at least", pages)
	}
}

// A batch large enough to be encoded in two parts side by side, with an
// event in each part whose export JSON cannot be encoded: Write reports
// those two, and every other row's JSON is its own flow's.
func TestWriteSkipsWhatItCannotEncode(t *testing.T) {
	dir := t.TempDir()
	lost := 0
	s := newSink(t, "path: "+dir+"\n", &lost)
	g := generate.NewGenerator(3)
	b := pipeline.NewBatch()
	want := map[string]*flowpb.Flow{}
	const n, bad1, bad2 = 300, 7, 290
	for i := range n {
		e := b.Next()
		g.Fill(e, t0+int64(i)*int64(time.Millisecond))
		if i == bad1 || i == bad2 {
			e.Flow.Time = &timestamppb.Timestamp{Seconds: 1 << 50} // past year 9999
			continue
		}
		want[e.Flow.Uuid] = proto.Clone(e.Flow).(*flowpb.Flow)
	}
	failed, err := s.Write(context.Background(), b)
	if failed != 2 || err != nil {
		t.Fatalf("Write: failed %d, %v; want 2 failed", failed, err)
	}
	b.Release()
	if err := s.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	got := 0
	for _, name := range files(t, dir) {
		rows, err := pq.ReadFile[pqsink.Row](filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range rows {
			var ev observer.ExportEvent
			if err := flowjson.Unmarshal(r.ExportJSON, &ev); err != nil {
				t.Fatalf("export_json does not parse: %v", err)
			}
			f := ev.GetFlow()
			if !proto.Equal(f, want[f.GetUuid()]) || r.SourcePod != f.GetSource().GetPodName() || r.Summary != f.GetSummary() {
				t.Fatalf("row %+v holds the JSON of another flow, or a changed one: %v", r, f)
			}
			delete(want, f.GetUuid())
			got++
		}
	}
	if got != n-2 || len(want) != 0 || lost != 0 {
		t.Errorf("%d rows written (%d flows missing, %d lost), want %d", got, len(want), lost, n-2)
	}
}
