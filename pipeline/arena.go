package pipeline

import "sync/atomic"

// An arena is the byte storage a batch hands out with Alloc: a source
// copies its raw input into it and lets its flows' strings point into the
// copy. It is reused with the batch, as the batch's Flow storage is, so
// that a source decoding from a socket allocates nothing per message and
// its copies land in memory the CPU's caches still hold; a fresh copy per
// message made the collector run every few thousand flows, and cost the
// hubble source a quarter of its CPU.
//
// An arena's reference count is its batch's one plus one per batch that
// holds it (a Clone, whose flows share the strings; see HoldStorage). When
// the batch's last reference goes and no other batch holds the arena, it
// is emptied for the batch's next use; when another still holds it, the
// batch lets it go and takes a new one if it needs one, and the arena goes
// to the collector with its last holder.
type arena struct {
	refs atomic.Int32
	// slabs are the arena's storage, filled in order; cur is the one being
	// filled. Emptying keeps them all, for the next use.
	slabs [][]byte
	cur   int
}

// Arena sizes: storage comes in slabs of arenaSlab bytes, and a request
// larger than arenaMax gets an allocation of its own, which the collector
// frees when no string points into it any more.
const (
	arenaSlab = 64 << 10
	arenaMax  = arenaSlab / 8
)

// alloc returns n bytes of a's storage, n at most arenaMax.
func (a *arena) alloc(n int) []byte {
	for ; a.cur < len(a.slabs); a.cur++ {
		s := a.slabs[a.cur]
		if l := len(s); cap(s)-l >= n {
			a.slabs[a.cur] = s[:l+n]
			return s[l : l+n : l+n]
		}
	}
	s := make([]byte, n, arenaSlab)
	a.slabs = append(a.slabs, s)
	return s[:n:n]
}

// empty makes all of a's storage free again (poisoning it first in the
// flowbus_poison build).
func (a *arena) empty() {
	for i, s := range a.slabs {
		if poisonEnabled {
			poisonBytes(s)
		}
		a.slabs[i] = s[:0]
	}
	a.cur = 0
}

// release drops a holder's reference; the last one empties a and reports
// true.
func (a *arena) release() bool {
	switch n := a.refs.Add(-1); {
	case n == 0:
		a.empty()
		return true
	case n < 0:
		panic("pipeline: arena released more often than held")
	}
	return false
}

// Alloc returns n bytes for the caller to fill, which b owns: they stay as
// the caller left them until b's last release (and that of every Lease on
// b and every Clone of it), and are then reused for other batches. A
// source copies a message into them and lets its flows' strings point into
// the copy (unsafe.String), so that decoding allocates no string.
//
// The strings of such flows change when their storage is reused: a
// component that keeps a string of a flow (or of its Event) beyond its
// hold on the batch copies it (strings.Clone), exactly as it must copy a
// Flow or any message the Flow reaches. That includes map keys, and an
// assignment to a key already in a map stores the key given (m[s]++ with
// s a flow's string makes the map keep s): count through a pointer, or
// assign with the map's own copy. Only the source that fills b calls
// Alloc, before it emits b.
func (b *Batch) Alloc(n int) []byte {
	if n > arenaMax {
		return make([]byte, n)
	}
	if b.arena == nil {
		b.arena = new(arena)
		b.arena.refs.Store(1)
	}
	return b.arena.alloc(n)
}

// used reports whether a holds anything.
func (a *arena) used() bool { return len(a.slabs) > 0 && (a.cur > 0 || len(a.slabs[0]) > 0) }

// HoldStorage makes b hold the storage of from (see Alloc), and what from
// holds, until b's last release: a Clone, whose flows share from's
// strings, and a source that goes on decoding into b messages it copied
// into from's storage (it calls it before it emits from).
func (b *Batch) HoldStorage(from *Batch) {
	if from.arena != nil && from.arena.used() {
		from.arena.refs.Add(1)
		b.pinned = append(b.pinned, from.arena)
	}
	for _, a := range from.pinned {
		a.refs.Add(1)
		b.pinned = append(b.pinned, a)
	}
}

// releaseArenas drops b's references to arenas, at b's last release. b
// keeps its own arena, emptied, unless a clone still holds it.
func (b *Batch) releaseArenas() {
	if a := b.arena; a != nil {
		if a.release() {
			a.refs.Store(1)
		} else {
			b.arena = nil
		}
	}
	for i, a := range b.pinned {
		a.release()
		b.pinned[i] = nil
	}
	b.pinned = b.pinned[:0]
}
