// Package flowid makes flow uuids: random version 4 UUIDs, as Hubble gives
// every flow it decodes from the datapath. A Generator draws them from a
// ChaCha8 stream seeded from the operating system and writes their text into
// a shared arena, so a steady stream of ids costs one allocation per few
// hundred flows instead of one per flow.
package flowid

import (
	crand "crypto/rand"
	"math/rand/v2"
	"unsafe"
)

const (
	textLen   = 36
	arenaSize = 512 * textLen
)

const hexDigits = "0123456789abcdef"

// TextLen is the length of a UUID's canonical text form.
const TextLen = textLen

// Put writes the version 4 UUID made from the random bits hi and lo into
// b[:36] in canonical text form (the version and variant bits are set).
func Put(b []byte, hi, lo uint64) {
	_ = b[textLen-1]
	hi = hi&^0xf000 | 0x4000           // version 4
	lo = lo&^(0xc000<<48) | 0x8000<<48 // RFC 4122 variant
	put := func(at int, x uint64, n int) {
		for i := range n {
			v := byte(x >> (8 * (n - 1 - i)))
			b[at+2*i], b[at+2*i+1] = hexDigits[v>>4], hexDigits[v&15]
		}
	}
	put(0, hi>>32, 4)
	b[8] = '-'
	put(9, hi>>16, 2)
	b[13] = '-'
	put(14, hi, 2)
	b[18] = '-'
	put(19, lo>>48, 2)
	b[23] = '-'
	put(24, lo, 6)
}

// Generator makes uuids. It is not safe for concurrent use; use one per
// goroutine.
type Generator struct {
	rng   *rand.ChaCha8
	arena []byte
}

// New returns a Generator seeded from the operating system's randomness.
func New() *Generator {
	var seed [32]byte
	_, _ = crand.Read(seed[:]) // never fails on Linux (crypto/rand panics internally otherwise)
	return &Generator{rng: rand.NewChaCha8(seed)}
}

// NewSeeded returns a Generator that makes the same ids for the same seed
// (for tests).
func NewSeeded(seed [32]byte) *Generator {
	return &Generator{rng: rand.NewChaCha8(seed)}
}

// Next returns a new random version 4 UUID in its canonical text form.
// The string stays valid for as long as it is referenced.
func (g *Generator) Next() string {
	if len(g.arena) < textLen {
		g.arena = make([]byte, arenaSize)
	}
	b := g.arena[:textLen:textLen]
	g.arena = g.arena[textLen:]
	Put(b, g.rng.Uint64(), g.rng.Uint64())
	return unsafe.String(&b[0], textLen)
}
