// Package file is the `file` source: it reads Hubble JSON lines (Hubble
// exporter files and `hubble observe -o jsonpb` output) from a file or
// stdin. Flow and lost_events lines become events that keep every field
// they had; agent, debug and node-status lines are counted and skipped;
// malformed lines are counted, logged with their line number and skipped.
// With follow, the source keeps reading lines appended to the file, and
// reopens it when it is truncated or rotated, like `tail -F`:
//   - rotation by rename (or delete and create) is noticed by the inode;
//     the old file stays open and is read for a grace period (5s), for the lines
//     its writer adds before it reopens the path;
//   - truncation is noticed by the size, or, when the file was truncated and
//     written past the read position between two polls, by the bytes before
//     the read position having changed; the file is then read from its
//     start. The lines written after the last read and before the
//     truncation are read from a copy beside the file when there is one
//     (logrotate's copytruncate); otherwise the bytes known to have existed
//     (seen by the size) are reported lost in a LostEvent, their line count
//     estimated from the average line length, and logged.
//
// Its keys: `flowbus components file`, or docs/components.md.
package file

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	flowpb "github.com/flowbus/flowbus/flow"
	"github.com/flowbus/flowbus/pipeline"
)

func init() {
	pipeline.RegisterSource(pipeline.Spec{
		Type:        "file",
		Summary:     "reads Hubble JSON lines (Hubble exporter files, hubble observe -o jsonpb) from a file or stdin",
		Description: `Flow and lost_events lines become events that keep every field they had; agent, debug and node-status lines are counted and skipped; malformed lines are counted, logged with their line number and skipped. Without follow the source ends at the end of the input, and the pipeline drains and exits. With follow it keeps reading lines appended to the file and reopens it when it is truncated or rotated, like tail -F.`,
		Example: `type: file
path: /var/run/cilium/hubble/events.log
follow: true
`,
	}, New)
}

// Options are the source's config keys.
type Options struct {
	// Path is the file to read; "-" reads stdin. A relative path is taken
	// from the config file's directory.
	Path string `yaml:"path" required:"true" doc:"the file to read (relative to the config file's directory), or - for stdin"`
	// Follow keeps reading lines appended to the file until the pipeline
	// stops, and follows truncation and rotation.
	Follow bool `yaml:"follow" default:"false" doc:"keep reading appended lines until the pipeline stops, following truncation and rotation (a file only)"`
}

// defaultPoll is how often a followed file is checked at its end.
const defaultPoll = 250 * time.Millisecond

// Source reads Hubble JSON lines.
type Source struct {
	path   string // "" for stdin
	follow bool
	log    *slog.Logger
	m      *metrics
	dec    lineDecoder
	poll   time.Duration
	report *malformedLog
	grace  time.Duration // how long a file rotated away is still read

	f   *os.File    // opened by Start
	ran atomic.Bool // Run was called: it closes f
}

// New builds a file source from its options.
func New(b *pipeline.Build, o *Options) (*Source, error) {
	switch {
	case o.Path == "":
		return nil, b.Errorf("path", "file source: path is empty: want a file, or - for stdin")
	case o.Path == "-" && o.Follow:
		return nil, b.Errorf("follow", "file source: follow needs a file; stdin is read until it closes")
	}
	path := o.Path
	if path == "-" {
		path = ""
	} else if !filepath.IsAbs(path) {
		path = filepath.Join(b.Dir, path)
	}
	log := b.Log
	if log == nil {
		log = slog.Default()
	}
	m, err := newMetrics(b.Metrics)
	if err != nil {
		return nil, fmt.Errorf("file source %s: %w", b.Name, err)
	}
	return &Source{
		path:   path,
		follow: o.Follow,
		log:    log,
		m:      m,
		dec:    newFlowjsonDecoder(),
		poll:   defaultPoll,
		grace:  defaultRotateGrace,
		report: &malformedLog{log: log, every: 10 * time.Second},
	}, nil
}

