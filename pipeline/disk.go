package pipeline

import (
	"errors"
	"fmt"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	flowpb "github.com/flowbus/flowbus/flow"
	"github.com/flowbus/flowbus/pipeline/config"
	"github.com/flowbus/flowbus/pipeline/wal"
)

// diskBuffer is a sink's disk buffer: the batches of the sink's (memory)
// input buffer are appended to a log on disk by one goroutine, and the
// sink's goroutine reads them back from the log, writes them to the sink
// and removes them once the sink delivered them (for a broker sink: once
// the broker acknowledged them). A batch the sink could not deliver while
// its broker is away stays on disk and is written again; what is on disk
// when flowbus stops (or is killed) is delivered by the next run.
//
// The store is package wal, not an embedded JetStream stream: measured
// with nats-server 2.15's file store, a stream restarted after its block
// file was truncated brought back a message that had been deleted, and one
// whose block had a damaged record dropped it without reporting it
// (StreamState.Lost stayed empty), so neither duplicates nor losses would
// be known. The log's records carry their own checksums and recovery
// reports every record it cannot read, which the buffer turns into a
// LostEvent.
type diskBuffer struct {
	dir string
	cfg config.Buffer
	log *wal.Log

	// hot hands the batches just appended to the deliverer, so that a
	// deliverer that keeps up sends them without reading them back; a
	// batch that does not fit is released (the disk has it).
	hot  chan hotBatch
	held *hotBatch // the deliverer's: a hot batch ahead of the disk

	lossDue   chan struct{} // the runtime asked for the pending LostEvents
	inputDone chan struct{} // the appender has taken everything
	space     chan struct{} // an acknowledgement freed space

	written   atomic.Uint64 // bytes appended
	recovered atomic.Uint64 // events found on disk at start
	backlog   atomic.Bool   // the deliverer is reading batches back from disk
	buffered  atomic.Uint64 // events left on disk at the end
	enc       []byte
	closeOnce sync.Once
	fullLog   atomic.Bool // "full" logged since the last append that fit
}

// hotBatch is a batch on disk at index, still in memory.
type hotBatch struct {
	index uint64
	b     *Batch
	epoch int64
	base  uint64
}

// hotBatches is how many appended batches wait in memory for the
// deliverer.
const hotBatches = 4

// diskBuffer checks a sink's disk buffer settings: its directory must be
// its own.
func (b *builder) diskBuffer(n *node, buf config.Buffer) *diskBuffer {
	dir := buf.Path
	if b.p.cfg.Dir != "" && dir != "" && dir[0] != '/' {
		dir = b.p.cfg.Dir + "/" + dir
	}
	if b.diskPaths == nil {
		b.diskPaths = map[string]*node{}
	}
	if prev := b.diskPaths[dir]; prev != nil {
		b.errorf(config.Find(config.Find(b.comps[n].Node, "buffer"), "path"), "sink %q: disk buffer path %q is also the path of sink %q's; each sink needs its own", n.name, buf.Path, prev.name)
	}
	b.diskPaths[dir] = n
	return &diskBuffer{
		dir: dir, cfg: buf,
		hot:       make(chan hotBatch, hotBatches),
		lossDue:   make(chan struct{}, 1),
		inputDone: make(chan struct{}),
		space:     make(chan struct{}, 1),
	}
}

// openDisks opens the sinks' disk buffers, recovering what earlier runs
// left: their events count as recovered, and records that cannot be read
// as lost (reported in the sink's stream).
func (p *Pipeline) openDisks() error {
	for i, n := range p.sinks {
		if n.disk == nil {
			continue
		}
		if err := n.disk.open(p, n); err != nil {
			for _, m := range p.sinks[:i] {
				if m.disk != nil {
					m.disk.log.Close()
				}
			}
			return fmt.Errorf("sink %q: disk buffer: %w", n.name, err)
		}
	}
	return nil
}

// closeDisks closes the disk buffers of a pipeline that did not run.
func (p *Pipeline) closeDisks() {
	for _, n := range p.sinks {
		if n.disk != nil && n.disk.log != nil {
			n.disk.log.Close()
		}
	}
}

