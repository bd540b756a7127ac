package pipeline

import (
	"sync"
	"sync/atomic"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	flowpb "github.com/flowbus/flowbus/flow"
)

// Event is one item of a stream: a flow, or a LostEvent. Exactly one of Flow
// and Lost is set.
type Event struct {
	Flow *flowpb.Flow
	Lost *flowpb.LostEvent

	// NodeName and Time are the envelope's node_name and time
	// (observer.GetFlowsResponse fields 1000 and 1001). For a flow, Time
	// usually aliases Flow.Time. Sources fill both.
	NodeName string
	Time     *timestamppb.Timestamp

	// SampleRate is N when a sample stage kept this event as 1 in N (N > 1).
	SampleRate uint32

	// Reported marks a LostEvent that flowbus made to report its own losses.
	// Reported events are not counted as received or delivered. Only the
	// runtime sets it, in batches that hold nothing else; components never do.
	Reported bool

	// spare keeps a Flow from an earlier use of this slot for reuse.
	spare *flowpb.Flow
}

// Timestamp is e's time: the envelope's, else its flow's (nil when it has
// neither).
func (e *Event) Timestamp() *timestamppb.Timestamp {
	if e.Time == nil && e.Flow != nil {
		return e.Flow.GetTime()
	}
	return e.Time
}

// IsLost reports whether e carries a LostEvent.
func (e *Event) IsLost() bool { return e.Lost != nil }

// FlowStorage sets e.Flow to a Flow for the caller to fill and returns it.
// It reuses the storage of an earlier event in the same slot when there is
// one: that Flow's contents are stale, and the caller must overwrite or reset
// every field it does not set (decoders reuse nested messages this way).
//
// The slot owns everything its Flow reaches, the unused capacity of its
// lists included: a filler must never put a message or slice into the Flow
// that is also referenced elsewhere (another flow, a shared table, a free
// list), because the next user of the slot overwrites it in place. A caller
// that wants to keep a Flow after releasing its batch takes it out of the
// event first (e.Flow = nil), and copies the strings it reaches when the
// batch's source put them in the batch's own storage (see Batch.Alloc).
func (e *Event) FlowStorage() *flowpb.Flow {
	if e.Flow == nil {
		if e.spare != nil {
			e.Flow, e.spare = e.spare, nil
		} else {
			e.Flow = new(flowpb.Flow)
		}
	}
	return e.Flow
}

// reset clears e for reuse, keeping its Flow as spare storage.
func (e *Event) reset() {
	spare := e.Flow
	if spare == nil {
		spare = e.spare
	}
	*e = Event{spare: spare}
}

// DefaultBatchSize is the number of events a source puts in a batch when it
// has no better figure.
const DefaultBatchSize = 512

// DefaultBatchBytes is where a source whose events can be large cuts a
// batch, counting its InputBytes: a buffer takes a batch whole, so a batch
// must stay well below a buffer's max_bytes.
const DefaultBatchBytes = 1 << 20

// EventOverhead is what an event counts in a buffer's bytes besides the raw
// input it came from: about the memory of a decoded Flow with its nested
// messages.
const EventOverhead = 512

// Batch is the unit that crosses goroutines: a slice of events with a
// reference count.
//
// Ownership: whoever holds a batch owns it until it passes it on (Emit, or
// returning it from a transform) or releases it. A source owns the batches it
// gets from NewBatch; a transform owns the batch it is given and may change
// it in place; a sink borrows a batch for the duration of Write and must not
// keep it or its events afterwards, unless it takes a Lease on it during
// Write (see Lease). The runtime releases batches.
type Batch struct {
	Events []Event
	refs   atomic.Int32
	// view marks the per-sink view of a batch that the runtime lends to a
	// sink's Write; lent is the batch it shows, when the runtime lets the
	// sink keep it (see Lease), nil when it reuses it after Write.
	view bool
	lent *Batch
	// inputBytes is the length of the raw input the batch's events were
	// decoded from (see AddInputBytes).
	inputBytes int
	// seqEpoch and seqBase are the flowbus-seq of the first event, set on
	// the view of a batch that the runtime lends a sink (see Seq).
	seqEpoch int64
	seqBase  uint64
	// ack is the source's acknowledgement, nil for sources that need none.
	ack *Ack
	// mode is, on the view of a batch that the runtime lends a sink, what
	// the sink may do with it (lendLate: LateDelivery, lendAgain:
	// WrittenAgain).
	mode lendMode
	// arena is the storage Alloc hands out; pinned are the arenas of
	// other batches this one holds (see HoldStorage).
	arena  *arena
	pinned []*arena
}

