// Package wal is the on-disk log behind a sink's disk buffer: an
// append-only sequence of records (opaque byte strings, one per pipeline
// batch) in segment files, each record framed by its length and a CRC-32C
// of its contents, read in order and removed from the front once
// acknowledged.
//
// Layout of a directory: segment files named by the index of their first
// record (`0000000000000001.seg`), each beginning with the 8-byte magic
// "FBWAL001" followed by records `[length u32 LE][crc32c u32 LE][payload]`,
// and an `ack` file holding the index of the first record not yet
// acknowledged, with its own CRC. A segment is deleted once every record in
// it is acknowledged; a new segment starts when the active one reaches
// SegmentBytes, and at every Open (a log never appends after what an
// earlier process left, so a torn tail is never extended; on a full file
// system, at the first Append after Open).
//
// Recovery (Open) reads every segment and checks every record's checksum.
// A record whose length or checksum is wrong, or that ends past the end of
// its file (a write torn by a crash), is not returned: it is reported to
// the caller as Corrupt (with its position and whatever of it could be
// read), and reading goes on at the next record when the length field was
// plausible, or at the next segment otherwise. A corrupt or missing ack
// file counts as "nothing acknowledged" in the remaining segments: their
// records are delivered again (duplicates, never losses).
//
// Durability: Append writes each record with one write(2). With SyncAlways
// it fsyncs the segment before returning; with SyncInterval a background
// fsync runs every interval (a power loss can cost the records appended in
// the last interval, a crash of the process nothing); SyncNever leaves it
// to the kernel's writeback. The ack file is written in place and synced
// like the segments; losing its last update re-delivers records, it never
// loses them.
package wal

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// SyncPolicy says when appended records are fsynced.
type SyncPolicy int

const (
	// SyncInterval fsyncs the active segment every Options.SyncInterval.
	SyncInterval SyncPolicy = iota
	// SyncAlways fsyncs every record before Append returns.
	SyncAlways
	// SyncNever never fsyncs; the kernel writes back on its own schedule.
	SyncNever
)

const (
	magic = "FBWAL001"
	// frame is the record header: length and CRC-32C.
	frame = 8
	// MaxRecord is the largest record accepted (and believed on recovery).
	MaxRecord = 256 << 20
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// ErrFull is returned by Append when the record does not fit in MaxBytes.
var ErrFull = errors.New("wal: the log is full")

// Options configure a log.
type Options struct {
	// MaxBytes bounds the size of the segment files together.
	MaxBytes int64
	// SegmentBytes is where a new segment starts; default MaxBytes/8,
	// between 1 MiB and 64 MiB, and at most MaxBytes/4 (DropOldest frees
	// a segment at a time).
	SegmentBytes int64
	Sync         SyncPolicy
	SyncInterval time.Duration
}

// Corrupt is a record recovery could not read.
type Corrupt struct {
	Segment string // file name
	Offset  int64
	// Index is the record's index (the first of the unreadable rest of
	// its segment, when its length could not be trusted).
	Index uint64
	// Partial is what could be read of the payload (possibly damaged).
	Partial []byte
	Reason  string
}

// Record is a readable record: its index and payload.
type Record struct {
	Index   uint64
	Payload []byte
}

type segment struct {
	first uint64 // index of its first record
	name  string
	size  int64
	recs  []loc // records in it, in order
}

type loc struct {
	index uint64
	off   int64
	n     int32
}

// Log is an open log. Its methods may be called from several goroutines.
type Log struct {
	dir  string
	opts Options
	lock *os.File

	mu     sync.Mutex
	segs   []*segment // oldest first
	active *os.File   // the last segment, open for appending
	next   uint64     // index of the next record appended
	acked  uint64     // first index not acknowledged
	read   uint64     // first index not yet returned by Next
	// dropFrom..dropUntil are records DropOldest gave up while the
	// record before them was in flight.
	dropFrom, dropUntil uint64
	size                int64 // bytes of all segments
	ackFile             *os.File
	dirty               bool // appended since the last fsync
	closed              bool
	wake                chan struct{}

	stop chan struct{}
	done chan struct{}
}

// Open opens (creating it when needed) the log in dir, recovers it and
// returns it with the records recovery could not read.
func Open(dir string, o Options) (*Log, []Corrupt, error) {
	if o.MaxBytes <= 0 {
		return nil, nil, errors.New("wal: MaxBytes must be positive")
	}
	if o.SegmentBytes <= 0 {
		o.SegmentBytes = min(max(o.MaxBytes/8, 1<<20), 64<<20, max(o.MaxBytes/4, 4096))
	}
	if o.SyncInterval <= 0 {
		o.SyncInterval = time.Second
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, nil, fmt.Errorf("wal: %w", err)
	}
	lock, err := os.OpenFile(filepath.Join(dir, "lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, nil, fmt.Errorf("wal: %w", err)
	}
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		lock.Close()
		return nil, nil, fmt.Errorf("wal: %s is in use by another process (or another buffer of this one): %w", dir, err)
	}
	l := &Log{dir: dir, opts: o, lock: lock, wake: make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{})}
	corrupt, err := l.recover()
	if err != nil {
		if l.ackFile != nil {
			l.ackFile.Close()
		}
		if l.active != nil {
			l.active.Close()
		}
		lock.Close()
		return nil, nil, err
	}
	go l.syncer()
	return l, corrupt, nil
}