func (d *diskBuffer) open(p *Pipeline, n *node) error {
	o := wal.Options{MaxBytes: int64(d.cfg.MaxBytes), SyncInterval: d.cfg.SyncInterval.D()}
	switch d.cfg.Sync {
	case config.SyncAlways:
		o.Sync = wal.SyncAlways
	case config.SyncNever:
		o.Sync = wal.SyncNever
	}
	l, corrupt, err := wal.Open(d.dir, o)
	if err != nil {
		return err
	}
	d.log = l
	type rec struct {
		index        uint64
		epoch        int64
		base, count  uint64
		bad, unknown bool
		why          string
	}
	var recs []rec
	if err := l.Unread(func(index uint64, payload []byte) {
		epoch, base, count, _, err := diskHeader(payload)
		recs = append(recs, rec{index: index, epoch: epoch, base: base, count: count, bad: err != nil, unknown: err != nil})
	}); err != nil {
		l.Close()
		return err
	}
	for _, c := range corrupt {
		epoch, base, count, _, err := diskHeader(c.Partial)
		recs = append(recs, rec{index: c.Index, epoch: epoch, base: base, count: count, bad: true, unknown: err != nil,
			why: fmt.Sprintf("%s at offset %d of %s", c.Reason, c.Offset, c.Segment)})
	}
	sort.Slice(recs, func(i, j int) bool { return recs[i].index < recs[j].index })
	var good, lost uint64
	var whys []string
	for i := 0; i < len(recs); i++ {
		if !recs[i].bad {
			good += recs[i].count
			continue
		}
		// A run of unreadable records: between two good records of one
		// epoch their sequence numbers say exactly how many events were
		// lost; otherwise what the damaged headers claim (at least one
		// event per record).
		j := i
		var claimed uint64
		for ; j < len(recs) && recs[j].bad; j++ {
			if recs[j].unknown {
				claimed++
			} else {
				claimed += max(recs[j].count, 1)
			}
			if recs[j].why != "" {
				whys = append(whys, recs[j].why)
			}
		}
		n := claimed
		if i > 0 && j < len(recs) {
			prev, next := recs[i-1], recs[j]
			if prev.epoch == next.epoch && next.base > prev.base+prev.count {
				n = next.base - (prev.base + prev.count)
			}
		}
		lost += n
		i = j - 1
	}
	d.recovered.Store(good + lost)
	if good > 0 {
		n.log.Info("disk buffer: delivering the events an earlier run left on disk", "events", good, "path", d.dir)
	}
	if lost > 0 {
		n.log.Warn("disk buffer: records on disk could not be read (torn by a crash, or damaged); their events are reported lost",
			"events", lost, "path", d.dir, "records", whys)
		n.loss.add(flowpb.LostEventSource_OBSERVER_EVENTS_QUEUE, n.name, -1, lost, time.Now())
	}
	return nil
}

// runDiskSink runs a sink with a disk buffer: one goroutine appends the
// input buffer's batches to disk, this one delivers them from there.
func (p *Pipeline) runDiskSink(n *node) {
	d := n.disk
	go p.appendDisk(n)
	p.deliverDisk(n)
	for p.flushLoss(n, false) && !n.loss.refused(n.stats.delivered()) {
		select {
		case <-p.abort.Done():
		case <-time.After(p.cfg.LostEventInterval.D()):
		}
	}
	p.flushLoss(n, true)
	<-d.inputDone
	d.releaseHot()
	d.close(n)
}

// close counts what stays on disk for the next run and closes the log.
func (d *diskBuffer) close(n *node) {
	d.closeOnce.Do(func() {
		var left uint64
		d.log.Unread(func(_ uint64, payload []byte) {
			if _, _, c, _, err := diskHeader(payload); err == nil {
				left += c
			}
		})
		d.buffered.Store(left)
		if left > 0 {
			n.log.Warn("disk buffer: events stay on disk for the next run", "events", left, "path", d.dir)
		}
		if err := d.log.Close(); err != nil {
			n.log.Error("disk buffer: close", "error", err)
		}
	})
}

// appendDisk moves the batches of n's input buffer to disk until the
// buffer is closed and drained.
func (p *Pipeline) appendDisk(n *node) {
	d := n.disk
	defer close(d.inputDone)
	for {
		it, ok := n.queue.pop()
		if !ok {
			return
		}
		if it.b == nil { // poked: LostEvents are due
			select {
			case d.lossDue <- struct{}{}:
			default:
			}
			continue
		}
		n.stats.in.Add(uint64(it.counted))
		n.stats.batches.Add(1)
		p.toDisk(n, it)
	}
}