// Start opens the file, so that a missing file fails before the pipeline
// runs. A followed file that does not exist yet is waited for instead.
func (s *Source) Start(context.Context) error {
	if s.path == "" {
		return nil
	}
	f, err := os.Open(s.path)
	if err != nil {
		if s.follow && errors.Is(err, os.ErrNotExist) {
			s.log.Info("waiting for the file to appear", "path", s.path)
			return nil
		}
		return fmt.Errorf("file source: %w", err)
	}
	s.f = f
	return nil
}

// Stop closes the file Start opened when Run never ran (a component
// started after this source failed to start).
func (s *Source) Stop(context.Context) error {
	if !s.ran.Load() && s.f != nil {
		f := s.f
		s.f = nil
		return f.Close()
	}
	return nil
}

// Run reads until the input ends (or, with follow, until ctx ends).
func (s *Source) Run(ctx context.Context, out pipeline.Output) error {
	s.ran.Store(true)
	defer s.report.flush()
	if s.path == "" {
		return s.readStream(ctx, out, os.Stdin, "stdin")
	}
	if s.f == nil && !s.follow {
		if err := s.Start(ctx); err != nil {
			return err
		}
	}
	if s.follow && s.f != nil {
		if fi, err := s.f.Stat(); err == nil && !fi.Mode().IsRegular() {
			// A FIFO is followed by reading it until its writers close it.
			defer s.f.Close()
			return s.readStream(ctx, out, s.f, s.path)
		}
	}
	if !s.follow {
		defer s.f.Close()
		fi, err := s.f.Stat()
		if err == nil && !fi.Mode().IsRegular() {
			// A FIFO or device can block: read it like stdin.
			return s.readStream(ctx, out, s.f, s.path)
		}
		e := s.newEmitter(ctx, out)
		r := newLineReader(s.f)
		if err := e.drain(r, s.path, true); err != nil {
			return e.stop(err)
		}
		return e.stop(nil)
	}
	return s.runFollow(ctx, out)
}

// readStream reads a blocking stream to its end, emitting a partial batch
// whenever the next read might block.
func (s *Source) readStream(ctx context.Context, out pipeline.Output, rd io.Reader, name string) error {
	e := s.newEmitter(ctx, out)
	e.flushWhenIdle = true
	r := newLineReader(newCancelReader(ctx, rd))
	e.idle = func() bool { return r.br.Buffered() == 0 }
	return e.stop(e.drain(r, name, true))
}

// followed is a file being followed: the current one, or one that was
// rotated away (renamed or deleted) and is still read during the grace
// period, for the lines its writer adds before it reopens the path.
type followed struct {
	f    *os.File
	r    *lineReader
	name string
	line int64 // line number in the file
	// seen is the largest size fstat reported: bytes up to it existed even
	// if a truncation removes them before they are read.
	seen int64
	// tail holds the last bytes read, up to fingerprintBytes, ending at
	// r.n: when they change in place, the file was truncated and written
	// again since the last poll, even if it is not smaller than before.
	tail    []byte
	tailEnd int64     // the read position tail ends at
	until   time.Time // rotated away: read until then
}

// fingerprintBytes is how many of the last bytes read identify the
// position in a followed file.
const fingerprintBytes = 256

// defaultRotateGrace is how long a file rotated away is still read: a
// writer goes on writing to it until it reopens the path.
const defaultRotateGrace = 5 * time.Second

func newFollowed(f *os.File, name string) *followed {
	return &followed{f: f, r: newLineReader(f), name: name}
}

// drainFile reads the complete lines of fo (with final, its unfinished
// last line too).
func (e *emitter) drainFile(fo *followed, final bool) error {
	e.line = fo.line
	err := e.drain(fo.r, fo.name, final)
	fo.line = e.line
	return err
}

// remember keeps the fingerprint of fo's read position.
func (fo *followed) remember() {
	off := fo.r.n
	fo.seen = max(fo.seen, off)
	if fo.tail != nil && fo.tailEnd == off {
		return
	}
	n := min(off, fingerprintBytes)
	buf := make([]byte, n)
	if _, err := fo.f.ReadAt(buf, off-n); err != nil {
		fo.tail = nil // truncated meanwhile: the size check notices
		return
	}
	fo.tail, fo.tailEnd = buf, off
}

