// Package parquet is the `parquet` sink: it writes events to Parquet files
// that DuckDB, Spark and Athena read as they are, in directories named by a
// path template with time partitions
// (`/data/flows/dt={{ time.date }}/hr={{ time.hour }}`). Its keys:
// `flowbus components parquet`, or docs/components.md.
//
// Each row is one event: typed columns for the fields analysts query (see
// Row) and the whole event as Hubble export JSON. LostEvents are rows of
// the same files, with their own columns (lost_source, num_events_lost,
// lost_cpu) and null flow columns.
//
// A file is written under a hidden temporary name (a leading `.` and a
// `.tmp` suffix, which Hive-style readers and `*.parquet` globs skip) and
// renamed to its final `.parquet` name only once its footer is written
// and synced, so a reader never sees a partial file. A file is completed
// when it reaches max_size_mb (at the next row group boundary), when it is
// max_age old, when more than max_open_files directories are open (the
// least recently written one), and at shutdown. Delivered means: in a
// completed file. Rows of a file that cannot be completed (a full disk, a
// removed directory) are reported as lost after they were accepted (see
// pipeline.LateLoser). A process killed while writing leaves only hidden
// temporary files, which the next start removes under the path's fixed
// prefix.
package parquet

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/flowbus/flowbus/codec"
	"github.com/flowbus/flowbus/internal/sinkutil"
	"github.com/flowbus/flowbus/internal/template"
	"github.com/flowbus/flowbus/pipeline"
	"github.com/flowbus/flowbus/pipeline/config"
)

func init() {
	pipeline.RegisterSink(pipeline.Spec{
		Type:        "parquet",
		Summary:     "writes events to zstd Parquet files in time-partitioned directories, for DuckDB, Spark and Athena",
		Description: `Each row is an event: typed columns (time as a UTC timestamp in microseconds, node_name, type, verdict, drop_reason_desc, traffic_direction, is_reply, ip_version, source_ip, destination_ip, protocol, source_port, destination_port, tcp_flags, source_/destination_ namespace, pod, workload, labels and service, l7_type, l7_protocol, summary) and export_json, the whole event as a Hubble export line. LostEvents are rows of the same files with lost_source, num_events_lost and lost_cpu set and the flow columns null. Files are named <node>-<UTC time>-<random>-<seq>.parquet in the directory the path template renders for each event; a file is written under a hidden .tmp name and renamed once complete, so readers never see a partial file. Events count as delivered when the file holding them is complete; rows of a file that cannot be completed are reported lost. Behind an acknowledging source (kafka, nats with jetstream) a batch is acknowledged when every file holding its rows is complete, so keep max_age below the source's redelivery time (nats ack_wait) and max_ack_pending above the rows max_age collects. The encoding key must be json (the default): export_json is always Hubble JSON. Columns, files and queries: docs/parquet.md.`,
		Example: `type: parquet
inputs: [flows]
path: /var/lib/flowbus/flows/dt={{ time.date }}/hr={{ time.hour }}
max_size_mb: 128
max_age: 5m
`,
	}, New)
}

// Options are the sink's config keys.
type Options struct {
	Path         string          `yaml:"path" required:"true" doc:"the directory of the files, a template: literal text with {{ time.date }}, {{ time.hour }}, {{ time.year }}, {{ time.month }}, {{ time.day }}, {{ time.minute }} (UTC) and {{ field.path }} placeholders; relative to the config file's directory"`
	MaxSizeMB    int             `yaml:"max_size_mb" default:"128" doc:"complete a file once it holds this many megabytes (at the next row group boundary)"`
	MaxAge       config.Duration `yaml:"max_age" default:"5m" doc:"complete a file this long after it was opened"`
	RowGroupRows int             `yaml:"row_group_rows" default:"122880" doc:"rows per row group (DuckDB's own row group size)"`
	SortRows     int             `yaml:"sort_rows" default:"24576" doc:"a file's rows are written in runs of this many, each ordered by source namespace and pod, destination namespace and pod, then type, verdict, traffic direction, protocol, destination port and summary (arrival order among equals), so that similar rows sit together and compress better; the runs are held in memory, about 2 kB a row, and the open files hold at most two runs' rows together (with many files open, their runs are shorter), plus the run being written; 0 writes rows in arrival order"`
	MaxOpenFiles int             `yaml:"max_open_files" default:"16" doc:"directories written at once; the least recently written file is completed to open another"`
	Level        string          `yaml:"compression_level" default:"fastest" doc:"zstd level: fastest, default (zstd's own default level), better or best; rows written in ordered runs (sort_rows) compress almost as well with fastest as with default, for less CPU"`
}

