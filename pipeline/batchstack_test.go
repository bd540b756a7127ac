package pipeline

import "testing"

// TestBatchStack: the batch pushed last is popped first, and the stack
// holds at most warmMax batches.
func TestBatchStack(t *testing.T) {
	var s batchStack
	bs := make([]*Batch, warmMax+1)
	for i := range bs {
		bs[i] = new(Batch)
		if got, want := s.put(bs[i]), i < warmMax; got != want {
			t.Fatalf("put %d: %v, want %v", i, got, want)
		}
	}
	for i := warmMax - 1; i >= 0; i-- {
		if got := s.get(); got != bs[i] {
			t.Fatalf("get: %p, want batch %d (%p), the last pushed", got, i, bs[i])
		}
	}
	if got := s.get(); got != nil {
		t.Fatalf("get on an empty stack: %p", got)
	}
}