func segName(first uint64) string { return fmt.Sprintf("%016x.seg", first) }

func (l *Log) recover() ([]Corrupt, error) {
	ents, err := os.ReadDir(l.dir)
	if err != nil {
		return nil, fmt.Errorf("wal: %w", err)
	}
	var names []string
	for _, e := range ents {
		if strings.HasSuffix(e.Name(), ".seg") {
			names = append(names, e.Name())
		}
	}
	sort.Strings(names)
	acked, ackOK := l.readAck()
	var corrupt []Corrupt
	next := uint64(1)
	for _, name := range names {
		first, err := strconv.ParseUint(strings.TrimSuffix(name, ".seg"), 16, 64)
		if err != nil {
			continue
		}
		data, err := os.ReadFile(filepath.Join(l.dir, name))
		if err != nil {
			return nil, fmt.Errorf("wal: %w", err)
		}
		s := &segment{first: first, name: name, size: int64(len(data))}
		l.size += s.size
		idx := first
		scan(data, func(off int64, n int32) {
			s.recs = append(s.recs, loc{index: idx, off: off, n: n})
			idx++
		}, func(c Corrupt) {
			c.Segment, c.Index = name, idx
			idx++ // a corrupt record took an index when it was written
			if c.Index >= acked || !ackOK {
				corrupt = append(corrupt, c)
			}
		})
		next = max(next, idx)
		l.segs = append(l.segs, s)
	}
	l.next = next
	if !ackOK || acked > next {
		acked = 0
	}
	// Segments wholly acknowledged (a crash between the ack and the
	// delete) are removed now.
	for len(l.segs) > 0 && l.segs[0].last() <= acked {
		l.removeSeg()
	}
	if len(l.segs) > 0 && acked < l.segs[0].first {
		acked = l.segs[0].first
	}
	if len(l.segs) == 0 {
		acked = next
	}
	l.acked, l.read = acked, acked
	f, err := os.OpenFile(filepath.Join(l.dir, "ack"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("wal: %w", err)
	}
	l.ackFile = f
	if err := l.writeAck(acked); err != nil {
		return nil, err
	}
	// On a full file system the log opens without an active segment, so
	// that what it holds is still delivered; the next Append starts one
	// (or reports the file system full).
	if err := l.newSegment(); err != nil && !FileSystemFull(err) {
		return nil, err
	}
	return corrupt, nil
}

// FileSystemFull reports whether err says the file system (or the quota)
// is full.
func FileSystemFull(err error) bool {
	return errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT)
}

// last returns the index after the segment's last record.
func (s *segment) last() uint64 {
	if len(s.recs) == 0 {
		return s.first
	}
	return s.recs[len(s.recs)-1].index + 1
}

