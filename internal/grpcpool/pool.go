// Package grpcpool is a gRPC buffer pool (mem.BufferPool) that does not
// clear the buffers it hands out again.
//
// gRPC's default pool zeroes the whole capacity of every buffer it reuses,
// and its tiers are 256 bytes, 4, 16 and 32 KiB and 1 MiB: a Hubble flow
// of about a kilobyte takes a 4 KiB buffer, and a stream of flows clears
// 4 KiB for each (a twentieth of the CPU per flow of the hubble source when
// it still received with gRPC's client).
// gRPC fills every buffer it gets up to the length it asked for before
// reading it, so the clearing buys nothing there. Pool keeps buffers in
// tiers of powers of two, from 256 bytes to 1 MiB; a buffer of another
// capacity is not kept, and a larger request gets a buffer of its own.
package grpcpool

import (
	"math/bits"
	"sync"

	"google.golang.org/grpc/mem"
)

const (
	minShift = 8
	maxShift = 20
)

// Pool is a mem.BufferPool; its zero value is ready to use.
type Pool struct {
	tiers [maxShift - minShift + 1]sync.Pool
}

var _ mem.BufferPool = (*Pool)(nil)

// Default is the pool flowbus's gRPC clients and servers share.
var Default = new(Pool)

// shift is the tier of a buffer of length n: the smallest power of two
// that holds it, at least 1<<minShift.
func shift(n int) int {
	if n <= 1<<minShift {
		return minShift
	}
	return bits.Len(uint(n - 1))
}

// Get returns a buffer of the given length; its bytes are not cleared.
func (p *Pool) Get(length int) *[]byte {
	s := shift(length)
	if s > maxShift {
		b := make([]byte, length)
		return &b
	}
	if b, ok := p.tiers[s-minShift].Get().(*[]byte); ok {
		*b = (*b)[:length]
		return b
	}
	b := make([]byte, length, 1<<s)
	return &b
}

// Put keeps b for reuse when its capacity is one of the pool's tiers.
func (p *Pool) Put(b *[]byte) {
	c := cap(*b)
	if c < 1<<minShift || c > 1<<maxShift || c&(c-1) != 0 {
		return
	}
	p.tiers[bits.Len(uint(c))-1-minShift].Put(b)
}
