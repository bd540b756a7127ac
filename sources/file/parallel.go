package file

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"runtime"
	"sync"

	"github.com/flowbus/flowbus/pipeline"
)

// Reading a whole regular file, decoding is the source's cost (a few µs
// per enriched flow, the rest of a file → filter → file pipeline is a
// fraction of that), so the lines are decoded in parallel: the source's
// goroutine splits the file into chunks of up to one batch of lines, copied
// into a reused buffer; decoders turn each chunk into a batch; an emitter
// emits the batches in the file's order. (Decoding the lines in place, with
// the strings pointing into a chunk buffer that is never reused, was
// measured and rejected: one string still referenced keeps the whole chunk
// alive, so the process held hundreds of MiB, and fresh large buffers cost
// page faults.)

// chunkBytes ends a chunk early when its lines are this long together.
const chunkBytes = 4 << 20

// chunk is up to one batch of lines and, once decoded, their batch.
type chunk struct {
	data  []byte  // the lines, back to back, without their newlines
	ends  []int   // end of each line in data
	lines []int64 // line number of each line
	b     *pipeline.Batch
	done  chan struct{} // closed when b is ready
}

// chunks recycles chunks (their buffers) once decoded.
var chunks = sync.Pool{New: func() any {
	return &chunk{
		data:  make([]byte, 0, 1<<20),
		ends:  make([]int, 0, pipeline.DefaultBatchSize),
		lines: make([]int64, 0, pipeline.DefaultBatchSize),
	}
}}

// decodeWorkers is how many goroutines decode a file in parallel; 1 (one
// CPU) reads serially.
func decodeWorkers() int { return min(runtime.GOMAXPROCS(0), 8) }

// readParallel reads r to its end with workers decoders, emitting in
// order. It returns what emitter.drain followed by emitter.stop would.
func (s *Source) readParallel(ctx context.Context, out pipeline.Output, r *lineReader, name string, workers int) error {
	var (
		work    = make(chan *chunk, workers)
		order   = make(chan *chunk, 2*workers)
		stopped = make(chan struct{}) // the emitter stopped: ctx ended or Emit failed
		emitErr error
		reports sync.Mutex // s.report is not safe for concurrent use
		wg      sync.WaitGroup
	)
	for range workers {
		dec := newFlowjsonDecoder()
		wg.Add(1)
		go func() {
			defer wg.Done()
			for c := range work {
				s.decodeChunk(dec, c, name, &reports)
				c.data, c.ends, c.lines = c.data[:0], c.ends[:0], c.lines[:0]
				close(c.done)
			}
		}()
	}
	emitted := make(chan struct{})
	go func() {
		defer close(emitted)
		for c := range order {
			<-c.done
			b := c.b
			c.b, c.done = nil, nil
			chunks.Put(c)
			if emitErr != nil || b.Len() == 0 {
				b.Release()
				continue
			}
			if err := out.Emit(ctx, b); err != nil {
				emitErr = errStopped
				if ctx.Err() == nil {
					emitErr = fmt.Errorf("file source: emit: %w", err)
				}
				close(stopped)
			}
		}
	}()

	var (
		line int64
		c    *chunk
		err  error
	)
	dispatch := func() bool {
		if c == nil {
			return true
		}
		c.b = pipeline.NewBatch()
		select {
		case order <- c:
		case <-stopped:
			c.b.Release()
			c.b, c.done = nil, nil
			c.data, c.ends, c.lines = c.data[:0], c.ends[:0], c.lines[:0]
			chunks.Put(c)
			c = nil
			return false
		}
		work <- c // a decoder always takes it: decoders only stop when work closes
		c = nil
		return true
	}
read:
	for {
		l, rerr := r.next()
		if rerr == io.EOF {
			l, rerr = r.finish()
		}
		switch {
		case rerr == nil:
		case errors.Is(rerr, errLineTooLong):
			line++
			s.m.malformed.Inc()
			reports.Lock()
			s.report.add(name, line, rerr, nil)
			reports.Unlock()
			continue
		case rerr == io.EOF:
			break read
		case ctx.Err() != nil:
			break read
		default:
			err = fmt.Errorf("file source: read %s: %w", name, rerr)
			break read
		}
		line++
		if line == 1 {
			l = bytes.TrimPrefix(l, utf8BOM)
		}
		if len(l) == 0 || isBlank(l) {
			continue
		}
		if c == nil {
			c = chunks.Get().(*chunk)
			c.done = make(chan struct{})
		}
		c.data = append(c.data, l...)
		c.ends = append(c.ends, len(c.data))
		c.lines = append(c.lines, line)
		if len(c.ends) >= pipeline.DefaultBatchSize || len(c.data) >= chunkBytes {
			if !dispatch() {
				break read
			}
		}
		if ctx.Err() != nil {
			break read
		}
	}
	if err == nil && ctx.Err() == nil {
		dispatch() // the last, partial chunk
	}
	close(order)
	close(work)
	wg.Wait()
	<-emitted
	switch {
	case ctx.Err() != nil || emitErr == errStopped:
		return nil
	case err != nil:
		return err
	}
	return emitErr
}

// decodeChunk decodes c's lines into c.b, as emitter.decode does.
func (s *Source) decodeChunk(dec lineDecoder, c *chunk, name string, reports *sync.Mutex) {
	start := 0
	for i, end := range c.ends {
		l := c.data[start:end:end]
		start = end
		ev := c.b.Next()
		kind, lossy, err := dec.decode(l, ev)
		if err != nil {
			c.b.Truncate(c.b.Len() - 1)
			s.m.malformed.Inc()
			reports.Lock()
			s.report.add(name, c.lines[i], err, l)
			reports.Unlock()
			continue
		}
		if lossy {
			s.m.lossy.Inc()
			reports.Lock()
			s.report.lossy(name, c.lines[i], l)
			reports.Unlock()
		}
		if kind != kindFlow && kind != kindLost {
			c.b.Truncate(c.b.Len() - 1)
			s.m.skipped[kind].Inc()
		}
	}
}