// rewritten reports whether the bytes before fo's read position changed.
func (fo *followed) rewritten() bool {
	if len(fo.tail) == 0 {
		return false
	}
	buf := make([]byte, len(fo.tail))
	if _, err := fo.f.ReadAt(buf, fo.r.n-int64(len(buf))); err != nil {
		return true
	}
	return !bytes.Equal(buf, fo.tail)
}

// runFollow reads a file as it grows, follows truncation and rotation,
// and reads files rotated away during the grace period.
func (s *Source) runFollow(ctx context.Context, out pipeline.Output) error {
	e := s.newEmitter(ctx, out)
	var cur *followed
	var old []*followed
	if s.f != nil {
		cur = newFollowed(s.f, s.path)
		s.f = nil
	}
	defer func() {
		if cur != nil {
			cur.f.Close()
		}
		for _, o := range old {
			o.f.Close()
		}
	}()
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		// Rotated files first: their lines are older than the current
		// file's.
		kept := old[:0]
		for _, o := range old {
			done := time.Now().After(o.until)
			if err := e.drainFile(o, done); err != nil {
				return e.stop(err)
			}
			if done {
				o.f.Close()
				continue
			}
			kept = append(kept, o)
		}
		clear(old[len(kept):])
		old = kept
		if cur != nil {
			if fi, err := cur.f.Stat(); err == nil {
				cur.seen = max(cur.seen, fi.Size())
			}
			if err := e.drainFile(cur, false); err != nil {
				return e.stop(err)
			}
			cur.remember()
		}
		if err := e.flush(); err != nil {
			return e.stop(err)
		}
		s.report.tick()
		timer.Reset(s.poll)
		select {
		case <-ctx.Done():
			return e.stop(nil)
		case <-timer.C:
		}
		if err := s.checkFile(e, &cur, &old); err != nil {
			return e.stop(err)
		}
	}
}

// checkFile notices a followed file that appeared, was truncated or was
// replaced (rotated).
func (s *Source) checkFile(e *emitter, cur **followed, old *[]*followed) error {
	fi, err := os.Stat(s.path)
	missing := errors.Is(err, os.ErrNotExist)
	if err != nil && !missing {
		return fmt.Errorf("file source: %w", err)
	}
	if *cur == nil {
		if missing {
			return nil
		}
		f, err := os.Open(s.path)
		if err != nil {
			if errors.Is(err, os.ErrNotExist) {
				return nil
			}
			return fmt.Errorf("file source: %w", err)
		}
		s.log.Info("following file", "path", s.path)
		*cur = newFollowed(f, s.path)
		return nil
	}
	c := *cur
	cs, err := c.f.Stat()
	if err != nil {
		return fmt.Errorf("file source: %w", err)
	}
	if !missing && !os.SameFile(fi, cs) {
		// Rotated (renamed or deleted, and a new file created): the old
		// file is still read until the grace period ends, for the lines
		// its writer adds before reopening the path; the new one is read
		// from its start.
		f, err := os.Open(s.path)
		if err != nil {
			if errors.Is(err, os.ErrNotExist) {
				return nil
			}
			return fmt.Errorf("file source: %w", err)
		}
		c.until = time.Now().Add(s.grace)
		c.name = s.path + " (rotated)"
		*old = append(*old, c)
		*cur = newFollowed(f, s.path)
		s.m.reopened.WithLabelValues("rotated").Inc()
		s.log.Info("file rotated, reading the new file; the old one is read for a grace period",
			"path", s.path, "grace", s.grace)
		return nil
	}
	// Missing: rotated away and not yet recreated; keep reading it.
	if size := cs.Size(); size < c.r.n || c.rewritten() {
		return s.truncated(e, c, size)
	}
	c.seen = max(c.seen, cs.Size())
	return nil
}

