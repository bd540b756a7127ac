package kubernetes

// The address tables map an address to the index of its entry in a dense
// slice. They are open-addressed with linear probing and a multiplicative
// hash: a lookup reads one 8-byte slot (IPv4) or 24-byte slot (IPv6) of a
// table kept at most half full, usually the first one it probes, instead of
// a hash map's control word, group and wide slot. A deletion shifts the
// slots after it back, so the tables never hold tombstones and a probe
// stops at the first free slot.

// hashMul is 2^64 divided by the golden ratio: multiplying by it spreads
// neighbouring addresses (a node's pods are consecutive) over the table.
const hashMul = 0x9e3779b97f4a7c15

// minSlots is the size of a table's first allocation.
const minSlots = 64

// v4Table maps IPv4 addresses, as 32-bit numbers, to entry indexes.
type v4Table struct {
	// slots hold addr<<32 | index+1; 0 is a free slot.
	slots []uint64
	shift uint // 64 - log2(len(slots))
	n     int
}

func (t *v4Table) home(k uint32) uint64 { return (uint64(k) * hashMul) >> t.shift }

// find returns the entry index of k, or -1.
func (t *v4Table) find(k uint32) int32 {
	s := t.slots
	if len(s) == 0 {
		return -1
	}
	mask := uint64(len(s) - 1)
	for i := t.home(k); ; i = (i + 1) & mask {
		v := s[i&mask]
		if v == 0 {
			return -1
		}
		if uint32(v>>32) == k {
			return int32(uint32(v)) - 1
		}
	}
}

// put sets the entry index of k.
func (t *v4Table) put(k uint32, idx int32) {
	if 2*(t.n+1) > len(t.slots) {
		t.grow()
	}
	mask := uint64(len(t.slots) - 1)
	v := uint64(k)<<32 | uint64(uint32(idx+1))
	for i := t.home(k); ; i = (i + 1) & mask {
		switch cur := t.slots[i]; {
		case cur == 0:
			t.slots[i] = v
			t.n++
			return
		case uint32(cur>>32) == k:
			t.slots[i] = v
			return
		}
	}
}

func (t *v4Table) grow() {
	old := t.slots
	size := max(minSlots, 2*len(old))
	t.slots, t.n = make([]uint64, size), 0
	t.shift = 64 - log2(size)
	for _, v := range old {
		if v != 0 {
			t.put(uint32(v>>32), int32(uint32(v))-1)
		}
	}
}

// remove deletes k and returns its entry index, or -1 when it had none.
func (t *v4Table) remove(k uint32) int32 {
	s := t.slots
	if len(s) == 0 {
		return -1
	}
	mask := uint64(len(s) - 1)
	i := t.home(k)
	for ; ; i = (i + 1) & mask {
		if s[i] == 0 {
			return -1
		}
		if uint32(s[i]>>32) == k {
			break
		}
	}
	idx := int32(uint32(s[i])) - 1
	// Shift back every later slot of the run whose home is not between
	// the hole and it, so that no probe meets a free slot too early.
	for j := (i + 1) & mask; s[j] != 0; j = (j + 1) & mask {
		if h := t.home(uint32(s[j] >> 32)); !between(i, h, j) {
			s[i] = s[j]
			i = j
		}
	}
	s[i] = 0
	t.n--
	return idx
}

// v6Slot is one IPv6 address (as two 64-bit halves) and its entry index+1;
// idx 0 is a free slot.
type v6Slot struct {
	hi, lo uint64
	idx    int32
}

// v6Table maps IPv6 addresses to entry indexes.
type v6Table struct {
	slots []v6Slot
	shift uint
	n     int
}

func v6Halves(b [16]byte) (hi, lo uint64) {
	for i := 0; i < 8; i++ {
		hi = hi<<8 | uint64(b[i])
		lo = lo<<8 | uint64(b[8+i])
	}
	return hi, lo
}

func (t *v6Table) home(hi, lo uint64) uint64 {
	return ((hi*hashMul ^ lo) * hashMul) >> t.shift
}

// find returns the entry index of the address, or -1.
func (t *v6Table) find(b [16]byte) int32 {
	s := t.slots
	if len(s) == 0 {
		return -1
	}
	hi, lo := v6Halves(b)
	mask := uint64(len(s) - 1)
	for i := t.home(hi, lo); ; i = (i + 1) & mask {
		v := &s[i&mask]
		if v.idx == 0 {
			return -1
		}
		if v.hi == hi && v.lo == lo {
			return v.idx - 1
		}
	}
}

// put sets the entry index of the address.
func (t *v6Table) put(b [16]byte, idx int32) {
	hi, lo := v6Halves(b)
	t.putHalves(hi, lo, idx)
}

func (t *v6Table) putHalves(hi, lo uint64, idx int32) {
	if 2*(t.n+1) > len(t.slots) {
		t.grow()
	}
	mask := uint64(len(t.slots) - 1)
	for i := t.home(hi, lo); ; i = (i + 1) & mask {
		v := &t.slots[i]
		if v.idx == 0 {
			*v = v6Slot{hi, lo, idx + 1}
			t.n++
			return
		}
		if v.hi == hi && v.lo == lo {
			v.idx = idx + 1
			return
		}
	}
}

func (t *v6Table) grow() {
	old := t.slots
	size := max(minSlots, 2*len(old))
	t.slots, t.n = make([]v6Slot, size), 0
	t.shift = 64 - log2(size)
	for _, v := range old {
		if v.idx != 0 {
			t.putHalves(v.hi, v.lo, v.idx-1)
		}
	}
}

// remove deletes the address and returns its entry index, or -1.
func (t *v6Table) remove(b [16]byte) int32 {
	s := t.slots
	if len(s) == 0 {
		return -1
	}
	hi, lo := v6Halves(b)
	mask := uint64(len(s) - 1)
	i := t.home(hi, lo)
	for ; ; i = (i + 1) & mask {
		if s[i].idx == 0 {
			return -1
		}
		if s[i].hi == hi && s[i].lo == lo {
			break
		}
	}
	idx := s[i].idx - 1
	for j := (i + 1) & mask; s[j].idx != 0; j = (j + 1) & mask {
		if h := t.home(s[j].hi, s[j].lo); !between(i, h, j) {
			s[i] = s[j]
			i = j
		}
	}
	s[i] = v6Slot{}
	t.n--
	return idx
}

// between reports whether h lies cyclically in (i, j]: a slot at j whose
// home is there must stay after the hole at i.
func between(i, h, j uint64) bool {
	if i <= j {
		return i < h && h <= j
	}
	return i < h || h <= j
}

func log2(n int) uint {
	var b uint
	for 1<<b < n {
		b++
	}
	return b
}
