package flowid

import (
	"regexp"
	"testing"
)

var v4 = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`)

func TestNextIsUniqueV4(t *testing.T) {
	g := New()
	seen := make(map[string]bool)
	for range 10000 {
		id := g.Next()
		if !v4.MatchString(id) {
			t.Fatalf("%q is not a version 4 UUID", id)
		}
		if seen[id] {
			t.Fatalf("%q repeated", id)
		}
		seen[id] = true
	}
}

func TestSeeded(t *testing.T) {
	a, b := NewSeeded([32]byte{1}), NewSeeded([32]byte{1})
	for range 100 {
		if x, y := a.Next(), b.Next(); x != y {
			t.Fatalf("same seed, different ids: %q %q", x, y)
		}
	}
	if x, y := New().Next(), New().Next(); x == y {
		t.Fatal("two OS-seeded generators made the same id")
	}
}

func BenchmarkNext(b *testing.B) {
	g := New()
	b.ReportAllocs()
	for b.Loop() {
		_ = g.Next()
	}
}