// toDisk appends one batch, applying when_full when the disk buffer (or
// the file system) is full. The source's acknowledgement of the batch
// (see Ack) resolves here: ok once the batch is on disk, because the disk
// buffer then keeps it across restarts until the broker acknowledged it
// (what its sync policy says a power loss can cost applies); not ok when
// it is dropped.
func (p *Pipeline) toDisk(n *node, it item) {
	d := n.disk
	b := it.b
	ack := b.ack
	c := uint64(len(b.Events))
	base := n.seq.Add(c) - c + 1
	rec, err := appendDiskBatch(d.enc[:0], p.epoch, base, b)
	if cap(rec) <= 16<<20 {
		d.enc = rec
	}
	drop := func() {
		ack.Done(false)
		b.Release()
		n.seq.CompareAndSwap(base+c-1, base-1) // leave no gap when possible
		p.lose(n, flowpb.LostEventSource_OBSERVER_EVENTS_QUEUE, uint64(it.counted), &n.stats.dropped)
	}
	if err != nil {
		n.log.Error("disk buffer: cannot encode a batch; it is reported lost", "error", err)
		drop()
		return
	}
	for {
		idx, err := d.log.Append(rec)
		if err == nil {
			ack.Done(true)
			d.written.Add(uint64(len(rec) + 8))
			p.handHot(n, hotBatch{index: idx, b: b, epoch: p.epoch, base: base})
			if d.fullLog.Swap(false) {
				n.log.Info("disk buffer: has room again", "path", d.dir)
			}
			return
		}
		full := errors.Is(err, wal.ErrFull) || wal.FileSystemFull(err)
		if !full {
			n.log.Error("disk buffer: cannot append a batch; it is reported lost", "error", err, "path", d.dir)
			drop()
			return
		}
		if !d.fullLog.Swap(true) {
			_, size := d.log.Pending()
			n.log.Warn("disk buffer: full", "when_full", d.cfg.WhenFull, "bytes", size, "max_bytes", int64(d.cfg.MaxBytes), "error", err)
		}
		switch d.cfg.WhenFull {
		case config.DropNewest:
			drop()
			return
		case config.DropOldest:
			old, derr := d.log.DropOldest()
			if derr != nil || len(old) == 0 {
				drop()
				return
			}
			var lost uint64
			for _, payload := range old {
				if _, _, cnt, _, err := diskHeader(payload); err == nil {
					lost += cnt
				} else {
					lost++
				}
			}
			p.lose(n, flowpb.LostEventSource_OBSERVER_EVENTS_QUEUE, lost, &n.stats.dropped)
		default: // block
			select {
			case <-d.space:
			case <-time.After(time.Second): // a file system freed by others
			case <-p.abort.Done():
				drop()
				return
			}
		}
	}
}

// handHot passes a batch just appended to the deliverer in memory. While
// the sink is ready and the deliverer is not behind, the appender waits
// for it to take the batch, as a memory buffer would hold the source back:
// the disk then only keeps a copy, and the batch is never read back.
// While the sink cannot deliver (or the deliverer is reading a backlog
// from disk), the batch is released at once and the disk absorbs the
// input up to max_bytes.
func (p *Pipeline) handHot(n *node, h hotBatch) {
	d := n.disk
	for {
		select {
		case d.hot <- h:
			return
		default:
		}
		if r, ok := n.sink.(Readier); (ok && r.Ready() != nil) || d.backlog.Load() {
			h.b.Release()
			return
		}
		select {
		case d.hot <- h:
			return
		case <-time.After(20 * time.Millisecond):
		case <-p.abort.Done():
			h.b.Release()
			return
		}
	}
}

// deliverDisk writes the batches on disk to the sink, oldest first, and
// removes each once the sink delivered it. It returns when the input is
// done and the disk is empty, when the shutdown deadline passed, or when,
// while draining, the sink cannot deliver (its broker is away): then the
// rest stays on disk for the next run.
func (p *Pipeline) deliverDisk(n *node) {
	d := n.disk
	defer d.releaseHot()
	inputDone := d.inputDone
	for p.abort.Err() == nil {
		select {
		case <-d.lossDue:
			p.flushLoss(n, false)
		default:
		}
		if d.held == nil {
			select {
			case h := <-d.hot:
				d.held = &h
			default:
			}
		}
		if h := d.held; h != nil && d.log.Take(h.index) {
			// The next batch is still in memory: no need to read it back.
			d.held = nil
			d.backlog.Store(false)
			ok := p.deliverRecord(n, h.b, h.index, h.epoch, h.base, inputDone == nil)
			h.b.Release()
			if !ok {
				d.log.Rewind()
				return
			}
			continue
		}
		rec, ok, err := d.log.Next()
		if err != nil {
			p.diskRecordLost(n, rec, err)
			continue
		}
		if !ok {
			if inputDone == nil {
				return
			}
			select {
			case <-d.log.Wait():
			case <-d.lossDue:
				p.flushLoss(n, false)
			case <-inputDone:
				inputDone = nil
			case <-p.abort.Done():
			}
			continue
		}
		var hot *Batch
		var epoch int64
		var base uint64
		if h := d.held; h != nil && h.index <= rec.Index {
			d.held = nil
			if h.index == rec.Index {
				hot, epoch, base = h.b, h.epoch, h.base
			} else {
				h.b.Release() // delivered or dropped already
			}
		}
		batch := hot
		d.backlog.Store(hot == nil)
		if batch == nil {
			// A batch of its own per record, not one reused: the sink
			// may keep it with a Lease.
			batch = NewBatch()
			if epoch, base, err = decodeDiskBatch(rec.Payload, batch); err != nil {
				batch.Release()
				p.diskRecordLost(n, rec, err)
				continue
			}
		}
		ok = p.deliverRecord(n, batch, rec.Index, epoch, base, inputDone == nil)
		batch.Release()
		if !ok {
			d.log.Rewind()
			return
		}
	}
}

