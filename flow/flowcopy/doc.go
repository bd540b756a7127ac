// Package flowcopy deep-copies Flows and LostEvents into storage the caller
// keeps, reusing the destination's nested messages, lists and oneof
// wrappers, so that copying flows of the same shape over and over allocates
// nothing. Every message, list and byte slice is the destination's own.
// Flow and LostEvent share the source's strings; FlowOwned and
// LostEventOwned pass every non-empty string through a Strings, whose
// copies the destination holds instead. A string may point into storage
// that is reused (a batch's, see pipeline.Batch.Alloc): a copy kept beyond
// the hold on that storage must own its strings. Unknown fields are not
// copied.
//
// The copy functions are generated from the Go types of the schema by
// gen_test.go into copy_gen.go (FLOWBUS_UPDATE=1 go test ./flow/flowcopy/
// rewrites it; the test fails when it is stale).
package flowcopy

// Strings copies the strings of a copy made by FlowOwned or
// LostEventOwned (whose dst may be src: the message then gets the
// copier's strings in place). Copy returns a string equal to s that the copy may keep
// as long as the copier's owner says (storage it reuses, say, when the
// copy is overwritten); it is called once per non-empty string, in no
// particular order. An implementation that is a pointer converts to a
// Strings without allocating.
type Strings interface {
	Copy(s string) string
}

// StringsFunc is a function used as a Strings.
type StringsFunc func(s string) string

// Copy implements Strings.
func (f StringsFunc) Copy(s string) string { return f(s) }

// str returns s, or its copy by ss when there is a copier and s is not
// empty.
func str(s string, ss Strings) string {
	if ss == nil || s == "" {
		return s
	}
	return ss.Copy(s)
}

// strList returns dst holding src's strings, each through str. The loop
// is a function of its own so that strList inlines: without a copier, a
// list costs what an append does.
func strList(dst, src []string, ss Strings) []string {
	dst = append(dst[:0], src...)
	if ss != nil {
		ownList(dst, ss)
	}
	return dst
}

// ownList replaces each string of l with its copy by ss (not nil).
func ownList(l []string, ss Strings) {
	for i, s := range l {
		l[i] = str(s, ss)
	}
}

// resize returns s with length n, keeping the messages already in its
// capacity for reuse.
func resize[T any](s []*T, n int) []*T {
	if n <= cap(s) {
		return s[:n]
	}
	return append(s[:cap(s)], make([]*T, n-cap(s))...)
}
