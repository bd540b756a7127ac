package pipeline

import (
	"encoding/binary"
	"errors"
	"fmt"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	flowpb "github.com/flowbus/flowbus/flow"
)

// A disk buffer stores each batch as one record (see package wal for the
// framing and checksums). Its payload:
//
//	version   byte (1)
//	epoch     uvarint: the flowbus-seq epoch of the batch
//	base      uvarint: the flowbus-seq number of its first event
//	count     uvarint: its number of events
//	count × event:
//	  kind        byte: 1 flow, 2 LostEvent
//	  sample_rate uvarint
//	  node_name   uvarint length, bytes
//	  time        byte: 0 none, 1 the flow's own time, 2 explicit, then
//	              zigzag varint seconds and uvarint nanoseconds
//	  message     fixed32 length, the Flow or LostEvent in protobuf
//
// The header comes first so that the event count of a record damaged
// further on can still be read for the loss report.
const diskVersion = 1

// maxDiskEvents bounds the event count believed from a damaged header.
const maxDiskEvents = 1 << 20

var errDiskRecord = errors.New("malformed disk buffer record")

// appendDiskBatch appends the record of b to dst.
func appendDiskBatch(dst []byte, epoch int64, base uint64, b *Batch) ([]byte, error) {
	dst = append(dst, diskVersion)
	dst = binary.AppendUvarint(dst, uint64(epoch))
	dst = binary.AppendUvarint(dst, base)
	dst = binary.AppendUvarint(dst, uint64(len(b.Events)))
	mo := proto.MarshalOptions{}
	for i := range b.Events {
		e := &b.Events[i]
		var m proto.Message
		switch {
		case e.Flow != nil:
			dst, m = append(dst, 1), e.Flow
		case e.Lost != nil:
			dst, m = append(dst, 2), e.Lost
		default:
			return dst, fmt.Errorf("event %d: neither a flow nor a LostEvent", i)
		}
		dst = binary.AppendUvarint(dst, uint64(e.SampleRate))
		dst = binary.AppendUvarint(dst, uint64(len(e.NodeName)))
		dst = append(dst, e.NodeName...)
		switch {
		case e.Time == nil:
			dst = append(dst, 0)
		case e.Flow != nil && e.Time == e.Flow.Time:
			dst = append(dst, 1)
		default:
			dst = append(dst, 2)
			dst = binary.AppendVarint(dst, e.Time.Seconds)
			dst = binary.AppendUvarint(dst, uint64(e.Time.Nanos))
		}
		at := len(dst)
		dst = append(dst, 0, 0, 0, 0)
		var err error
		if dst, err = mo.MarshalAppend(dst, m); err != nil {
			return dst, fmt.Errorf("event %d: %w", i, err)
		}
		binary.LittleEndian.PutUint32(dst[at:], uint32(len(dst)-at-4))
	}
	return dst, nil
}

// diskHeader reads the header of a record (possibly damaged further on).
func diskHeader(p []byte) (epoch int64, base, count uint64, rest []byte, err error) {
	if len(p) < 1 || p[0] != diskVersion {
		return 0, 0, 0, nil, errDiskRecord
	}
	p = p[1:]
	var vals [3]uint64
	for i := range vals {
		v, n := binary.Uvarint(p)
		if n <= 0 {
			return 0, 0, 0, nil, errDiskRecord
		}
		vals[i], p = v, p[n:]
	}
	if vals[2] > maxDiskEvents {
		return 0, 0, 0, nil, errDiskRecord
	}
	return int64(vals[0]), vals[1], vals[2], p, nil
}

// decodeDiskBatch fills b (empty) from a record and returns its epoch and
// base sequence number.
func decodeDiskBatch(p []byte, b *Batch) (epoch int64, base uint64, err error) {
	epoch, base, count, p, err := diskHeader(p)
	if err != nil {
		return 0, 0, err
	}
	uo := proto.UnmarshalOptions{}
	for i := uint64(0); i < count; i++ {
		if len(p) < 1 {
			return 0, 0, fmt.Errorf("event %d: %w", i, errDiskRecord)
		}
		kind := p[0]
		p = p[1:]
		rate, n := binary.Uvarint(p)
		if n <= 0 || rate > 1<<32-1 {
			return 0, 0, fmt.Errorf("event %d: sample rate: %w", i, errDiskRecord)
		}
		p = p[n:]
		l, n := binary.Uvarint(p)
		if n <= 0 || l > uint64(len(p)-n) {
			return 0, 0, fmt.Errorf("event %d: node name: %w", i, errDiskRecord)
		}
		node := string(p[n : n+int(l)])
		p = p[n+int(l):]
		if len(p) < 1 {
			return 0, 0, fmt.Errorf("event %d: %w", i, errDiskRecord)
		}
		tk := p[0]
		p = p[1:]
		var tm *timestamppb.Timestamp
		switch tk {
		case 0, 1:
		case 2:
			s, n := binary.Varint(p)
			if n <= 0 {
				return 0, 0, fmt.Errorf("event %d: time: %w", i, errDiskRecord)
			}
			p = p[n:]
			ns, n := binary.Uvarint(p)
			if n <= 0 || ns >= 1e9 {
				return 0, 0, fmt.Errorf("event %d: time: %w", i, errDiskRecord)
			}
			p = p[n:]
			tm = &timestamppb.Timestamp{Seconds: s, Nanos: int32(ns)}
		default:
			return 0, 0, fmt.Errorf("event %d: time kind %d: %w", i, tk, errDiskRecord)
		}
		if len(p) < 4 {
			return 0, 0, fmt.Errorf("event %d: %w", i, errDiskRecord)
		}
		ml := binary.LittleEndian.Uint32(p)
		p = p[4:]
		if uint64(ml) > uint64(len(p)) {
			return 0, 0, fmt.Errorf("event %d: message length: %w", i, errDiskRecord)
		}
		msg := p[:ml]
		p = p[ml:]
		e := b.Next()
		e.SampleRate, e.NodeName = uint32(rate), node
		switch kind {
		case 1:
			f := e.FlowStorage()
			if err := uo.Unmarshal(msg, f); err != nil {
				e.Flow = nil
				b.Truncate(len(b.Events) - 1)
				return 0, 0, fmt.Errorf("event %d: flow: %w", i, err)
			}
			if tk == 1 {
				e.Time = f.Time
			}
		case 2:
			e.Lost = new(flowpb.LostEvent)
			if err := uo.Unmarshal(msg, e.Lost); err != nil {
				b.Truncate(len(b.Events) - 1)
				return 0, 0, fmt.Errorf("event %d: LostEvent: %w", i, err)
			}
		default:
			b.Truncate(len(b.Events) - 1)
			return 0, 0, fmt.Errorf("event %d: kind %d: %w", i, kind, errDiskRecord)
		}
		if tk == 2 {
			e.Time = tm
		}
	}
	if len(p) != 0 {
		return 0, 0, fmt.Errorf("%d bytes after the last event: %w", len(p), errDiskRecord)
	}
	return epoch, base, nil
}