// scan calls good for every intact record of a segment's contents and bad
// for every corrupt one, in order.
func scan(data []byte, good func(off int64, n int32), bad func(Corrupt)) {
	if len(data) < len(magic) || string(data[:len(magic)]) != magic {
		if len(data) > 0 {
			bad(Corrupt{Offset: 0, Partial: clip(data), Reason: "bad segment header"})
		}
		return
	}
	var cs []Corrupt
	defer func() {
		for _, c := range cs {
			bad(c)
		}
	}()
	off := int64(len(magic))
	for off < int64(len(data)) {
		rest := data[off:]
		if len(rest) < frame {
			cs = append(cs, Corrupt{Offset: off, Reason: "torn record header"})
			break
		}
		n := binary.LittleEndian.Uint32(rest)
		sum := binary.LittleEndian.Uint32(rest[4:])
		if n == 0 || n > MaxRecord {
			cs = append(cs, Corrupt{Offset: off, Partial: clip(rest[frame:]), Reason: "implausible record length"})
			break
		}
		if int64(n) > int64(len(rest)-frame) {
			cs = append(cs, Corrupt{Offset: off, Partial: clip(rest[frame:]), Reason: "torn record"})
			break
		}
		payload := rest[frame : frame+int(n)]
		if crc32.Checksum(payload, castagnoli) != sum {
			bad(Corrupt{Offset: off, Partial: clip(payload), Reason: "checksum mismatch"})
		} else {
			good(off, int32(n))
		}
		off += frame + int64(n)
	}
}

// clip keeps the start of a damaged payload: enough for a caller to read a
// header from it.
func clip(b []byte) []byte { return append([]byte(nil), b[:min(len(b), 64)]...) }

func (l *Log) readAck() (uint64, bool) {
	b, err := os.ReadFile(filepath.Join(l.dir, "ack"))
	if err != nil || len(b) < 12 {
		return 0, false
	}
	if crc32.Checksum(b[:8], castagnoli) != binary.LittleEndian.Uint32(b[8:]) {
		return 0, false
	}
	return binary.LittleEndian.Uint64(b), true
}

func (l *Log) writeAck(idx uint64) error {
	var b [12]byte
	binary.LittleEndian.PutUint64(b[:], idx)
	binary.LittleEndian.PutUint32(b[8:], crc32.Checksum(b[:8], castagnoli))
	if _, err := l.ackFile.WriteAt(b[:], 0); err != nil {
		return fmt.Errorf("wal: ack: %w", err)
	}
	if l.opts.Sync == SyncAlways {
		return l.ackFile.Sync()
	}
	return nil
}

func (l *Log) newSegment() error {
	if l.active != nil {
		if l.opts.Sync != SyncNever {
			l.active.Sync()
		}
		l.active.Close()
	}
	s := &segment{first: l.next, name: segName(l.next)}
	f, err := os.OpenFile(filepath.Join(l.dir, s.name), os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return fmt.Errorf("wal: %w", err)
	}
	if _, err := f.Write([]byte(magic)); err != nil {
		f.Close()
		os.Remove(f.Name())
		return fmt.Errorf("wal: %w", err)
	}
	s.size = int64(len(magic))
	l.size += s.size
	l.segs = append(l.segs, s)
	l.active = f
	return nil
}

// putFrame writes the record header of payload into h.
func putFrame(h []byte, payload []byte) {
	binary.LittleEndian.PutUint32(h, uint32(len(payload)))
	binary.LittleEndian.PutUint32(h[4:], crc32.Checksum(payload, castagnoli))
}