// tmpSuffix ends the name of a file being written; a leading '.' hides it
// as well.
const tmpSuffix = ".parquet.tmp"

// Sink writes Parquet files.
//
// Write and a writer goroutine share the work, so that the sink uses two
// cores: Write encodes a batch's events (the export JSON and the typed
// columns) into a job and queues it; the writer goroutine takes the jobs'
// rows to their files, in order: it holds them in runs (see cluster), and
// a complete run is ordered and written, where the Parquet encoding and
// the zstd compression happen, on a goroutine of its own (see flight)
// while the writer takes the next jobs. At most jobSlots jobs exist, so
// Write waits when the writer falls behind. A row the writer cannot put
// into a file is a late loss, like the rows of a file that cannot be
// completed.
type Sink struct {
	tmpl     *template.Template
	prefix   string // the fixed directory the template starts with
	node     string // for file names
	rnd      string // random part of file names, per process
	maxSize  int64
	maxAge   time.Duration
	rgRows   int64
	maxOpen  int
	zstd     *zstdCodec
	log      *slog.Logger
	lateLoss func(int)

	// mu serialises Write and Close (the front: encoding).
	mu     sync.Mutex
	dir    []byte            // rendered directory
	groups map[string]*group // the batch's events by directory, kept across batches
	order  []*group          // groups in the batch, in first-seen order
	closed bool
	free   chan *job     // jobs to fill
	spares jobSpares     // jobs no one holds, for free
	jobs   chan *job     // filled jobs, for the writer goroutine
	wdone  chan struct{} // closed when the writer goroutine ends

	// pm guards the files, the clusters and the zstd encoder (pages are
	// compressed while a file is written): held by the writer goroutine,
	// the ager and Close.
	pm       sync.Mutex
	parts    map[string]*part // by directory
	clusters clusters         // buffers of ordered runs, for new files
	flying   *flight          // the run being written, if any (see flight)
	seq      uint64

	errMu   sync.Mutex
	errs    sinkutil.ErrorLog
	stop    chan struct{}
	stopped chan struct{}
}

// jobSlots is the number of jobs: enough batches in flight (about 1.3 MB
// each) that the two goroutines rarely wait for each other on a busy
// machine, where a parked goroutine waits milliseconds for a core.
const jobSlots = 8

// job is one batch's rows on their way to the files.
type job struct {
	fill   rowFiller
	js     []byte // export JSON of the batch (of its first part, see encode)
	jsEnd  []int  // where each event's JSON ends in js; -1: not encoded
	js2    []byte // export JSON of the second part of the batch
	jsEnd2 []int
	half   chan int // the failures of the second part's encode
	groups []jobGroup
	n      int // groups in use
	// done, for a batch of flowbus's own LostEvents, receives the number
	// of rows the writer could not write: Write waits for it, so that the
	// runtime reports those losses again.
	done chan int
	wait bool

	holds  atomic.Int32 // see hold
	spares *jobSpares
}

// hold and release count who uses a job's storage: the writer while it
// writes the job's rows, and each cluster that holds some of them (its
// held rows point into the job: they are not copied). The last release
// gives the job back to the spares, for Write to fill again.
func (j *job) hold() { j.holds.Add(1) }

func (j *job) release() {
	if j.holds.Add(-1) == 0 {
		j.spares.put(j)
	}
}

// dense reports whether a job's rows fill most of its storage. A cluster
// that holds a job keeps all of it: a few rows in buffers grown for a
// large batch (a source's quiet moments) are copied instead.
func (j *job) dense() bool {
	n := len(j.fill.rows)
	return n >= minHeld && 2*n >= cap(j.fill.rows) && 2*(len(j.js)+len(j.js2)) >= cap(j.js)+cap(j.js2)
}

// minHeld is the fewest rows of a job a cluster holds in place.
const minHeld = 64

// jobSpares keeps the jobs no one holds. Jobs held by clusters are
// replaced on the free list by spares, or by new jobs.
type jobSpares struct {
	mu   sync.Mutex
	jobs []*job
}

