package freelist

import "testing"

func TestList(t *testing.T) {
	var l List[int]
	a, b := new(int), new(int)
	l.Put(a, 2)
	l.Put(nil, 2)
	l.Put(b, 2)
	l.Put(new(int), 2) // beyond max: not kept
	if l.Len() != 2 {
		t.Fatalf("Len %d, want 2", l.Len())
	}
	for i, want := range []*int{b, a} {
		if got := l.Get(); got != want {
			t.Fatalf("Get %d: %p, want %p (last kept first)", i, got, want)
		}
	}
	if x := l.Get(); x == nil || x == a || x == b || l.Len() != 0 {
		t.Fatalf("Get on an empty list: %p, Len %d; want a new value", x, l.Len())
	}
}
