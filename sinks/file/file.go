// Package file is the `file` sink: it writes events to a file or stdout as
// Hubble export JSON lines, or as length-delimited binary
// observer.GetFlowsResponse messages (protodelim: each message prefixed by
// its length as a varint). A file can rotate by size the way Hubble's
// exporter does. Its keys: `flowbus components file`, or
// docs/components.md.
//
// A file holds whole records only. A write that fails part-way (a full
// disk) has the fragment it left cut off again; its events are reported as
// failed, and the LostEvent for them is written whole once space returns.
// A process killed during a write can leave a torn last record: the next
// start cuts it off (logged with its size). Backups appear by rename of a
// closed file; with compress, a .gz appears by rename once complete (a
// .gz.tmp beside the plain backup is an unfinished one, finished at the
// next start), backups are pruned to max_backups counting compressed ones,
// and Close waits for the compression, bounded by its context.
//
// When the reader of stdout goes away (EPIPE), the sink writing to it fails
// alone: every later event is reported as failed, the rest of the pipeline
// runs on.
package file

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"google.golang.org/protobuf/encoding/protowire"

	"github.com/flowbus/flowbus/codec"
	"github.com/flowbus/flowbus/internal/sinkutil"
	"github.com/flowbus/flowbus/pipeline"
)

func init() {
	pipeline.RegisterSink(pipeline.Spec{
		Type:        "file",
		Summary:     "writes events to a file or stdout as Hubble export JSON lines, or length-delimited protobuf, with Hubble's size rotation",
		Description: `With encoding json each line is a Hubble export GetFlowsResponse, as hubble observe -o jsonpb and Hubble's file exporter write it; with encoding protobuf each binary GetFlowsResponse is prefixed by its length as a varint. The file is opened (and its directory created) at start and appended to. With rotate, the file is rotated before a write would take it over max_size_mb, like Hubble's exporter; backups are named <base>-<UTC time><ext>.`,
		Example: `type: file
inputs: [flows]
encoding: json
path: /var/log/flowbus/flows.json
rotate:
  max_size_mb: 10
  max_backups: 5
  compress: true
`,
	}, New)
}

// Options are the sink's config keys.
type Options struct {
	// Path is the file to write; "-" writes to stdout. A relative path is
	// taken from the config file's directory.
	Path   string  `yaml:"path" required:"true" doc:"the file to write (relative to the config file's directory), or - for stdout"`
	Rotate *Rotate `yaml:"rotate" doc:"rotate the file by size, as Hubble's exporter does; default: no rotation"`
}

// Rotate is the size rotation of Hubble's exporter: the file is rotated
// before a write would take it over MaxSizeMB; backups are named
// <base>-<UTC time 2006-01-02T15-04-05.000><ext>, gzipped with Compress,
// and only the newest MaxBackups are kept.
type Rotate struct {
	MaxSizeMB  int  `yaml:"max_size_mb" default:"10" doc:"rotate before the file would exceed this many megabytes (Hubble's default)"`
	MaxBackups int  `yaml:"max_backups" default:"5" doc:"how many rotated files are kept (Hubble's default)"`
	Compress   bool `yaml:"compress" default:"false" doc:"gzip the rotated files"`
}

// fileMode is the mode of new files, as Hubble's exporter creates them.
const fileMode = 0o644

// Sink writes encoded events.
type Sink struct {
	enc      codec.Encoder
	delim    bool // protobuf: prefix each message with its length
	maxWrite int  // largest single write (rotation size), 0 = any
	log      *slog.Logger
	name     string

	mu     sync.Mutex // Write and Close
	out    *output
	opened bool  // out is open
	broken error // stdout's reader went away: every later event fails
	buf    []byte
	evs    []span // the events encoded in buf
	errs   sinkutil.ErrorLog
}

// span is one encoded event in Sink.buf.
type span struct {
	end int
}

// New builds a file sink from its options.
func New(b *pipeline.Build, o *Options) (*Sink, error) {
	enc, err := codec.ForBuild(b)
	if err != nil {
		return nil, b.Errorf("", "file sink: %v", err)
	}
	log := b.Log
	if log == nil {
		log = slog.Default()
	}
	s := &Sink{
		enc:   enc,
		delim: b.Encoding == "protobuf",
		log:   log,
		errs:  sinkutil.ErrorLog{Log: log, Every: 10 * time.Second, Sink: "file sink", Key: "file"},
	}
	switch {
	case o.Path == "":
		return nil, b.Errorf("path", "file sink: path is empty: want a file, or - for stdout")
	case o.Path == "-":
		if o.Rotate != nil {
			return nil, b.Errorf("rotate", "file sink: rotate needs a file, not stdout")
		}
		s.out, s.name = &output{log: log}, "stdout"
		return s, nil
	}
	path := o.Path
	if !filepath.IsAbs(path) {
		path = filepath.Join(b.Dir, path)
	}
	s.name = path
	s.out = &output{path: path, delim: s.delim, log: log}
	if o.Rotate == nil {
		return s, nil
	}
	r := *o.Rotate
	if r.MaxSizeMB < 1 {
		return nil, b.Errorf("rotate.max_size_mb", "file sink: max_size_mb must be at least 1")
	}
	if r.MaxBackups < 1 {
		return nil, b.Errorf("rotate.max_backups", "file sink: max_backups must be at least 1")
	}
	s.out.max, s.out.backups, s.out.compress = int64(r.MaxSizeMB)<<20, r.MaxBackups, r.Compress
	s.maxWrite = r.MaxSizeMB << 20
	return s, nil
}