// get returns a spare job, or a new one whose JSON buffer is the size of
// like's (nil: empty), so that it does not grow to it by copies.
func (p *jobSpares) get(like *job) *job {
	p.mu.Lock()
	defer p.mu.Unlock()
	if n := len(p.jobs); n > 0 {
		j := p.jobs[n-1]
		p.jobs[n-1] = nil
		p.jobs = p.jobs[:n-1]
		return j
	}
	j := &job{done: make(chan int, 1), half: make(chan int, 1), spares: p}
	if like != nil {
		j.js = make([]byte, 0, cap(like.js))
		j.js2 = make([]byte, 0, cap(like.js2))
	}
	return j
}

func (p *jobSpares) put(j *job) {
	p.mu.Lock()
	p.jobs = append(p.jobs, j)
	p.mu.Unlock()
}

// jobGroup is the rows of a job that go to one directory.
type jobGroup struct {
	dir     string
	rows    []Row         // the job's rows, or scratch
	scratch []Row         // the group's rows when the job has several groups
	counted int           // counted events (not Reported) among rows
	ack     *pipeline.Ack // held for these rows until their file is complete
}

// New builds the sink from its options.
func New(b *pipeline.Build, o *Options) (*Sink, error) {
	log := b.Log
	if log == nil {
		log = slog.Default()
	}
	if b.Encoding != "" && b.Encoding != "json" {
		return nil, b.Errorf("", "parquet sink: encoding %s does not apply: the files hold typed columns and the Hubble export JSON", b.Encoding)
	}
	p := strings.TrimRight(o.Path, "/")
	if p == "" {
		return nil, b.Errorf("path", "parquet sink: path is empty: want a directory")
	}
	if !filepath.IsAbs(p) {
		p = filepath.Join(b.Dir, p)
	}
	t, err := template.Parse(p, template.Path)
	if err != nil {
		return nil, b.Errorf("path", "parquet sink: %v", err)
	}
	var errs config.Errors
	if o.MaxSizeMB < 1 {
		errs = append(errs, b.Errorf("max_size_mb", "parquet sink: max_size_mb must be at least 1"))
	}
	if o.MaxAge.D() < time.Second {
		errs = append(errs, b.Errorf("max_age", "parquet sink: max_age must be at least 1s"))
	}
	if o.RowGroupRows < 1 {
		errs = append(errs, b.Errorf("row_group_rows", "parquet sink: row_group_rows must be at least 1"))
	}
	if o.SortRows < 0 {
		errs = append(errs, b.Errorf("sort_rows", "parquet sink: sort_rows must be 0 (arrival order) or more"))
	}
	if o.MaxOpenFiles < 1 {
		errs = append(errs, b.Errorf("max_open_files", "parquet sink: max_open_files must be at least 1"))
	}
	lv, ok := zstdLevels[o.Level]
	if !ok {
		errs = append(errs, b.Errorf("compression_level", "parquet sink: compression_level %q: want fastest, default, better or best", o.Level))
	}
	if len(errs) > 0 {
		return nil, errs
	}
	var r [4]byte
	_, _ = rand.Read(r[:])
	node := sanitizeName(b.NodeName)
	s := &Sink{
		tmpl:     t,
		prefix:   fixedPrefix(p),
		node:     node,
		rnd:      hex.EncodeToString(r[:]),
		maxSize:  int64(o.MaxSizeMB) << 20,
		maxAge:   o.MaxAge.D(),
		rgRows:   int64(o.RowGroupRows),
		clusters: clusters{max: o.SortRows},
		maxOpen:  o.MaxOpenFiles,
		zstd:     newZstdCodec(lv),
		log:      log,
		parts:    map[string]*part{},
		groups:   map[string]*group{},
		free:     make(chan *job, jobSlots),
		jobs:     make(chan *job, jobSlots),
		wdone:    make(chan struct{}),
		errs:     sinkutil.ErrorLog{Log: log, Every: 10 * time.Second, Sink: "parquet sink", Key: "directory"},
	}
	for range jobSlots {
		s.free <- s.spares.get(nil)
	}
	return s, nil
}

// fixedPrefix is the directory of p before its first placeholder.
func fixedPrefix(p string) string {
	if i := strings.Index(p, "{{"); i >= 0 {
		p = p[:i]
		if j := strings.LastIndexByte(p, '/'); j >= 0 {
			return p[:j+1]
		}
		return "."
	}
	return p
}