// Append adds a record. It returns ErrFull, without writing, when the
// record would take the log past MaxBytes; a write that fails (a full
// disk) is undone and its error returned (errors.Is(err, syscall.ENOSPC)
// for a full file system).
func (l *Log) Append(payload []byte) (uint64, error) {
	if len(payload) == 0 || len(payload) > MaxRecord {
		return 0, fmt.Errorf("wal: record of %d bytes: want 1 to %d", len(payload), MaxRecord)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return 0, errors.New("wal: closed")
	}
	if l.active == nil {
		if err := l.newSegment(); err != nil {
			return 0, err
		}
	}
	need := int64(frame + len(payload))
	s := l.segs[len(l.segs)-1]
	if s.size+need > l.opts.SegmentBytes && len(s.recs) > 0 {
		need += int64(len(magic))
	}
	if l.size+need > l.opts.MaxBytes && l.acked == l.next && len(s.recs) > 0 {
		// Everything is acknowledged but the active segment holds the
		// space: start a new one, and the old one goes.
		if err := l.newSegment(); err != nil {
			return 0, err
		}
		l.trim()
		s = l.segs[len(l.segs)-1]
		need = int64(frame + len(payload))
	}
	if l.size+need > l.opts.MaxBytes {
		return 0, ErrFull
	}
	if s.size+int64(frame+len(payload)) > l.opts.SegmentBytes && len(s.recs) > 0 {
		if err := l.newSegment(); err != nil {
			return 0, err
		}
		s = l.segs[len(l.segs)-1]
	}
	buf := make([]byte, frame, frame+len(payload))
	putFrame(buf, payload)
	buf = append(buf, payload...)
	if _, err := l.active.Write(buf); err != nil {
		// Undo a partial write, so the segment stays readable.
		l.active.Truncate(s.size)
		l.active.Seek(s.size, io.SeekStart)
		return 0, fmt.Errorf("wal: append: %w", err)
	}
	if l.opts.Sync == SyncAlways {
		if err := l.active.Sync(); err != nil {
			return 0, fmt.Errorf("wal: fsync: %w", err)
		}
	} else {
		l.dirty = true
	}
	idx := l.next
	s.recs = append(s.recs, loc{index: idx, off: s.size, n: int32(len(payload))})
	s.size += int64(len(buf))
	l.size += int64(len(buf))
	l.next++
	select {
	case l.wake <- struct{}{}:
	default:
	}
	return idx, nil
}

// Wait returns a channel that receives after an Append (or Close): a
// reader that found nothing to read waits on it.
func (l *Log) Wait() <-chan struct{} { return l.wake }

// Next returns the next record not yet returned, reading it from disk, or
// false when there is none. Records skipped by DropOldest are not
// returned. A record whose checksum no longer matches (damaged since
// recovery) is returned with an error; the caller acknowledges it as lost.
func (l *Log) Next() (Record, bool, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, s := range l.segs {
		if s.last() <= l.read {
			continue
		}
		for _, r := range s.recs {
			if r.index < l.read || r.index >= l.dropFrom && r.index < l.dropUntil {
				continue
			}
			buf, err := l.readLoc(s, r)
			l.read = r.index + 1
			if err != nil {
				return Record{Index: r.index}, true, err
			}
			return Record{Index: r.index, Payload: buf}, true, nil
		}
	}
	return Record{}, false, nil
}

// Take marks record idx as returned without reading it, when it is the
// next record Next would return (the caller holds its payload already);
// it reports whether it did.
func (l *Log) Take(idx uint64) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	next := l.read
	if next >= l.dropFrom && next < l.dropUntil {
		next = l.dropUntil
	}
	if idx != next || idx >= l.next {
		return false
	}
	l.read = idx + 1
	return true
}

// readLoc reads and checks one record.
func (l *Log) readLoc(s *segment, r loc) ([]byte, error) {
	buf := make([]byte, frame+int(r.n))
	f, err := os.Open(filepath.Join(l.dir, s.name))
	if err != nil {
		return nil, fmt.Errorf("wal: %w", err)
	}
	_, err = f.ReadAt(buf, r.off)
	f.Close()
	if err != nil {
		return nil, fmt.Errorf("wal: read %s at %d: %w", s.name, r.off, err)
	}
	payload := buf[frame:]
	if binary.LittleEndian.Uint32(buf) != uint32(r.n) || crc32.Checksum(payload, castagnoli) != binary.LittleEndian.Uint32(buf[4:]) {
		return payload, fmt.Errorf("wal: record %d in %s at %d: checksum mismatch", r.index, s.name, r.off)
	}
	return payload, nil
}

// Ack acknowledges every record up to and including idx (and the records
// dropped right after it); segments wholly acknowledged are deleted.
func (l *Log) Ack(idx uint64) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if idx+1 <= l.acked {
		return nil
	}
	l.acked = idx + 1
	if l.acked >= l.dropFrom && l.acked < l.dropUntil {
		l.acked = l.dropUntil
	}
	if l.read < l.acked {
		l.read = l.acked
	}
	l.trim()
	return l.writeAck(l.acked)
}

// trim deletes the segments whose records are all acknowledged, never the
// active one.
func (l *Log) trim() {
	for len(l.segs) > 1 && l.segs[0].last() <= l.acked && l.segs[1].first <= l.acked {
		l.removeSeg()
	}
	// Segments wholly given up by DropOldest go too, even behind a record
	// still in flight.
	for i := 0; i < len(l.segs)-1; i++ {
		if s := l.segs[i]; len(s.recs) > 0 && s.recs[0].index >= l.dropFrom && s.last() <= l.dropUntil {
			l.removeSegAt(i)
			i--
		}
	}
}

