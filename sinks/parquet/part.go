package parquet

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	kzstd "github.com/klauspost/compress/zstd"
	pq "github.com/parquet-go/parquet-go"
	"github.com/parquet-go/parquet-go/compress/zstd"

	"github.com/flowbus/flowbus/pipeline"
	"github.com/flowbus/flowbus/pipeline/cli"
)

type zstdLevel = zstd.Level

var zstdLevels = map[string]zstdLevel{
	"fastest": zstd.SpeedFastest,
	"default": zstd.SpeedDefault,
	"better":  zstd.SpeedBetterCompression,
	"best":    zstd.SpeedBestCompression,
}

// writerOptions are the Parquet writer's options for a new file.
func (s *Sink) writerOptions() []pq.WriterOption {
	return []pq.WriterOption{
		pq.Compression(s.zstd),
		pq.MaxRowsPerRowGroup(s.rgRows),
		pq.PageBufferSize(4 << 20),
		// No min and max in the page headers: an export_json page's
		// would repeat two whole flows (6 kB a page, 3 bytes a flow).
		// Row groups keep their statistics, and the column index holds
		// each page's bounds, truncated, except for the columns below.
		pq.DataPageStatistics(false),
		// No page bounds at all (and so no row group min and max, only
		// null counts) for the columns no reader prunes by: a list's
		// smallest and largest elements say nothing of what a row
		// holds, and the bounds of export_json are two whole flows.
		// Working bounds out compares every value of every page.
		pq.SkipPageBounds("tcp_flags", "list", "element"),
		pq.SkipPageBounds("source_labels", "list", "element"),
		pq.SkipPageBounds("destination_labels", "list", "element"),
		pq.SkipPageBounds("export_json"),
		pq.CreatedBy("flowbus", cli.Version(), ""),
		pq.KeyValueMetadata("flowbus.schema", "observer.GetFlowsResponse"),
	}
}

// zstdCodec compresses pages with zstd: the Parquet library's codec, with one
// encoder that lives as long as the sink. (The library's codec keeps its
// encoders in a pool that each garbage collection empties, and every new
// encoder allocates its history window again.) Pages are compressed one
// at a time, under the sink's lock of its files.
type zstdCodec struct {
	zstd.Codec // the name, and Decode
	enc        *kzstd.Encoder
}

func newZstdCodec(level zstdLevel) *zstdCodec {
	enc, err := kzstd.NewWriter(nil,
		kzstd.WithEncoderConcurrency(1),
		kzstd.WithEncoderLevel(level),
		kzstd.WithZeroFrames(true),
		kzstd.WithEncoderCRC(false),
	)
	if err != nil {
		panic(err) // only for invalid options
	}
	return &zstdCodec{Codec: zstd.Codec{Level: level}, enc: enc}
}

// Encode compresses src into dst.
func (c *zstdCodec) Encode(dst, src []byte) ([]byte, error) {
	return c.enc.EncodeAll(src, dst[:0]), nil
}

// part is one file being written: under its temporary name until finish
// renames it.
type part struct {
	dir          string // the directory it is written for (the key of Sink.parts)
	tmp, final   string
	f            *os.File
	w            *pq.GenericWriter[Row]
	c            *cluster // rows held back to write them ordered; nil: in arrival order
	opened, used time.Time
	counted      int // counted events (not Reported) in the file
	// acks hold the acknowledgements of the batches with rows in the
	// file: they resolve when the file is complete (or lost).
	acks []*pipeline.Ack
	gone bool // completed, or abandoned after a failed write
}

// resolve resolves the acknowledgements of p's batches.
func (p *part) resolve(ok bool) {
	for _, a := range p.acks {
		a.Done(ok)
	}
	p.acks = nil
}

// openPart creates the file tmp; with a cluster it writes rows in ordered
// runs (see cluster), else in arrival order.
func openPart(dir, tmp, final string, opts []pq.WriterOption, c *cluster) (*part, error) {
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o644)
	if err != nil {
		return nil, err
	}
	return &part{dir: dir, tmp: tmp, final: final, f: f, w: pq.NewGenericWriter[Row](f, opts...), c: c}, nil
}

// encode hands rows to the Parquet writer.
func (p *part) encode(rows []Row) error {
	if _, err := p.w.Write(rows); err != nil {
		return fmt.Errorf("write %s: %w", p.tmp, err)
	}
	return nil
}

// size is the file's size so far, the row group being built included.
func (p *part) size() int64 { return p.w.Size() }

// finish writes the footer, syncs and closes the file and renames it to
// its final name. On failure the temporary file is removed.
func (p *part) finish() error {
	var err error
	if p.c != nil {
		err = p.c.flush(p.encode)
	}
	if err == nil {
		err = p.w.Close()
	}
	if err == nil {
		err = p.f.Sync()
	}
	if cerr := p.f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(p.tmp, p.final)
	}
	if err != nil {
		os.Remove(p.tmp)
		return fmt.Errorf("complete %s: %w", p.final, err)
	}
	syncDir(filepath.Dir(p.final))
	return nil
}

// remove closes and removes the unfinished file.
func (p *part) remove() {
	p.f.Close()
	if err := os.Remove(p.tmp); err != nil && !errors.Is(err, os.ErrNotExist) {
		_ = err // nothing more to do: the name is hidden
	}
}

// syncDir makes a rename durable.
func syncDir(dir string) {
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		d.Close()
	}
}