// sanitizeName makes s usable in a file name.
func sanitizeName(s string) string {
	if s == "" {
		return "flowbus"
	}
	b := []byte(s)
	for i, c := range b {
		if c < ' ' || c == 0x7f || c == '/' || c == '\\' || (i == 0 && c == '.') {
			b[i] = '_'
		}
	}
	return string(b)
}

// SetLateLoss implements pipeline.LateLoser.
func (s *Sink) SetLateLoss(f func(int)) { s.lateLoss = f }

// Start checks that the path's fixed prefix can be written (creating it),
// removes the temporary files of this node that a killed process left
// under it, and starts completing files by age.
func (s *Sink) Start(context.Context) error {
	if err := os.MkdirAll(s.prefix, 0o755); err != nil {
		return fmt.Errorf("parquet sink: cannot create the directory %s: %w", s.prefix, err)
	}
	f, err := os.CreateTemp(s.prefix, ".flowbus-check-*"+tmpSuffix)
	if err != nil {
		return fmt.Errorf("parquet sink: directory %s is not writable: %w", s.prefix, err)
	}
	f.Close()
	os.Remove(f.Name())
	s.removeStale()
	s.stop, s.stopped = make(chan struct{}), make(chan struct{})
	go s.ager()
	go s.writer()
	return nil
}

// removeStale removes the hidden temporary files of this node under the
// fixed prefix: files a killed process left unfinished.
func (s *Sink) removeStale() {
	pre := "." + s.node + "-"
	_ = filepath.WalkDir(s.prefix, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		name := d.Name()
		if !d.IsDir() && strings.HasPrefix(name, pre) && strings.HasSuffix(name, tmpSuffix) {
			if err := os.Remove(path); err == nil {
				s.log.Warn("parquet sink: removed an unfinished file left by an earlier run", "file", path)
			}
		}
		return nil
	})
}

// ager completes the files that reached max_age.
func (s *Sink) ager() {
	defer close(s.stopped)
	every := min(s.maxAge/4, time.Second)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case now := <-t.C:
			s.pm.Lock()
			for _, p := range s.parts {
				if now.Sub(p.opened) >= s.maxAge && !p.gone {
					s.finish(p)
				}
			}
			s.pm.Unlock()
		}
	}
}

// logErr records a write error (from Write or the writer goroutine).
func (s *Sink) logErr(where string, err error) {
	s.errMu.Lock()
	s.errs.Add(where, err)
	s.errMu.Unlock()
}

// Write encodes the batch's events into rows and queues them for the
// writer goroutine. It returns the events that cannot be written at all
// (an export JSON that cannot be encoded, a directory that renders to `.`
// or `..`); what the writer fails to write later is a late loss.
func (s *Sink) Write(ctx context.Context, b *pipeline.Batch) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := b.Len()
	if s.closed {
		return n, nil
	}
	var j *job
	select {
	case j = <-s.free:
	case <-ctx.Done():
		return n, ctx.Err()
	}
	failed := s.encode(j, b)
	if j.n == 0 {
		s.free <- j
		return failed, nil
	}
	// flowbus's own LostEvents come in batches of their own: the runtime
	// reports those that fail again, so Write waits for their result.
	j.wait = b.Counted() < n
	for k := range j.groups[:j.n] {
		// An acknowledging source (a Kafka consumer) may commit these
		// rows only once their file is complete.
		j.groups[k].ack = b.Ack().Hold()
	}
	s.jobs <- j
	if j.wait {
		failed += <-j.done
	}
	return failed, nil
}

