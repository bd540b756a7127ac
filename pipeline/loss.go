package pipeline

import (
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	flowpb "github.com/flowbus/flowbus/flow"
)

// cpu values of a lossEntry besides a real CPU number.
const (
	cpuNone  = -2 // no loss with a CPU seen yet
	cpuMixed = -1 // unknown, or losses from several CPUs
)

type lossKey struct {
	source    flowpb.LostEventSource
	component string // where the events were lost
}

type lossEntry struct {
	count       uint64
	cpu         int32
	first, last time.Time
}

// lossBox collects the losses one sink must report in its stream, per
// (LostEvent source, component), until the sink's goroutine turns them
// into LostEvents: at most once per lost_event_interval, and once more when
// the sink drains at shutdown.
type lossBox struct {
	mu      sync.Mutex
	pending map[lossKey]*lossEntry
	// total counts every lost event ever added: the sink's `lost`.
	total atomic.Uint64
	// reported counts the LostEvents delivered to the sink.
	reported atomic.Uint64
	// failingSince is 1 + the sink's delivered count when its LostEvents
	// began failing, 0 while they are delivered.
	failingSince atomic.Uint64
}

// failed records that the sink did not take a LostEvent when it had
// delivered `delivered` events; ok that it took one.
func (l *lossBox) failed(delivered uint64) { l.failingSince.CompareAndSwap(0, delivered+1) }
func (l *lossBox) ok()                     { l.failingSince.Store(0) }

// refused reports whether the sink's LostEvents fail while it delivered
// events since they began failing: their destination refuses them, the
// broker is not away.
func (l *lossBox) refused(delivered uint64) bool {
	f := l.failingSince.Load()
	return f != 0 && delivered+1 > f
}

func newLossBox() *lossBox {
	return &lossBox{pending: map[lossKey]*lossEntry{}}
}

// add records n events lost at component; cpu < 0 means unknown.
func (l *lossBox) add(source flowpb.LostEventSource, component string, cpu int32, n uint64, now time.Time) {
	if n == 0 {
		return
	}
	l.total.Add(n)
	l.mu.Lock()
	k := lossKey{source, component}
	e := l.pending[k]
	if e == nil {
		e = &lossEntry{cpu: cpuNone, first: now}
		l.pending[k] = e
	}
	e.count += n
	e.last = now
	switch {
	case cpu < 0:
		e.cpu = cpuMixed
	case e.cpu == cpuNone:
		e.cpu = cpu
	case e.cpu != cpu:
		e.cpu = cpuMixed
	}
	l.mu.Unlock()
}

// putBack returns ev, a LostEvent made by take under key k that the sink
// could not deliver, to the pending losses so that the next flush reports
// it again. It merges with the losses added since under the same key (the
// earliest first, the latest last, the CPUs combined). total is not
// counted again: the events were counted when first added.
func (l *lossBox) putBack(ev *Event, k lossKey) {
	lost := ev.Lost
	if lost == nil || lost.NumEventsLost == 0 {
		return
	}
	first, last := lost.First.AsTime(), lost.Last.AsTime()
	cpu := int32(cpuMixed)
	if lost.Cpu != nil {
		cpu = lost.Cpu.GetValue()
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	e := l.pending[k]
	if e == nil {
		l.pending[k] = &lossEntry{count: lost.NumEventsLost, cpu: cpu, first: first, last: last}
		return
	}
	e.count += lost.NumEventsLost
	if first.Before(e.first) {
		e.first = first
	}
	if last.After(e.last) {
		e.last = last
	}
	if e.cpu != cpu {
		e.cpu = cpuMixed
	}
}

// hasPending reports whether a LostEvent is due.
func (l *lossBox) hasPending() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.pending) > 0
}

// take moves the pending losses into a new batch of reported LostEvents
// (nil when there are none), in a stable order, and returns the key of
// each event for putBack. reported counts the LostEvents once delivered.
func (l *lossBox) take(nodeName string) (*Batch, []lossKey) {
	l.mu.Lock()
	if len(l.pending) == 0 {
		l.mu.Unlock()
		return nil, nil
	}
	keys := make([]lossKey, 0, len(l.pending))
	for k := range l.pending {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		if keys[i].component != keys[j].component {
			return keys[i].component < keys[j].component
		}
		return keys[i].source < keys[j].source
	})
	now := timestamppb.Now()
	b := NewBatch()
	for _, k := range keys {
		e := l.pending[k]
		ev := b.Next()
		ev.Lost = &flowpb.LostEvent{
			Source:        k.source,
			NumEventsLost: e.count,
			First:         timestamppb.New(e.first),
			Last:          timestamppb.New(e.last),
		}
		if e.cpu >= 0 {
			ev.Lost.Cpu = wrapperspb.Int32(e.cpu)
		}
		ev.NodeName = nodeName
		ev.Time = now
		ev.Reported = true
	}
	clear(l.pending)
	l.mu.Unlock()
	return b, keys
}
