package file

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"google.golang.org/protobuf/encoding/protowire"
)

// backupTimeFormat names backups <base>-<UTC time><ext>, as Hubble's
// exporter does.
const backupTimeFormat = "2006-01-02T15-04-05.000"

// Suffixes of compressed backups, and of a compression in progress: the
// .gz appears (by rename) only once it is complete.
const (
	gzSuffix  = ".gz"
	tmpSuffix = ".gz.tmp"
)

// output is the open file the sink writes to: stdout, a plain file, or a
// file rotated by size. Every record it holds is whole: a write that fails
// half-way has its fragment cut off again (discard), a torn last record left
// by a killed process is cut off when the file is opened, backups appear by
// rename, and compressed backups appear by rename once complete.
type output struct {
	path  string // "" for stdout
	delim bool   // protobuf records (varint length prefixed), else lines
	log   *slog.Logger

	// Rotation; max == 0 turns it off.
	max        int64
	backups    int
	compress   bool
	lastRotate time.Time // the time the previous backup was named with

	f    *os.File
	size int64 // bytes in f

	mill *mill // compression and pruning of backups with compress
}

// open opens (creating it and its directory) the file and cuts off a torn
// last record.
func (o *output) open() error {
	if o.path == "" {
		o.f = os.Stdout
		return nil
	}
	if err := os.MkdirAll(filepath.Dir(o.path), 0o755); err != nil {
		return err
	}
	f, err := os.OpenFile(o.path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, fileMode)
	if err != nil {
		return err
	}
	size, err := o.repair(f)
	if err != nil {
		f.Close()
		return err
	}
	o.f, o.size = f, size
	if o.max > 0 {
		if o.compress {
			if o.mill == nil {
				o.mill = newMill(o)
			}
			o.mill.kick() // backups a killed run left uncompressed
		} else {
			o.prune()
		}
	}
	return nil
}

// repair makes f end with a whole record and returns its size. A process
// killed during a write leaves a torn last record: it is cut off. For
// lines, a last line that does not look like a record of this sink (a
// file written by something else) is kept and ended with a newline
// instead, so that the next record starts on a line of its own.
func (o *output) repair(f *os.File) (int64, error) {
	fi, err := f.Stat()
	if err != nil {
		return 0, err
	}
	size := fi.Size()
	if size == 0 || !fi.Mode().IsRegular() {
		return size, nil
	}
	r, err := os.Open(o.path)
	if err != nil {
		return 0, err
	}
	defer r.Close()
	var whole int64
	if o.delim {
		whole, err = wholeRecords(r, size)
	} else {
		whole, err = wholeLines(r, size)
	}
	if err != nil {
		return 0, fmt.Errorf("check the last record of %s: %w", o.path, err)
	}
	if whole == size {
		return size, nil
	}
	if !o.delim {
		var c [1]byte
		if _, err := r.ReadAt(c[:], whole); err != nil {
			return 0, fmt.Errorf("check the last record of %s: %w", o.path, err)
		}
		if c[0] != '{' {
			if _, err := f.Write([]byte{'\n'}); err != nil {
				return 0, fmt.Errorf("end the last line of %s: %w", o.path, err)
			}
			o.log.Warn("file sink: the file's last line was not ended; ended it with a newline",
				"file", o.path, "line_bytes", size-whole)
			return size + 1, nil
		}
	}
	if err := f.Truncate(whole); err != nil {
		return 0, fmt.Errorf("cut off the torn last record of %s: %w", o.path, err)
	}
	o.log.Warn("file sink: cut off a torn last record left by an earlier run (a process killed during a write)",
		"file", o.path, "bytes", size-whole, "size", whole)
	return whole, nil
}

// wholeLines returns the length of r's content up to its last '\n'.
func wholeLines(r io.ReaderAt, size int64) (int64, error) {
	buf := make([]byte, 64<<10)
	for end := size; end > 0; {
		start := max(end-int64(len(buf)), 0)
		p := buf[:end-start]
		if _, err := r.ReadAt(p, start); err != nil {
			return 0, err
		}
		if i := bytes.LastIndexByte(p, '\n'); i >= 0 {
			return start + int64(i) + 1, nil
		}
		end = start
	}
	return 0, nil
}

// wholeRecords returns the length of r's content up to the end of its last
// whole length-delimited record. It reads the file from its start, skipping
// over each message.
func wholeRecords(r io.Reader, size int64) (int64, error) {
	br := bufio.NewReaderSize(r, 64<<10)
	var off int64
	for off < size {
		var prefix [binaryMaxVarint]byte
		n := 0
		for {
			c, err := br.ReadByte()
			if err == io.EOF {
				return off, nil // torn in the length
			}
			if err != nil {
				return 0, err
			}
			if n == len(prefix) {
				// Not a length: not a torn tail but a file this sink cannot
				// have written; leave it alone.
				return size, nil
			}
			prefix[n] = c
			n++
			if c < 0x80 {
				break
			}
		}
		length, vn := protowire.ConsumeVarint(prefix[:n])
		if vn < 0 || length > uint64(size) {
			return size, nil // not a length this sink wrote: leave the file alone
		}
		if off+int64(n)+int64(length) > size {
			return off, nil // torn in the message
		}
		if _, err := br.Discard(int(length)); err != nil {
			return 0, err
		}
		off += int64(n) + int64(length)
	}
	return off, nil
}

