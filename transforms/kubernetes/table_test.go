package kubernetes

import (
	"math/rand/v2"
	"testing"
)

// TestAddressTables checks both tables against a map through random puts,
// overwrites and removals, in key spaces small enough that runs collide,
// wrap around the table's end and are shifted back by removals.
func TestAddressTables(t *testing.T) {
	for _, tc := range []struct {
		name  string
		keys  int // distinct keys drawn from
		ops   int
		share int // percent of operations that remove
	}{
		{"dense few", 40, 5000, 30},
		{"grow and shrink", 3000, 60000, 45},
		{"mostly puts", 20000, 40000, 10},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rng := rand.New(rand.NewPCG(1, uint64(tc.keys)))
			var t4 v4Table
			var t6 v6Table
			model := map[uint32]int32{}
			key6 := func(k uint32) [16]byte {
				var b [16]byte
				b[0], b[1] = 0xfd, 0x00
				b[12], b[13], b[14], b[15] = byte(k>>24), byte(k>>16), byte(k>>8), byte(k)
				return b
			}
			for op := 0; op < tc.ops; op++ {
				// Consecutive addresses, as a node's pods have, and a few
				// far apart.
				k := 0x0a010000 + uint32(rng.IntN(tc.keys))
				if rng.IntN(10) == 0 {
					k = rng.Uint32()
				}
				if rng.IntN(100) < tc.share {
					want, had := model[k]
					if !had {
						want = -1
					}
					delete(model, k)
					if got := t4.remove(k); got != want {
						t.Fatalf("op %d: v4 remove %#x = %d, want %d", op, k, got, want)
					}
					if got := t6.remove(key6(k)); got != want {
						t.Fatalf("op %d: v6 remove %#x = %d, want %d", op, k, got, want)
					}
					continue
				}
				idx := int32(rng.IntN(1 << 30))
				model[k] = idx
				t4.put(k, idx)
				t6.put(key6(k), idx)
				if op%997 == 0 {
					for mk, mv := range model {
						if got := t4.find(mk); got != mv {
							t.Fatalf("op %d: v4 find %#x = %d, want %d", op, mk, got, mv)
						}
						if got := t6.find(key6(mk)); got != mv {
							t.Fatalf("op %d: v6 find %#x = %d, want %d", op, mk, got, mv)
						}
					}
				}
			}
			if t4.n != len(model) || t6.n != len(model) {
				t.Fatalf("sizes %d and %d, want %d", t4.n, t6.n, len(model))
			}
			for mk, mv := range model {
				if got := t4.find(mk); got != mv {
					t.Fatalf("v4 find %#x = %d, want %d", mk, got, mv)
				}
				if got := t6.find(key6(mk)); got != mv {
					t.Fatalf("v6 find %#x = %d, want %d", mk, got, mv)
				}
			}
			for i := 0; i < 1000; i++ {
				k := rng.Uint32()
				if _, ok := model[k]; !ok && t4.find(k) != -1 {
					t.Fatalf("v4 finds %#x, which it never held", k)
				}
			}
		})
	}
}

// TestEntriesReused: an address that leaves the index frees its entry for
// the next one, and an update of an address overwrites its entry in place.
func TestEntriesReused(t *testing.T) {
	x := newIndex("c")
	for i := 0; i < 100; i++ {
		x.setPod(mkPod("shop", "p"+string(rune('a'+i%26))+string(rune('a'+i/26)), benchIP(i), nil, nil))
	}
	if len(x.entries) != 100 || x.v4.n != 100 {
		t.Fatalf("%d entries, %d addresses, want 100", len(x.entries), x.v4.n)
	}
	for uid := range x.podsByID {
		x.deletePod(uid)
	}
	if x.v4.n != 0 || len(x.free) != 100 {
		t.Fatalf("after deleting every pod: %d addresses, %d free entries", x.v4.n, len(x.free))
	}
	if e := x.lookupLocked(benchIP(7)); e == nil || e.pod {
		t.Fatalf("a deleted pod's address still has an entry: %+v", e)
	}
	x.setPod(mkPod("shop", "new", benchIP(7), nil, nil))
	if len(x.entries) != 100 {
		t.Errorf("%d entries after a new pod, want the 100 reused", len(x.entries))
	}
	if e := x.lookupLocked(benchIP(7)); e == nil || e.podName != "new" {
		t.Errorf("new pod's entry: %+v", e)
	}
}