// encode fills j with the rows of b's events, grouped by directory, and
// returns how many events cannot be written.
func (s *Sink) encode(j *job, b *pipeline.Batch) int {
	n := b.Len()
	// The export JSON is most of Write's work, and Write is one goroutine
	// per sink: a large batch is encoded in two parts side by side, the
	// second on a goroutine of its own (the events are only read).
	h := n
	if n >= splitMin {
		h = n / 2
		go func() {
			var failed int
			j.js2, j.jsEnd2, failed = s.encodeJSON(j.js2[:0], j.jsEnd2[:0], b.Events[h:])
			j.half <- failed
		}()
	}
	var failed int
	j.js, j.jsEnd, failed = s.encodeJSON(j.js[:0], j.jsEnd[:0], b.Events[:h])
	if h < n {
		failed += <-j.half
	}
	j.fill.reset(n)
	if len(s.groups) > 4*s.maxOpen {
		clear(s.groups) // forget the directories of past hours
	}
	s.order = s.order[:0]
	// A path of times only renders alike for a minute: the group of the
	// event before is kept with its time key.
	var last *group
	lastKey := int64(0)
	for i := range b.Events {
		if j.end(i, h) < 0 {
			continue
		}
		e := &b.Events[i]
		key, timed := s.tmpl.TimeKey(e)
		g := last
		if g == nil || !timed || key != lastKey {
			s.dir = s.tmpl.Append(s.dir[:0], e)
			g = s.groups[string(s.dir)]
			if g == nil {
				g = &group{dir: string(s.dir)}
				g.bad = template.CleanPath(g.dir)
				s.groups[g.dir] = g
			}
			last, lastKey = nil, key
			if timed {
				last = g
			}
		}
		if len(g.idx) == 0 {
			s.order = append(s.order, g)
		}
		g.idx = append(g.idx, i)
	}
	for part, js := range [2][]byte{j.js, j.js2} {
		from, to := 0, h
		if part == 1 {
			from, to = h, n
		}
		start := 0
		for i := from; i < to; i++ {
			if end := j.end(i, h); end >= 0 {
				j.fill.fill(i, &b.Events[i], js[start:end])
				start = end
			}
		}
	}
	j.n = 0
	for _, g := range s.order {
		if g.bad != nil {
			s.logErr(g.dir, g.bad)
			failed += len(g.idx)
			g.idx = g.idx[:0]
			continue
		}
		if j.n == len(j.groups) {
			j.groups = append(j.groups, jobGroup{})
		}
		jg := &j.groups[j.n]
		j.n++
		jg.dir, jg.counted = g.dir, 0
		rows := j.fill.rows
		if len(g.idx) != len(rows) {
			jg.scratch = jg.scratch[:0]
			for _, i := range g.idx {
				jg.scratch = append(jg.scratch, rows[i])
			}
			rows = jg.scratch
		}
		for _, i := range g.idx {
			if !b.Events[i].Reported {
				jg.counted++
			}
		}
		jg.rows = rows
		g.idx = g.idx[:0]
	}
	return failed
}

// splitMin is the smallest batch whose JSON encode splits in two parts.
const splitMin = 128

// encodeJSON appends the export JSON of events (without its newline) to
// js and where each ends to ends (-1 for an event that cannot be encoded,
// logged), and returns them with the number that failed.
func (s *Sink) encodeJSON(js []byte, ends []int, events []pipeline.Event) ([]byte, []int, int) {
	failed := 0
	for i := range events {
		start := len(js)
		var err error
		js, err = codec.JSON{}.Append(js, &events[i])
		if err != nil {
			js = js[:start]
			ends = append(ends, -1)
			failed++
			s.logErr("", err)
			continue
		}
		js = js[:len(js)-1] // the newline
		ends = append(ends, len(js))
	}
	return js, ends, failed
}

// end is where event i's JSON ends in its part of the batch (js before h,
// js2 from h on), or -1 when it could not be encoded.
func (j *job) end(i, h int) int {
	if i < h {
		return j.jsEnd[i]
	}
	return j.jsEnd2[i-h]
}

// group is the events of a batch that go to one directory.
type group struct {
	dir string
	bad error // the directory is not a clean path
	idx []int
}

// writer appends the queued jobs' rows to their files, in order.
func (s *Sink) writer() {
	defer close(s.wdone)
	for j := range s.jobs {
		failed := 0
		j.hold()
		s.pm.Lock()
		// A job whose rows all go to one file is held by its cluster;
		// one split between files is copied (see cluster).
		whole := j
		if j.n > 1 || !j.dense() {
			whole = nil
		}
		for k := range j.groups[:j.n] {
			failed += s.writeGroup(whole, &j.groups[k])
			j.groups[k].ack = nil
		}
		s.pm.Unlock()
		if j.wait {
			j.done <- failed
		}
		// Clusters may hold rows of j: Write gets a spare meanwhile.
		j.release()
		s.free <- s.spares.get(j)
	}
}