const binaryMaxVarint = 10

// write writes p, first rotating the file if p would take it over the
// rotation size.
func (o *output) write(p []byte) (int, error) {
	if o.f == nil {
		if err := o.reopen(); err != nil {
			return 0, err
		}
	}
	if o.max > 0 && o.size > 0 && o.size+int64(len(p)) > o.max {
		if err := o.rotate(); err != nil {
			return 0, err
		}
	}
	n, err := o.f.Write(p)
	o.size += int64(n)
	return n, err
}

// reopen opens the file again after a rotation could not create it.
func (o *output) reopen() error {
	f, err := os.OpenFile(o.path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, fileMode)
	if err != nil {
		return err
	}
	size, err := o.repair(f)
	if err != nil {
		f.Close()
		return err
	}
	o.f, o.size = f, size
	return nil
}

// discard removes the last n bytes written: the fragment of a record a
// failed write left.
func (o *output) discard(n int) error {
	if n <= 0 {
		return nil
	}
	fi, err := o.f.Stat()
	if err != nil {
		return err
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("%d bytes of a record were written to a %s, which cannot be cut", n, fi.Mode().Type())
	}
	size := fi.Size() - int64(n)
	if err := o.f.Truncate(size); err != nil {
		return err
	}
	// Without O_APPEND (stdout redirected with >), the next write goes to
	// the offset: move it back too.
	if _, err := o.f.Seek(size, io.SeekStart); err != nil {
		return err
	}
	o.size -= int64(n)
	return nil
}

// rotate renames the current file to a backup named after the time and
// starts a new file. The file is closed first, so the backup holds whole
// records only.
func (o *output) rotate() error {
	dir, base, ext := o.parts()
	var t time.Time
	var backup string
	for {
		t = time.Now().UTC().Truncate(time.Millisecond)
		if !o.lastRotate.IsZero() && !t.After(o.lastRotate) {
			// Backups are named to the millisecond: a second rotation in
			// the same millisecond waits for the next one.
			time.Sleep(o.lastRotate.Add(time.Millisecond).Sub(t))
			continue
		}
		backup = filepath.Join(dir, base+"-"+t.Format(backupTimeFormat)+ext)
		if !exists(backup) && !exists(backup+gzSuffix) {
			break
		}
		o.lastRotate = t // taken by an earlier run: try the next millisecond
	}
	if err := o.f.Close(); err != nil {
		o.f = nil
		return err
	}
	o.f, o.size = nil, 0
	if err := os.Rename(o.path, backup); err != nil {
		return err
	}
	o.lastRotate = t
	if err := o.reopen(); err != nil {
		return err
	}
	if o.compress {
		o.mill.kick()
	} else {
		o.prune()
	}
	return nil
}

func exists(path string) bool {
	_, err := os.Lstat(path)
	return err == nil
}

// parts splits the path into its directory, base name without extension,
// and extension.
func (o *output) parts() (dir, base, ext string) {
	dir = filepath.Dir(o.path)
	name := filepath.Base(o.path)
	ext = filepath.Ext(name)
	return dir, strings.TrimSuffix(name, ext), ext
}

// backup is one rotated-out file, plain, compressed or both (while being
// compressed, or after a run killed between the rename and the removal).
type backup struct {
	t     time.Time
	plain string // path of the uncompressed backup, or ""
	gz    string // path of the compressed backup, or ""
	tmp   string // path of an unfinished compression, or ""
}

// listBackups returns the backups of the file, newest first.
func (o *output) listBackups() ([]*backup, error) {
	dir, base, ext := o.parts()
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	byTime := map[time.Time]*backup{}
	prefix := base + "-"
	for _, e := range entries {
		name := e.Name()
		if !strings.HasPrefix(name, prefix) || !e.Type().IsRegular() {
			continue
		}
		rest := name[len(prefix):]
		var kind int // 0 plain, 1 gz, 2 tmp
		switch {
		case strings.HasSuffix(rest, ext+tmpSuffix):
			rest, kind = strings.TrimSuffix(rest, ext+tmpSuffix), 2
		case strings.HasSuffix(rest, ext+gzSuffix):
			rest, kind = strings.TrimSuffix(rest, ext+gzSuffix), 1
		case strings.HasSuffix(rest, ext):
			rest = strings.TrimSuffix(rest, ext)
		default:
			continue
		}
		t, err := time.Parse(backupTimeFormat, rest)
		if err != nil {
			continue
		}
		b := byTime[t]
		if b == nil {
			b = &backup{t: t}
			byTime[t] = b
		}
		path := filepath.Join(dir, name)
		switch kind {
		case 0:
			b.plain = path
		case 1:
			b.gz = path
		default:
			b.tmp = path
		}
	}
	list := make([]*backup, 0, len(byTime))
	for _, b := range byTime {
		list = append(list, b)
	}
	slices.SortFunc(list, func(a, b *backup) int { return b.t.Compare(a.t) })
	return list, nil
}

