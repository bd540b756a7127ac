// Package flowcopy deep-copies Flows and LostEvents into storage the caller
// keeps, reusing the destination's nested messages, lists and oneof
// wrappers, so that copying flows of the same shape over and over allocates
// nothing. Strings are shared (Go strings are immutable); every message,
// list and byte slice is the destination's own. Unknown fields are not
// copied.
//
// The copy functions are generated from the Go types of the schema by
// gen_test.go into copy_gen.go (FLOWBUS_UPDATE=1 go test ./flow/flowcopy/
// rewrites it; the test fails when it is stale).
package flowcopy

// resize returns s with length n, keeping the messages already in its
// capacity for reuse.
func resize[T any](s []*T, n int) []*T {
	if n <= cap(s) {
		return s[:n]
	}
	return append(s[:cap(s)], make([]*T, n-cap(s))...)
}