// writeGroup writes g's rows to the file of its directory and returns how
// many failed: their counted events are lost late. With j, the rows are
// the whole of j, which a cluster may hold; without, they are copied.
func (s *Sink) writeGroup(j *job, g *jobGroup) int {
	fail := func(err error) int {
		s.logErr(g.dir, err)
		if g.counted > 0 && s.lateLoss != nil {
			s.lateLoss(g.counted)
		}
		g.ack.Done(false)
		return len(g.rows)
	}
	s.poll()
	p, err := s.open(g.dir)
	if err != nil {
		return fail(err)
	}
	p.counted += g.counted
	if g.ack != nil {
		p.acks = append(p.acks, g.ack)
	}
	// Rows the runtime reports again when they fail (flowbus's own
	// LostEvents) are written at once, so that Write learns their fate.
	if err := s.put(p, j, g.rows, g.counted < len(g.rows)); err != nil {
		// The file's counted rows, these included, are lost with it.
		if !p.gone {
			s.logErr(g.dir, err)
			s.abandon(p, err)
		}
		return len(g.rows) - g.counted
	}
	// A file whose run is in flight is measured once it landed.
	if !s.inFlight(p) && p.size() >= s.maxSize {
		s.finish(p)
	}
	return 0
}

// open returns the open file of dir, opening one (and completing the least
// recently written file when max_open_files are open).
func (s *Sink) open(dir string) (*part, error) {
	if p, ok := s.parts[dir]; ok {
		p.used = time.Now()
		return p, nil
	}
	if len(s.parts) >= s.maxOpen {
		var old *part
		for _, p := range s.parts {
			if old == nil || p.used.Before(old.used) {
				old = p
			}
		}
		s.finish(old)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("cannot create the directory: %w", err)
	}
	s.seq++
	now := time.Now().UTC()
	base := fmt.Sprintf("%s-%s-%s-%d", s.node, now.Format("20060102T150405.000Z"), s.rnd, s.seq)
	c := s.clusters.get()
	p, err := openPart(dir, filepath.Join(dir, "."+base+tmpSuffix), filepath.Join(dir, base+".parquet"), s.writerOptions(), c)
	if err != nil {
		s.clusters.put(c)
		return nil, err
	}
	p.opened, p.used = now, now
	s.parts[dir] = p
	return p, nil
}

// finish completes p and forgets it; rows of a file that cannot be
// completed are lost.
func (s *Sink) finish(p *part) {
	if s.settle(); p.gone {
		return
	}
	p.gone = true
	delete(s.parts, p.dir)
	err := p.finish()
	s.clusters.put(p.c)
	if err != nil {
		s.logErr(p.dir, err)
		s.lose(p)
		return
	}
	p.resolve(true)
}

// abandon removes p after a failed write; its rows are lost.
func (s *Sink) abandon(p *part, err error) {
	if s.settle(); p.gone {
		return
	}
	p.gone = true
	delete(s.parts, p.dir)
	p.remove()
	s.clusters.put(p.c)
	s.lose(p)
	s.log.Error("parquet sink: file abandoned; its rows are lost", "file", p.final, "rows", p.counted, "error", err)
}

func (s *Sink) lose(p *part) {
	if p.counted > 0 && s.lateLoss != nil {
		s.lateLoss(p.counted)
	}
	p.counted = 0
	p.resolve(false)
}

// Close lets the writer goroutine write what is queued, then completes
// every open file, bounded by ctx: a file not completed when ctx ends is
// removed and its rows are lost.
func (s *Sink) Close(ctx context.Context) error {
	if s.stop != nil {
		close(s.stop)
		<-s.stopped
		s.stop = nil
	}
	s.mu.Lock()
	if !s.closed {
		s.closed = true
		close(s.jobs)
	}
	s.mu.Unlock()
	if s.stopped != nil { // started: the writer goroutine runs
		<-s.wdone
	}
	s.pm.Lock()
	defer s.pm.Unlock()
	s.settle()
	var errs []error
	for dir, p := range s.parts {
		if ctx.Err() != nil {
			delete(s.parts, dir)
			p.remove()
			s.lose(p)
			errs = append(errs, fmt.Errorf("%s: not completed before the shutdown deadline", p.final))
			continue
		}
		delete(s.parts, dir)
		if err := p.finish(); err != nil {
			s.lose(p)
			errs = append(errs, err)
			continue
		}
		p.resolve(true)
	}
	s.errMu.Lock()
	s.errs.Flush()
	s.errMu.Unlock()
	if len(errs) > 0 {
		return fmt.Errorf("parquet sink: %w", errors.Join(errs...))
	}
	return nil
}
