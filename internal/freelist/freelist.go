// Package freelist is a stack of values kept for reuse by code that fills
// reused storage (a decoder, a flow generator) and takes messages out of
// it: what such code takes out no storage references any more, and goes
// back into storage only through Get, which hands each value to one
// caller.
package freelist

// List keeps values (*T) for reuse, the last one kept handed out first.
// Its zero value is empty and ready to use; a List is used by one
// goroutine at a time.
type List[T any] struct{ free []*T }

// Get returns a kept value, or a new one when none is kept.
func (l *List[T]) Get() *T {
	if n := len(l.free); n > 0 {
		x := l.free[n-1]
		l.free[n-1] = nil
		l.free = l.free[:n-1]
		return x
	}
	return new(T)
}

// Put keeps x, unless x is nil or the list already holds max values.
func (l *List[T]) Put(x *T, max int) {
	if x != nil && len(l.free) < max {
		l.free = append(l.free, x)
	}
}

// Len is the number of values kept.
func (l *List[T]) Len() int { return len(l.free) }