// Start opens the file (creating it and its directory), so that a path
// that cannot be written fails before the pipeline runs. An existing file
// is appended to, after cutting off a torn last record that a process
// killed during a write left.
func (s *Sink) Start(context.Context) error {
	if s.opened {
		return nil
	}
	if err := s.out.open(); err != nil {
		return fmt.Errorf("file sink: %w", err)
	}
	s.opened = true
	return nil
}

// Write encodes the batch into one buffer and writes it with one call (with
// rotation, one call per part that fits the size limit; an event is never
// split across files).
func (s *Sink) Write(ctx context.Context, b *pipeline.Batch) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.broken != nil {
		return b.Len(), nil
	}
	if !s.opened {
		if err := s.Start(ctx); err != nil {
			s.errs.Add(s.name, err)
			return b.Len(), nil
		}
	}
	failed := 0
	s.buf, s.evs = s.buf[:0], s.evs[:0]
	for i := range b.Events {
		e := &b.Events[i]
		start := len(s.buf)
		var err error
		if s.delim {
			s.buf, err = s.appendDelimited(s.buf, e)
		} else {
			s.buf, err = s.enc.Append(s.buf, e)
		}
		if err == nil && s.maxWrite > 0 && len(s.buf)-start > s.maxWrite {
			err = fmt.Errorf("event of %d bytes is larger than max_size_mb", len(s.buf)-start)
		}
		if err != nil {
			s.buf = s.buf[:start]
			failed++
			s.errs.Add(s.name, err)
			continue
		}
		s.evs = append(s.evs, span{end: len(s.buf)})
	}
	return failed + s.write(), nil
}

// write writes the encoded events and returns how many it could not write.
func (s *Sink) write() int {
	start, first := 0, 0 // byte offset and index of the next unwritten event
	for first < len(s.evs) {
		// The largest run of events from first that fits one write.
		last := len(s.evs) - 1
		if s.maxWrite > 0 {
			last = first
			for last+1 < len(s.evs) && s.evs[last+1].end-start <= s.maxWrite {
				last++
			}
		}
		end := s.evs[last].end
		n, err := s.out.write(s.buf[start:end])
		if err != nil {
			// Events wholly written before the error are delivered; the
			// fragment of the next one is cut off again, so that the
			// output never holds a partial record.
			done, whole := first, 0
			for done <= last && s.evs[done].end-start <= n {
				whole = s.evs[done].end - start
				done++
			}
			s.writeFailed(err, n-whole)
			return len(s.evs) - done
		}
		start, first = end, last+1
	}
	return 0
}

// appendDelimited appends e as a varint length and the message.
func (s *Sink) appendDelimited(dst []byte, e *pipeline.Event) ([]byte, error) {
	// Reserve two bytes for the length (messages below 16 KiB), and move
	// the message if its length needs another size.
	const reserved = 2
	start := len(dst)
	dst = append(dst, 0, 0)
	dst, err := s.enc.Append(dst, e)
	if err != nil {
		return dst[:start], err
	}
	size := len(dst) - start - reserved
	n := protowire.SizeVarint(uint64(size))
	if n != reserved {
		for range n - reserved { // only when n > reserved
			dst = append(dst, 0)
		}
		copy(dst[start+n:], dst[start+reserved:start+reserved+size])
		dst = dst[:start+n+size]
	}
	protowire.AppendVarint(dst[start:start], uint64(size))
	return dst, nil
}

// writeFailed handles a failed write that left fragment bytes of a record.
func (s *Sink) writeFailed(err error, fragment int) {
	if errors.Is(err, syscall.EPIPE) {
		// The reader of the pipe (stdout piped into `head`) went away: no
		// later write can succeed. This sink fails alone; its events are
		// counted as lost, the rest of the pipeline runs on.
		s.broken = err
		s.log.Error("file sink: the reader of the pipe went away; this sink's events are lost from now on",
			"file", s.name, "error", err)
		return
	}
	s.errs.Add(s.name, err)
	if derr := s.out.discard(fragment); derr != nil {
		// The fragment stays: close the file, so that the next write
		// opens it again and cuts off the torn record first.
		s.log.Error("file sink: cannot cut off a partially written record", "file", s.name, "error", derr)
		if cerr := s.out.close(context.Background()); cerr != nil {
			s.log.Error("file sink: close", "file", s.name, "error", cerr)
		}
		s.opened = false
	}
}

// Close closes the file; nothing is buffered, so every written event is in
// the file. With compress, it waits for the compression of backups (bounded
// by ctx; at ctx's end the partial .gz is removed and the plain backup
// stays). Stdout is left open.
func (s *Sink) Close(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.errs.Flush()
	if !s.opened {
		return nil
	}
	s.opened = false
	err := s.out.close(ctx)
	if err != nil {
		return fmt.Errorf("file sink: close %s: %w", s.name, err)
	}
	return nil
}
