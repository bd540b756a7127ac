package parquet

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	pq "github.com/parquet-go/parquet-go"
	"gopkg.in/yaml.v3"

	"github.com/flowbus/flowbus/pipeline"
	"github.com/flowbus/flowbus/sources/generate"
)

// With many files open, the rows they hold for ordering stay within two
// runs together (the longest run takes off early), and every row still
// reaches its file.
func TestHeldRowsBounded(t *testing.T) {
	const sortRows, batch, batches = 256, 512, 24
	dir := t.TempDir()
	var n yaml.Node
	cfg := fmt.Sprintf("path: %s/ns={{ source.namespace }}\nsort_rows: %d\n", dir, sortRows)
	if err := yaml.Unmarshal([]byte(cfg), &n); err != nil {
		t.Fatal(err)
	}
	s, err := pipeline.Make(&pipeline.Build{Name: "lake", Type: "parquet", NodeName: "n1", Dir: dir,
		Log: slog.New(slog.NewTextHandler(io.Discard, nil))}, n.Content[0], New)
	if err != nil {
		t.Fatal(err)
	}
	lost := 0
	s.SetLateLoss(func(n int) { lost += n })
	if err := s.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	g := generate.NewGenerator(3)
	most, open := 0, 0
	for i := range batches {
		b := pipeline.NewBatch()
		for k := range batch {
			g.Fill(b.Next(), time.Date(2026, 12, 4, 8, 0, 0, 0, time.UTC).UnixNano()+int64(i*batch+k))
		}
		if failed, err := s.Write(context.Background(), b); failed != 0 || err != nil {
			t.Fatalf("Write: %d failed, %v", failed, err)
		}
		b.Release()
		s.pm.Lock()
		held := 0
		for _, p := range s.parts {
			held += len(p.c.rows)
		}
		open = max(open, len(s.parts))
		s.pm.Unlock()
		most = max(most, held)
	}
	t.Logf("up to %d files open, %d rows held", open, most)
	if open < 3 {
		t.Fatalf("at most %d files open; the test wants many", open)
	}
	// A batch is held before the check that launches a run.
	if most > 2*sortRows+batch {
		t.Errorf("the open files held %d rows together, want at most %d", most, 2*sortRows+batch)
	}
	if err := s.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	rows := 0
	err = filepath.WalkDir(dir, func(path string, d os.DirEntry, err error) error {
		if err != nil || !strings.HasSuffix(path, ".parquet") {
			return err
		}
		f, err := os.Open(path)
		if err != nil {
			return err
		}
		defer f.Close()
		fi, _ := f.Stat()
		pf, err := pq.OpenFile(f, fi.Size())
		if err != nil {
			return err
		}
		rows += int(pf.NumRows())
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if rows != batch*batches || lost != 0 {
		t.Errorf("%d rows in the files, %d lost; want %d, 0", rows, lost, batch*batches)
	}
}