// setMode sets or clears the bits m of b.mode.
func (b *Batch) setMode(m lendMode, on bool) {
	if on {
		b.mode |= m
	} else {
		b.mode &^= m
	}
}

// LateDelivery reports whether the sink's Write may return before the
// events of b are delivered. It is true for the batches of a memory
// buffer: a sink that implements LateLoser may then publish them, return,
// and resolve them later, taking a holder of the batch's Ack (b.Ack().Hold)
// before Write returns and reporting the counted events it gives up on
// through its late-loss function. It is false for a batch from a disk
// buffer (the buffer keeps it, and writes it again, until Write returns
// having delivered it), for flowbus's own LostEvents (the runtime reports
// their losses again when Write fails them) and for any batch not lent by
// the runtime: Write must then return once every event is acknowledged or
// given up.
func (b *Batch) LateDelivery() bool { return b.mode&lendLate != 0 }

// SetLateDelivery sets what LateDelivery reports; the runtime sets it on the
// batches it lends to sinks, tests of a sink on the batches they write.
func (b *Batch) SetLateDelivery(late bool) { b.setMode(lendLate, late) }

// WrittenAgain reports whether the runtime keeps b and writes it again
// when this Write returns with events failed: the events a sink gives up
// on are then not lost and no LostEvent reports them, and a sink should
// say so in its log rather than announce a loss. It is true for the
// batches of a disk buffer, except on the last write of a batch that the
// buffer allows a sink failing it while ready (Readier, or a sink without
// readiness): what that write fails is reported lost as without a disk
// buffer (unless the sink is unready when it returns: the buffer then
// keeps the batch). It is false for the batches of a memory buffer, for
// flowbus's own LostEvents and for any batch not lent by the runtime. It
// changes no count: a sink counts what a Write gives up on alike either
// way.
func (b *Batch) WrittenAgain() bool { return b.mode&lendAgain != 0 }

// SetWrittenAgain sets what WrittenAgain reports; the runtime sets it on
// the batches it lends to sinks, tests of a sink on the batches they write.
func (b *Batch) SetWrittenAgain(again bool) { b.setMode(lendAgain, again) }

// SetSeq numbers b's events from (epoch, base) for Seq. The runtime
// numbers the batches it lends to sinks; tests of a sink call it on the
// batches they write.
func (b *Batch) SetSeq(epoch int64, base uint64) { b.seqEpoch, b.seqBase = epoch, base }

// Seq returns the flowbus-seq of event i of a batch lent to a sink's Write:
// the epoch, the Unix time in microseconds at which the pipeline run that
// first gave the event to this sink started (a restart or a reload starts
// a new epoch), and the event's number in that run's sequence for this
// sink, counting from 1 with no gaps: a number a consumer never sees is an
// event the sink gave up (and reported in a LostEvent), a number seen twice
// a duplicate of at-least-once delivery. An event replayed from a disk
// buffer keeps the epoch and number it got when it was written to disk.
// ok is false for a batch that is not lent to a sink.
func (b *Batch) Seq(i int) (epoch int64, n uint64, ok bool) {
	if b.seqBase == 0 {
		return 0, 0, false
	}
	return b.seqEpoch, b.seqBase + uint64(i), true
}

var batchPool = sync.Pool{New: func() any {
	return &Batch{Events: make([]Event, 0, DefaultBatchSize)}
}}

