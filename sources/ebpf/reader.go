//go:build linux

package ebpf

import (
	"errors"
	"math/bits"
	"os"
	"runtime"
	"time"

	"github.com/cilium/ebpf/perf"
	"github.com/cilium/ebpf/ringbuf"

	"github.com/flowbus/flowbus/bpf"
)

// Errors of sampleReader.next besides os.ErrDeadlineExceeded.
var (
	errFlushed = errors.New("flushed")
	errClosed  = errors.New("closed")
)

// sampleReader reads the programs' samples from the perf event array or
// the ring buffer.
type sampleReader interface {
	// next returns one sample (valid until the next call), or a loss
	// record (lost > 0; cpu -1 when unknown).
	next() (data []byte, cpu int, lost uint64, err error)
	// unreported returns the samples the programs failed to write that
	// no loss record reported yet; called once the rings are drained after
	// the programs were detached.
	unreported() uint64
	SetDeadline(time.Time)
	Flush() error
	Close() error
	kind() string
}

// perfReader reads the per-CPU perf rings, which report their own losses:
// the kernel writes a loss record into a ring at the next sample that fits
// after the losses, so the losses at the end of a burst that no sample
// follows (the programs were detached) are never recorded, and are read
// from the programs' counters at the end.
type perfReader struct {
	*perf.Reader
	rec      perf.Record
	counters func() ([bpf.NumCounters]uint64, error)
	reported uint64 // lost samples the loss records reported
}

func (r *perfReader) unreported() uint64 {
	cs, err := r.counters()
	if err != nil {
		return 0
	}
	total := cs[bpf.CounterTraceLost] + cs[bpf.CounterDropLost]
	if total <= r.reported {
		return 0
	}
	n := total - r.reported
	r.reported = total
	return n
}

func (r *perfReader) kind() string { return "perf" }

func (r *perfReader) next() ([]byte, int, uint64, error) {
	err := r.ReadInto(&r.rec)
	switch {
	case err == nil:
	case errors.Is(err, perf.ErrFlushed):
		return nil, 0, 0, errFlushed
	case errors.Is(err, perf.ErrClosed):
		return nil, 0, 0, errClosed
	default:
		return nil, 0, 0, err
	}
	if r.rec.LostSamples > 0 {
		r.reported += r.rec.LostSamples
		return nil, r.rec.CPU, r.rec.LostSamples, nil
	}
	return r.rec.RawSample, r.rec.CPU, 0, nil
}

// ringReader reads the BPF ring buffer shared by all CPUs. The ring has
// no loss records: what the programs failed to write is read from their
// counters, at most every flushInterval, and reported without a CPU.
type ringReader struct {
	*ringbuf.Reader
	rec      ringbuf.Record
	counters func() ([bpf.NumCounters]uint64, error)
	lost     uint64 // reported so far
	checked  time.Time
}

func (r *ringReader) kind() string { return "ring" }

func (r *ringReader) next() ([]byte, int, uint64, error) {
	if time.Since(r.checked) >= flushInterval {
		r.checked = time.Now()
		if n := r.newLosses(); n > 0 {
			return nil, -1, n, nil
		}
	}
	err := r.ReadInto(&r.rec)
	switch {
	case err == nil:
		return r.rec.RawSample, -1, 0, nil
	case errors.Is(err, os.ErrDeadlineExceeded):
		return nil, 0, 0, err
	case errors.Is(err, ringbuf.ErrFlushed):
		return nil, 0, 0, errFlushed
	case errors.Is(err, ringbuf.ErrClosed):
		return nil, 0, 0, errClosed
	}
	return nil, 0, 0, err
}

func (r *ringReader) unreported() uint64 { return r.newLosses() }

// newLosses returns the samples the programs failed to write since the
// last call.
func (r *ringReader) newLosses() uint64 {
	cs, err := r.counters()
	if err != nil {
		return 0
	}
	total := cs[bpf.CounterTraceLost] + cs[bpf.CounterDropLost]
	if total <= r.lost {
		return 0
	}
	n := total - r.lost
	r.lost = total
	return n
}

// minRingSize is the smallest default ring buffer: at 100k samples/s of
// 128 packet bytes (about 19 MB/s), 4 MiB hold 200 ms of samples, longer
// than a reader on a busy node waits for a CPU.
const minRingSize = 4 << 20

// ringSize is the ring buffer's size for perf_buffer_pages: as many pages
// as the perf rings of all CPUs together, rounded up to a power of two, and
// at least minRingSize for the default perf_buffer_pages.
func ringSize(perfPages int) uint32 {
	n := uint64(perfPages) * uint64(os.Getpagesize()) * uint64(runtime.NumCPU())
	if perfPages >= DefaultPerfBufferPages {
		n = max(n, minRingSize)
	}
	size := uint64(1) << bits.Len64(n-1)
	return uint32(min(size, 1<<30))
}

// ringWakeup is how many bytes wait in the ring before the programs wake
// the reader: a quarter of the ring, at most 64 KiB (a wakeup per sample
// costs microseconds; a quiet ring is read at each flush).
func ringWakeup(size uint32) uint64 {
	return min(uint64(size)/4, 64<<10)
}
