// Package file is the `file` source: it reads Hubble JSON lines (Hubble
// exporter files and `hubble observe -o jsonpb` output) from a file or
// stdin. Flow and lost_events lines become events that keep every field
// they had; agent, debug and node-status lines are counted and skipped;
// malformed lines are counted, logged with their line number and skipped.
// With follow, the source keeps reading lines appended to the file, and
// reopens it when it is truncated or rotated, like `tail -F`. Its keys:
// `flowbus components file`, or docs/components.md.
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
		report: &malformedLog{log: log, every: 10 * time.Second},
	}, nil
}

// name is the input's name for logs.
func (s *Source) name() string {
	if s.path == "" {
		return "stdin"
	}
	return s.path
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

// runFollow reads a file as it grows, and reopens it after truncation or
// rotation.
func (s *Source) runFollow(ctx context.Context, out pipeline.Output) error {
	e := s.newEmitter(ctx, out)
	var r *lineReader
	if s.f != nil {
		r = newLineReader(s.f)
	}
	defer func() {
		if s.f != nil {
			s.f.Close()
		}
	}()
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		if s.f != nil {
			if err := e.drain(r, s.path, false); err != nil {
				return e.stop(err)
			}
			if err := e.flush(); err != nil {
				return e.stop(err)
			}
		}
		s.report.tick()
		timer.Reset(s.poll)
		select {
		case <-ctx.Done():
			return e.stop(nil)
		case <-timer.C:
		}
		if err := s.checkFile(e, &r); err != nil {
			return e.stop(err)
		}
	}
}

// checkFile notices a followed file that appeared, was truncated or was
// replaced (rotated), and positions r accordingly.
func (s *Source) checkFile(e *emitter, rp **lineReader) error {
	fi, err := os.Stat(s.path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil // rotated away and not yet recreated; keep the old file
		}
		return fmt.Errorf("file source: %w", err)
	}
	if s.f == nil {
		f, err := os.Open(s.path)
		if err != nil {
			if errors.Is(err, os.ErrNotExist) {
				return nil
			}
			return fmt.Errorf("file source: %w", err)
		}
		s.log.Info("following file", "path", s.path)
		s.f, *rp = f, newLineReader(f)
		e.line = 0
		return nil
	}
	r := *rp
	cur, err := s.f.Stat()
	if err != nil {
		return fmt.Errorf("file source: %w", err)
	}
	if !os.SameFile(fi, cur) {
		// Rotated: finish the old file (lines written before the rename),
		// then switch to the new one from its start.
		if err := e.drain(r, s.path, true); err != nil {
			return err
		}
		f, err := os.Open(s.path)
		if err != nil {
			if errors.Is(err, os.ErrNotExist) {
				return nil
			}
			return fmt.Errorf("file source: %w", err)
		}
		s.f.Close()
		s.f = f
		r.reset(f)
		e.line = 0
		s.m.reopened.WithLabelValues("rotated").Inc()
		s.log.Info("file rotated, reading the new file", "path", s.path)
		return nil
	}
	if fi.Size() < r.n {
		// Truncated in place: start again from the beginning.
		if _, err := s.f.Seek(0, io.SeekStart); err != nil {
			return fmt.Errorf("file source: %w", err)
		}
		r.reset(s.f)
		e.line = 0
		s.m.reopened.WithLabelValues("truncated").Inc()
		s.log.Info("file truncated, reading from its start", "path", s.path)
	}
	return nil
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
	if e.b.Len() >= pipeline.DefaultBatchSize {
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
	for _, c := range []prometheus.Collector{m.malformed, m.lossy, m.reopened, skipped} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("register metrics: %w", err)
		}
	}
	return m, nil
}