// Released batches wait for reuse on a short stack, the batch released
// last on top, in front of batchPool. A batch's events keep spare Flow
// storage that the next filler writes over (see Event.FlowStorage), and
// the batch released last is the one whose storage is still in the CPU's
// caches. sync.Pool alone hands a source's goroutine the oldest batch
// that a sink's goroutine released (a P takes another's items from the
// far end), and a decoder then misses the cache on every nested message
// it resets: on the kafka source's benchmark the stack took 0.2 µs of CPU
// off each flow. It holds at most warmMax batches (as many as a pipeline
// usually has in flight: with 4, the hubble source's pipeline into discard
// let batches go to batchPool, and the collector took their storage, which
// then was allocated again: 0.3 µs more CPU per flow; 16 did no better
// than 8); the rest go to batchPool, which lets the collector have them.
var warm batchStack

const warmMax = 8

// batchStack is a stack of at most warmMax released batches.
type batchStack struct {
	sync.Mutex
	batches []*Batch
}

// get pops the batch pushed last, or returns nil.
func (s *batchStack) get() *Batch {
	s.Lock()
	defer s.Unlock()
	n := len(s.batches)
	if n == 0 {
		return nil
	}
	b := s.batches[n-1]
	s.batches[n-1] = nil
	s.batches = s.batches[:n-1]
	return b
}

// put pushes b, unless the stack is full; it reports whether it did.
func (s *batchStack) put(b *Batch) bool {
	s.Lock()
	defer s.Unlock()
	if len(s.batches) >= warmMax {
		return false
	}
	s.batches = append(s.batches, b)
	return true
}

func getBatch() *Batch {
	if b := warm.get(); b != nil {
		return b
	}
	return batchPool.Get().(*Batch)
}

func putBatch(b *Batch) {
	if !warm.put(b) {
		batchPool.Put(b)
	}
}

// NewBatch returns an empty batch with one reference, from a pool.
func NewBatch() *Batch {
	b := getBatch()
	b.refs.Store(1)
	return b
}

// Len is the number of events in b.
func (b *Batch) Len() int { return len(b.Events) }

// AddInputBytes records that the source read n bytes of raw input (a JSON
// line, a monitor record) for an event of b. Buffers count it against their
// max_bytes; sources whose input can be large must call it. Removing events
// (Keep, Truncate) does not lower it, except emptying the batch: the
// estimate errs on the large side.
func (b *Batch) AddInputBytes(n int) { b.inputBytes += n }

// InputBytes returns the raw input recorded with AddInputBytes.
func (b *Batch) InputBytes() int { return b.inputBytes }

// Bytes returns what b counts against a buffer's max_bytes: EventOverhead
// per event plus InputBytes. It costs the same for any batch: the decoded
// size (proto.Size) costs about 2 µs on a rich flow, a hundred times what
// the runtime spends on an event, and even reading a field of every event
// would cost a few nanoseconds per event.
func (b *Batch) Bytes() int { return len(b.Events)*EventOverhead + b.inputBytes }

// Next appends an empty event to b and returns it. The slot may hold spare
// Flow storage from an earlier use (see Event.FlowStorage).
func (b *Batch) Next() *Event {
	n := len(b.Events)
	if n < cap(b.Events) {
		b.Events = b.Events[:n+1]
		e := &b.Events[n]
		e.reset()
		return e
	}
	b.Events = append(b.Events, Event{})
	return &b.Events[n]
}

// Truncate drops the events from index n on, keeping their storage (their
// Flows become spare storage for the slots; see Event.FlowStorage).
func (b *Batch) Truncate(n int) {
	for i := n; i < len(b.Events); i++ {
		b.Events[i].reset()
	}
	b.Events = b.Events[:n]
	if n == 0 {
		b.inputBytes = 0
	}
}

// Keep removes every flow for which keep returns false and returns how many
// it removed. LostEvents are always kept and never shown to keep: a
// LostEvent is never filtered, sampled or rate-limited away. Order is kept,
// and the storage of removed events stays in the batch for reuse.
func (b *Batch) Keep(keep func(*Event) bool) int {
	w := 0
	for i := range b.Events {
		e := &b.Events[i]
		if e.Lost == nil && !keep(e) {
			continue
		}
		if w != i {
			b.Events[w], b.Events[i] = b.Events[i], b.Events[w]
		}
		w++
	}
	removed := len(b.Events) - w
	b.Truncate(w)
	return removed
}