// releaseHot releases the batches still in memory (they are on disk).
func (d *diskBuffer) releaseHot() {
	if d.held != nil {
		d.held.b.Release()
		d.held = nil
	}
	for {
		select {
		case h := <-d.hot:
			h.b.Release()
		default:
			return
		}
	}
}

// readyRounds is how many times a batch from disk is written again while
// the sink reports itself ready (its broker answers) before the events it
// keeps failing are given up as lost.
const readyRounds = 3

// deliverRecord writes one batch from disk until the sink delivered it (or
// gave it up while its broker answered), and acknowledges it on disk. It
// returns false, leaving the batch on disk, when the shutdown deadline
// passed, or when draining and the sink cannot deliver.
func (p *Pipeline) deliverRecord(n *node, b *Batch, index uint64, epoch int64, base uint64, draining bool) bool {
	d := n.disk
	counted := b.Counted()
	n.stats.batches.Add(1)
	wait, rounds := 100*time.Millisecond, 0
	for {
		// The batch is written again whatever this write fails, except
		// on the last round a ready sink is allowed.
		how := lendLease
		if rounds+1 < readyRounds {
			how |= lendAgain
		}
		failed, err := p.sinkWriteSeq(n, b, epoch, base, nil, how)
		failed = min(max(failed, 0), counted)
		if failed == 0 {
			break
		}
		if p.abort.Err() != nil {
			return false
		}
		if r, ok := n.sink.(Readier); ok && r.Ready() != nil {
			select {
			case <-d.inputDone:
				draining = true
			default:
			}
			if draining {
				return false
			}
			rounds = 0
			n.log.Debug("disk buffer: the sink cannot deliver; the batch stays on disk", "error", err)
			select {
			case <-time.After(wait):
			case <-d.lossDue:
				p.flushLoss(n, false)
			case <-p.abort.Done():
				return false
			}
			wait = min(2*wait, 5*time.Second)
			continue
		}
		if rounds++; rounds < readyRounds {
			continue
		}
		// The sink gave up although it is ready: as without a disk buffer.
		n.log.Warn("sink write failed", "error", err, "failed", failed)
		n.stats.out.Add(uint64(counted - failed))
		p.lose(n, flowpb.LostEventSource_OBSERVER_EVENTS_QUEUE, uint64(failed), &n.stats.failed)
		p.ackDisk(n, index)
		return true
	}
	n.stats.out.Add(uint64(counted))
	p.ackDisk(n, index)
	return true
}

func (p *Pipeline) ackDisk(n *node, index uint64) {
	d := n.disk
	if err := d.log.Ack(index); err != nil {
		n.log.Error("disk buffer: cannot record a delivery; it may be delivered again after a restart", "error", err)
	}
	select {
	case d.space <- struct{}{}:
	default:
	}
}

// diskRecordLost reports a record that could not be read or decoded at
// delivery, and removes it.
func (p *Pipeline) diskRecordLost(n *node, rec wal.Record, err error) {
	lost := uint64(1)
	if _, _, c, _, herr := diskHeader(rec.Payload); herr == nil && c > 0 {
		lost = c
	}
	n.log.Error("disk buffer: a record cannot be read; its events are reported lost", "error", err, "events", lost)
	p.lose(n, flowpb.LostEventSource_OBSERVER_EVENTS_QUEUE, lost, &n.stats.failed)
	p.ackDisk(n, rec.Index)
}