func (l *Log) removeSeg() { l.removeSegAt(0) }

func (l *Log) removeSegAt(i int) {
	s := l.segs[i]
	os.Remove(filepath.Join(l.dir, s.name))
	l.size -= s.size
	l.segs = append(l.segs[:i], l.segs[i+1:]...)
}

// DropOldest gives up the unread records of the oldest segment that holds
// any (starting a new active segment first when that is the active one),
// so that the segment is deleted once the record in flight, if any, is
// acknowledged. It returns the payloads given up, for the caller to count
// (those that cannot be read are returned as nil), or none when there is
// nothing to drop.
func (l *Log) DropOldest() ([][]byte, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.read >= l.next {
		return nil, nil
	}
	for i := 0; i < len(l.segs); i++ {
		s := l.segs[i]
		if s.last() <= l.read || len(s.recs) == 0 {
			continue
		}
		if i == len(l.segs)-1 {
			if err := l.newSegment(); err != nil {
				return nil, err
			}
		}
		var out [][]byte
		for _, r := range s.recs {
			if r.index < l.read || r.index >= l.dropFrom && r.index < l.dropUntil {
				continue
			}
			buf, err := l.readLoc(s, r)
			if err != nil {
				buf = nil
			}
			out = append(out, buf)
		}
		from, until := l.read, s.last()
		if l.dropUntil == from {
			from = l.dropFrom // extends the range dropped before
		}
		l.dropFrom, l.dropUntil, l.read = from, until, until
		if l.acked >= from {
			// Nothing is in flight: the dropped records are done.
			l.acked = until
			if err := l.writeAck(l.acked); err != nil {
				return out, err
			}
		}
		l.trim()
		return out, nil
	}
	return nil, nil
}

// Pending returns the number of records appended and not acknowledged, and
// the bytes of the segment files.
func (l *Log) Pending() (records uint64, bytes int64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.next - l.acked, l.size
}

// Unread calls fn with the payload of every record not acknowledged (nil
// for one that cannot be read), without consuming them: what a log holds
// for the next run.
func (l *Log) Unread(fn func(index uint64, payload []byte)) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, s := range l.segs {
		for _, r := range s.recs {
			if r.index < l.acked || r.index >= l.dropFrom && r.index < l.dropUntil {
				continue
			}
			buf, err := l.readLoc(s, r)
			if err != nil {
				buf = nil
			}
			fn(r.index, buf)
		}
	}
	return nil
}

// Rewind makes Next return the records not acknowledged again (after a
// delivery that failed).
func (l *Log) Rewind() {
	l.mu.Lock()
	l.read = l.acked
	l.mu.Unlock()
}

func (l *Log) syncer() {
	defer close(l.done)
	if l.opts.Sync != SyncInterval {
		<-l.stop
		return
	}
	t := time.NewTicker(l.opts.SyncInterval)
	defer t.Stop()
	for {
		select {
		case <-l.stop:
			return
		case <-t.C:
			l.mu.Lock()
			if l.dirty && !l.closed && l.active != nil {
				l.active.Sync()
				l.ackFile.Sync()
				l.dirty = false
			}
			l.mu.Unlock()
		}
	}
}

// Close syncs (unless SyncNever) and closes the log; when every record is
// acknowledged it deletes the segments.
func (l *Log) Close() error {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil
	}
	l.closed = true
	var err error
	if l.active != nil {
		if l.opts.Sync != SyncNever {
			err = l.active.Sync()
		}
		err = errors.Join(err, l.active.Close())
	}
	if l.opts.Sync != SyncNever {
		err = errors.Join(err, l.ackFile.Sync())
	}
	err = errors.Join(err, l.ackFile.Close())
	if l.acked >= l.next {
		// Everything is delivered: no segment needs to stay.
		for len(l.segs) > 0 {
			l.removeSeg()
		}
	}
	l.mu.Unlock()
	close(l.stop)
	<-l.done
	l.lock.Close()
	select {
	case l.wake <- struct{}{}:
	default:
	}
	return err
}
