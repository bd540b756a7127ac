package kafka

import (
	"bytes"
	"io"

	"github.com/segmentio/kafka-go"
)

var errEOF = io.EOF

// bytesReader is a kafka.Bytes over a reused buffer.
type bytesReader struct{ bytes.Reader }

func (*bytesReader) Close() error { return nil }

// murmur2Partition picks the partition of a keyed record the way the Java
// client's default partitioner (and librdkafka's murmur2) does.
func murmur2Partition(key []byte, partitions int) int {
	return int((murmur2(key) & 0x7fffffff) % uint32(partitions))
}

// murmur2 is Kafka's variant of MurmurHash2 (seed 0x9747b28c).
func murmur2(data []byte) uint32 {
	const (
		seed uint32 = 0x9747b28c
		m    uint32 = 0x5bd1e995
		r           = 24
	)
	n := len(data)
	h := seed ^ uint32(n)
	for i := 0; i+4 <= n; i += 4 {
		k := uint32(data[i]) | uint32(data[i+1])<<8 | uint32(data[i+2])<<16 | uint32(data[i+3])<<24
		k *= m
		k ^= k >> r
		k *= m
		h *= m
		h ^= k
	}
	tail := n &^ 3
	switch n & 3 {
	case 3:
		h ^= uint32(data[tail+2]) << 16
		fallthrough
	case 2:
		h ^= uint32(data[tail+1]) << 8
		fallthrough
	case 1:
		h ^= uint32(data[tail])
		h *= m
	}
	h ^= h >> 13
	h *= m
	h ^= h >> 15
	return h
}

// records feeds items to a produce request without copying them.
type records struct {
	items      []item
	idx        []int
	next       int
	rec        kafka.Record
	key, value bytesReader
}

func (r *records) ReadRecord() (*kafka.Record, error) {
	if r.next >= len(r.idx) {
		return nil, errEOF
	}
	it := &r.items[r.idx[r.next]]
	r.next++
	r.rec = kafka.Record{Time: it.time, Headers: it.headers}
	if it.key != nil {
		r.key.Reset(it.key)
		r.rec.Key = &r.key
	}
	r.value.Reset(it.value)
	r.rec.Value = &r.value
	return &r.rec, nil
}
