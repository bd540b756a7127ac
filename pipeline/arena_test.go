package pipeline

import (
	"bytes"
	"testing"
	"unsafe"
)

// fill returns n bytes of b's storage, filled with a pattern of tag.
func fill(b *Batch, n int, tag byte) []byte {
	buf := b.Alloc(n)
	for i := range buf {
		buf[i] = tag + byte(i)
	}
	return buf
}

// TestArenaAlloc: what Alloc hands out stays as written while more is
// allocated (across slabs, and for requests too large for one), and no
// two pieces overlap.
func TestArenaAlloc(t *testing.T) {
	tests := []struct {
		name  string
		sizes []int
	}{
		{"small", []int{1, 7, 100, 1100}},
		{"slab boundary", []int{arenaMax, arenaMax, arenaMax - 1, 1}},
		{"too large for a slab", []int{arenaMax + 1, 3 * arenaSlab, 10}},
		{"mixed", []int{1100, arenaMax + 1, 1100, 0, 64, arenaSlab / 3}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b := NewBatch()
			defer b.Release()
			var got, want [][]byte
			for round := range 200 {
				n := tc.sizes[round%len(tc.sizes)]
				buf := fill(b, n, byte(round))
				if len(buf) != n || cap(buf) != n {
					t.Fatalf("Alloc(%d): len %d cap %d", n, len(buf), cap(buf))
				}
				got, want = append(got, buf), append(want, bytes.Clone(buf))
			}
			for i := range got {
				if !bytes.Equal(got[i], want[i]) {
					t.Fatalf("piece %d (%d bytes) changed", i, len(got[i]))
				}
			}
		})
	}
}

// TestArenaReuse: a released batch's storage is reused by its next use,
// and a Clone keeps the storage its strings share until its own release,
// while the batch goes on with other storage.
func TestArenaReuse(t *testing.T) {
	b := NewBatch()
	first := &b.Alloc(100)[0]
	b.Release()
	// The batch released last is the next one handed out (see warm).
	if b2 := NewBatch(); b2 != b {
		t.Fatal("the batch released last was not reused")
	}
	if again := &b.Alloc(100)[0]; again != first {
		t.Fatal("a released batch's storage was not reused")
	}

	msg := fill(b, 1000, 3)
	want := bytes.Clone(msg)
	c := b.Clone()
	b.Release()
	if b.arena != nil {
		t.Fatal("a batch kept the storage a clone holds")
	}
	b = NewBatch()
	for range 100 {
		fill(b, 1000, 9)
	}
	if !bytes.Equal(msg, want) {
		t.Fatal("the storage a clone holds was reused")
	}
	if len(c.pinned) != 1 {
		t.Fatalf("a clone holds %d storages, want 1", len(c.pinned))
	}
	cc := c.Clone()
	if len(cc.pinned) != 1 || cc.pinned[0] != c.pinned[0] {
		t.Fatal("a clone of a clone does not hold the original's storage")
	}
	cc.Release()
	a := c.pinned[0]
	c.Release()
	if n := a.refs.Load(); n != 0 || len(a.slabs[0]) != 0 {
		t.Fatalf("after the last holder: %d references, %d bytes in use", n, len(a.slabs[0]))
	}
	b.Release()
}

// TestArenaStrings: a string made over Alloc's bytes reads the same after
// the batch passes through Keep and Truncate; only the release frees it.
func TestArenaStrings(t *testing.T) {
	b := NewBatch()
	buf := b.Alloc(5)
	copy(buf, "node1")
	s := unsafe.String(&buf[0], len(buf))
	e := b.Next()
	e.NodeName = s
	b.Keep(func(*Event) bool { return false })
	b.Truncate(0)
	if s != "node1" {
		t.Fatalf("string changed before the release: %q", s)
	}
	b.Release()
}

// TestHoldStorage: a batch that holds another's storage keeps it intact
// after the other's release, until its own.
func TestHoldStorage(t *testing.T) {
	b := NewBatch()
	msg := fill(b, 500, 7)
	want := bytes.Clone(msg)
	nb := NewBatch()
	nb.HoldStorage(b)
	b.Release()
	for range 3 {
		o := NewBatch()
		fill(o, 500, 1)
		o.Release()
	}
	if !bytes.Equal(msg, want) {
		t.Fatal("storage held by another batch was reused")
	}
	a := nb.pinned[0]
	nb.Release()
	if a.refs.Load() != 0 {
		t.Fatalf("%d references left after the holder's release", a.refs.Load())
	}
}