// truncated starts reading c again from its start. The lines between the
// read position and the old end are read from a copy of the file when one
// is found (copytruncate rotation); otherwise the bytes known to have
// existed are counted as lost.
func (s *Source) truncated(e *emitter, c *followed, size int64) error {
	off := c.r.n
	from, recovered, err := s.readCopy(e, c)
	if err != nil {
		return err
	}
	lostBytes := c.seen - off
	if recovered > 0 {
		lostBytes = c.seen - (off + recovered)
	}
	avg := int64(0)
	if c.line > 0 {
		avg = max(off/c.line, 1)
	}
	if _, err := c.f.Seek(0, io.SeekStart); err != nil {
		return fmt.Errorf("file source: %w", err)
	}
	c.r.reset(c.f)
	c.line, c.seen, c.tail, c.tailEnd = 0, 0, nil, 0
	s.m.reopened.WithLabelValues("truncated").Inc()
	log := []any{"path", s.path, "read_bytes", off, "size", size}
	if from != "" {
		log = append(log, "copy", from, "bytes_from_copy", recovered)
	}
	if lostBytes <= 0 {
		s.log.Info("file truncated, reading from its start", log...)
		return nil
	}
	// Known lost: bytes that existed but were truncated before they were
	// read. Their lines are estimated from the average line length.
	lines := uint64(1)
	if avg > 0 {
		lines = uint64((lostBytes + avg - 1) / avg)
	}
	if err := e.flush(); err != nil {
		return err
	}
	e.out.Lost(flowpb.LostEventSource_UNKNOWN_LOST_EVENT_SOURCE, -1, lines)
	s.m.lost.Add(float64(lostBytes))
	s.log.Warn("file truncated before all its lines were read: reporting them as lost (lines estimated from the average line length)",
		append(log, "lost_bytes", lostBytes, "lost_lines", lines)...)
	return nil
}

// readCopy looks, beside the followed file, for a copy of it taken just
// before it was truncated (logrotate's copytruncate): a file at least as
// large as the read position with the same bytes before it. It reads the
// copy's lines from the read position and returns its path and the bytes
// it read past the position.
func (s *Source) readCopy(e *emitter, c *followed) (string, int64, error) {
	off := c.r.n
	if len(c.tail) == 0 {
		return "", 0, nil
	}
	dir := filepath.Dir(s.path)
	entries, err := os.ReadDir(dir)
	if err != nil {
		return "", 0, nil
	}
	cs, _ := c.f.Stat()
	for _, ent := range entries {
		if !ent.Type().IsRegular() {
			continue
		}
		path := filepath.Join(dir, ent.Name())
		fi, err := ent.Info()
		if err != nil || fi.Size() < off || (cs != nil && os.SameFile(fi, cs)) || path == s.path {
			continue
		}
		f, err := os.Open(path)
		if err != nil {
			continue
		}
		probe := make([]byte, len(c.tail))
		if _, err := f.ReadAt(probe, off-int64(len(probe))); err != nil || !bytes.Equal(probe, c.tail) {
			f.Close()
			continue
		}
		// The unfinished line held by the reader continues in the copy:
		// read it again from its start.
		start := off - c.r.pendingBytes()
		if _, err := f.Seek(start, io.SeekStart); err != nil {
			f.Close()
			continue
		}
		cp := &followed{f: f, r: newLineReader(f), name: path, line: c.line}
		err = e.drainFile(cp, true)
		f.Close()
		if err != nil {
			return "", 0, err
		}
		return path, start + cp.r.n - off, nil
	}
	return "", 0, nil
}

// emitter decodes lines into batches and emits them.
type emitter struct {
	s   *Source
	ctx context.Context
	out pipeline.Output
	b   *pipeline.Batch

	line int64 // line number in the current file

	// flushWhenIdle emits a partial batch when idle reports that the next
	// read may block (streams), so that events are not held back.
	flushWhenIdle bool
	idle          func() bool
}

func (s *Source) newEmitter(ctx context.Context, out pipeline.Output) *emitter {
	return &emitter{s: s, ctx: ctx, out: out}
}

// utf8BOM may start a file written on Windows.
var utf8BOM = []byte("\xef\xbb\xbf")

// errStopped is returned inside the emitter when ctx ended during Emit.
var errStopped = errors.New("stopped")

