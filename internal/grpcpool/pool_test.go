package grpcpool

import "testing"

func TestPool(t *testing.T) {
	var p Pool
	for _, c := range []struct{ length, capacity int }{
		{0, 256}, {1, 256}, {256, 256}, {257, 512}, {1100, 2048}, {4096, 4096},
		{4097, 8192}, {1 << 20, 1 << 20}, {1<<20 + 1, 1<<20 + 1},
	} {
		b := p.Get(c.length)
		if len(*b) != c.length || cap(*b) != c.capacity {
			t.Errorf("Get(%d): len %d cap %d, want len %d cap %d", c.length, len(*b), cap(*b), c.length, c.capacity)
		}
		p.Put(b)
	}
	// A buffer put back is handed out again, whole, for any length of its
	// tier; one of a capacity the pool does not keep is dropped.
	b := p.Get(1000)
	(*b)[0] = 'x'
	p.Put(b)
	// sync.Pool may drop what it holds (a collection, a -race build): look
	// for the buffer a few times.
	found := false
	for range 10 {
		c := p.Get(600)
		if len(*c) != 600 || cap(*c) != 1024 {
			t.Fatalf("Get(600): len %d cap %d", len(*c), cap(*c))
		}
		if &(*c)[0] == &(*b)[0] {
			found = true
			break
		}
	}
	if !found {
		t.Log("the buffer put back was not handed out again (sync.Pool dropped it)")
	}
	odd := make([]byte, 300)
	p.Put(&odd) // not a tier's capacity: not kept
	if c := p.Get(300); cap(*c) != 512 {
		t.Errorf("Get(300) after putting a buffer of capacity 300: cap %d", cap(*c))
	}
}