// Counted returns the number of events in b that count in the summary:
// every event but the LostEvents flowbus made itself.
func (b *Batch) Counted() int {
	n := 0
	for i := range b.Events {
		if !b.Events[i].Reported {
			n++
		}
	}
	return n
}

// Retain adds a reference, for a batch shared by several read-only holders.
// A sink never retains the batch lent to its Write: it takes a Lease.
func (b *Batch) Retain() {
	if b.view {
		panic("pipeline: Retain on a batch lent to a sink's Write; take a Lease")
	}
	b.refs.Add(1)
}

// Lease is a reference that a sink keeps on a batch after its Write
// returned, to read the batch's events later without copying them (the
// hubble sink's ring serves them to its clients).
//
// While a lease is held, nobody changes the leased batch: its Events, and
// everything their Flows and LostEvents reach, stay as they were when
// Write was called, and the batch does not return to the pool. The holder
// only reads them. The runtime keeps this true on every path: sinks that
// share a batch in a fan-out only read it, a transform sharing a producer
// with a sink gets its own Clone, a batch written again (a disk buffer's
// retries) is written unchanged, and a batch the runtime reuses after Write
// (the one-event batches of flowbus's own LostEvents) cannot be leased.
//
// A lease holds memory, not delivery: the events count as delivered, and
// the batch's Ack resolves, when Write returns, as without a lease (a sink
// that delivers later holds the Ack instead; see Ack). A lease pins the
// whole batch, up to its capacity of events and the spare Flow storage of
// its unused slots, so a sink keeping few events of a large batch should
// copy them instead. Every lease is released exactly once.
type Lease struct{ b *Batch }

// Lease takes a lease on the batch lent to Write, for the sink to keep its
// events until it releases the lease. ok is false when the batch cannot be
// kept (the runtime reuses it after Write, or it is not a pooled batch):
// the sink then copies what it keeps. A sink calls it only during Write; a
// test calls it on a batch from NewBatch that it still holds.
func (b *Batch) Lease() (l Lease, ok bool) {
	u := b
	if b.view {
		u = b.lent
	}
	if u == nil || u.refs.Load() <= 0 {
		return Lease{}, false
	}
	u.refs.Add(1)
	return Lease{b: u}, true
}

// Events are the leased batch's events, unchanged since Write.
func (l Lease) Events() []Event { return l.b.Events }

// Release gives the lease back; the batch returns to the pool once nobody
// else holds it. The lease's events must not be read afterwards.
func (l Lease) Release() { l.b.Release() }

// Release drops a reference; the last one returns b to the pool.
func (b *Batch) Release() {
	switch n := b.refs.Add(-1); {
	case n == 0:
		if poisonEnabled {
			poisonBatch(b)
		}
		b.Truncate(0)
		b.releaseArenas()
		b.seqEpoch, b.seqBase = 0, 0
		b.ack, b.mode = nil, 0
		putBatch(b)
	case n < 0:
		panic("pipeline: batch released more often than retained")
	}
}

// Clone returns a deep copy of b with one reference, for a consumer that
// changes events while another holder still reads the originals. The copy
// carries b's Ack; whoever clones adds the copy as a holder (see Ack). Its
// flows share their strings with b's, so it holds the storage b's strings
// point into (see Alloc) until its own last release.
func (b *Batch) Clone() *Batch {
	c := NewBatch()
	c.inputBytes = b.inputBytes
	c.ack = b.ack
	c.HoldStorage(b)
	for i := range b.Events {
		src := &b.Events[i]
		dst := c.Next()
		spare := dst.spare
		*dst = *src
		dst.spare = nil
		if src.Flow != nil {
			f := spare
			if f == nil {
				f = new(flowpb.Flow)
			} else {
				proto.Reset(f)
			}
			proto.Merge(f, src.Flow)
			dst.Flow = f
			if src.Time == src.Flow.Time {
				dst.Time = f.Time
			} else if src.Time != nil {
				dst.Time = proto.Clone(src.Time).(*timestamppb.Timestamp)
			}
		}
		if src.Lost != nil {
			dst.Lost = proto.Clone(src.Lost).(*flowpb.LostEvent)
		}
	}
	return c
}