// prune removes the backups beyond the newest max backups, compressed or
// not, and returns the ones kept.
func (o *output) prune() []*backup {
	list, err := o.listBackups()
	if err != nil {
		o.log.Error("file sink: cannot list backups", "file", o.path, "error", err)
		return nil
	}
	if len(list) <= o.backups {
		return list
	}
	for _, b := range list[o.backups:] {
		for _, p := range []string{b.plain, b.gz, b.tmp} {
			if p == "" {
				continue
			}
			if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
				o.log.Error("file sink: cannot remove an old backup", "file", p, "error", err)
			}
		}
	}
	return list[:o.backups]
}

// close closes the file and finishes, or at ctx's end abandons and cleans
// up, the compression of backups. Stdout is left open.
func (o *output) close(ctx context.Context) error {
	var err error
	if o.f != nil && o.path != "" {
		err = o.f.Close()
	}
	o.f = nil
	if o.mill != nil {
		o.mill.stop(ctx)
		o.mill = nil
	}
	return err
}

// mill compresses and prunes backups on its own goroutine, one pass at a
// time, so that writes do not wait for gzip.
type mill struct {
	o      *output
	kickCh chan struct{}
	quit   chan struct{}
	done   chan struct{}
	ctx    context.Context
	cancel context.CancelFunc
	once   sync.Once
}

func newMill(o *output) *mill {
	ctx, cancel := context.WithCancel(context.Background())
	m := &mill{o: o, kickCh: make(chan struct{}, 1), quit: make(chan struct{}), done: make(chan struct{}), ctx: ctx, cancel: cancel}
	go m.run()
	return m
}

// kick asks for a pass.
func (m *mill) kick() {
	select {
	case m.kickCh <- struct{}{}:
	default:
	}
}

func (m *mill) run() {
	defer close(m.done)
	for {
		select {
		case <-m.kickCh:
			m.pass()
		case <-m.quit:
			select {
			case <-m.kickCh:
				m.pass()
			default:
			}
			return
		}
	}
}

// stop lets the pending pass finish, bounded by ctx; at ctx's end the
// compression in progress is abandoned and its partial file removed (the
// plain backup stays and is compressed at the next start).
func (m *mill) stop(ctx context.Context) {
	m.once.Do(func() { close(m.quit) })
	select {
	case <-m.done:
	case <-ctx.Done():
		m.o.log.Warn("file sink: compression of backups abandoned at shutdown; the plain backups stay", "file", m.o.path)
		m.cancel()
		<-m.done
	}
	m.cancel()
}

// pass prunes the backups, removes unfinished compressions and compresses
// the plain backups kept, newest first. It prunes again before each
// compression, so that backups rotated meanwhile never pile up beyond
// max_backups while gzip runs behind.
func (m *mill) pass() {
	o := m.o
	tmpChecked := false
	for m.ctx.Err() == nil {
		var next *backup
		for _, b := range o.prune() {
			if b.tmp != "" && !tmpChecked {
				os.Remove(b.tmp) // only this goroutine compresses: a leftover
			}
			if b.plain == "" {
				continue
			}
			if b.gz != "" {
				// Compressed completely by a run killed before it removed
				// the plain file.
				if err := os.Remove(b.plain); err != nil && !errors.Is(err, os.ErrNotExist) {
					o.log.Error("file sink: cannot remove a compressed backup's plain file", "file", b.plain, "error", err)
				}
				continue
			}
			if next == nil {
				next = b
			}
		}
		tmpChecked = true
		if next == nil {
			return
		}
		if err := compressFile(m.ctx, next.plain); err != nil {
			if m.ctx.Err() == nil && !errors.Is(err, os.ErrNotExist) {
				o.log.Error("file sink: cannot compress a backup", "file", next.plain, "error", err)
			}
			return
		}
	}
}

// compressFile gzips path into path.gz: it writes path.gz.tmp, syncs it,
// renames it to path.gz and removes path. On failure or cancellation it
// removes path.gz.tmp and leaves path.
func compressFile(ctx context.Context, path string) (err error) {
	src, err := os.Open(path)
	if err != nil {
		return err
	}
	defer src.Close()
	fi, err := src.Stat()
	if err != nil {
		return err
	}
	tmp := path + tmpSuffix
	dst, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, fi.Mode().Perm())
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			dst.Close()
			os.Remove(tmp)
		}
	}()
	zw := gzip.NewWriter(dst)
	buf := make([]byte, 256<<10)
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		n, rerr := src.Read(buf)
		if n > 0 {
			if _, err := zw.Write(buf[:n]); err != nil {
				return err
			}
		}
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			return rerr
		}
	}
	if err := zw.Close(); err != nil {
		return err
	}
	if err := dst.Sync(); err != nil {
		return err
	}
	if err := dst.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp, path+gzSuffix); err != nil {
		return err
	}
	return os.Remove(path)
}