// drain decodes every complete line of r. At the end of the input (io.EOF)
// it returns nil; when final is set it also decodes an unfinished last line.
func (e *emitter) drain(r *lineReader, name string, final bool) error {
	for {
		if e.flushWhenIdle && e.b != nil && e.idle() {
			if err := e.flush(); err != nil {
				return err
			}
		}
		line, err := r.next()
		if err == io.EOF && final {
			line, err = r.finish()
		}
		switch {
		case err == nil:
		case errors.Is(err, errLineTooLong):
			e.line++
			e.s.m.malformed.Inc()
			e.s.report.add(name, e.line, err, nil)
			continue
		case err == io.EOF:
			return nil
		case e.ctx.Err() != nil:
			return errStopped
		default:
			return fmt.Errorf("file source: read %s: %w", name, err)
		}
		e.line++
		if e.line == 1 {
			line = bytes.TrimPrefix(line, utf8BOM)
		}
		if err := e.decode(line, name); err != nil {
			return err
		}
	}
}

// decode turns one line into an event in the current batch.
func (e *emitter) decode(line []byte, name string) error {
	if len(line) == 0 || isBlank(line) {
		return nil
	}
	if e.b == nil {
		e.b = pipeline.NewBatch()
	}
	ev := e.b.Next()
	kind, lossy, err := e.s.dec.decode(line, ev)
	if err != nil {
		e.b.Truncate(e.b.Len() - 1)
		e.s.m.malformed.Inc()
		e.s.report.add(name, e.line, err, line)
		return nil
	}
	if lossy {
		e.s.m.lossy.Inc()
		e.s.report.lossy(name, e.line, line)
	}
	if kind != kindFlow && kind != kindLost {
		e.b.Truncate(e.b.Len() - 1)
		e.s.m.skipped[kind].Inc()
		return nil
	}
	if e.b.AddInputBytes(len(line)); e.b.Len() >= pipeline.DefaultBatchSize || e.b.InputBytes() >= pipeline.DefaultBatchBytes {
		return e.flush()
	}
	return nil
}

// flush emits the current batch, if it holds events.
func (e *emitter) flush() error {
	b := e.b
	if b == nil {
		return nil
	}
	e.b = nil
	if b.Len() == 0 {
		b.Release()
		return nil
	}
	if err := e.out.Emit(e.ctx, b); err != nil {
		if e.ctx.Err() != nil {
			return errStopped
		}
		return fmt.Errorf("file source: emit: %w", err)
	}
	return nil
}

// stop emits what is pending (unless ctx ended) and maps the emitter's
// result to Run's.
func (e *emitter) stop(err error) error {
	if err == nil && e.ctx.Err() == nil {
		err = e.flush()
	}
	if e.b != nil {
		e.b.Release()
		e.b = nil
	}
	if err == errStopped || e.ctx.Err() != nil {
		return nil
	}
	return err
}

func isBlank(b []byte) bool {
	for _, c := range b {
		if c != ' ' && c != '\t' && c != '\r' {
			return false
		}
	}
	return true
}

// metrics are the source's Prometheus counters.
type metrics struct {
	malformed prometheus.Counter
	lossy     prometheus.Counter
	skipped   [len(kindNames)]prometheus.Counter
	reopened  *prometheus.CounterVec
	lost      prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		malformed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "flowbus_file_source_malformed_lines_total",
			Help: "Lines that are not valid Hubble JSON events, skipped.",
		}),
		lossy: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "flowbus_file_source_lossy_lines_total",
			Help: "Lines read after discarding fields or enum names unknown to this schema.",
		}),
		reopened: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "flowbus_file_source_reopened_total",
			Help: "Times a followed file was read again from its start, by reason (rotated, truncated).",
		}, []string{"reason"}),
		lost: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "flowbus_file_source_lost_bytes_total",
			Help: "Bytes of a followed file truncated before they could be read (their lines are reported in LostEvents).",
		}),
	}
	skipped := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "flowbus_file_source_skipped_lines_total",
		Help: "Valid lines that carry no flow or lost event (agent, debug, node status events), skipped.",
	}, []string{"kind"})
	for k := range m.skipped {
		if k := lineKind(k); k != kindFlow && k != kindLost {
			m.skipped[k] = skipped.WithLabelValues(kindNames[k])
		}
	}
	if reg == nil {
		return m, nil
	}
	for _, c := range []prometheus.Collector{m.malformed, m.lossy, m.reopened, m.lost, skipped} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("register metrics: %w", err)
		}
	}
	return m, nil
}
