package pipeline_test

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"

	"github.com/flowbus/flowbus/pipeline"
)

// leaseSink keeps every batch it is written with a Lease, as the hubble
// sink's ring does, and records the flows' numbers as they were at Write.
type leaseSink struct {
	mu      sync.Mutex
	leases  []pipeline.Lease
	want    [][]int32 // per lease: the flows' numbers at Write
	refused int       // batches without counted events that could not be leased
	lost    int       // batches with counted events that could not be leased
}

func (s *leaseSink) Write(_ context.Context, b *pipeline.Batch) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	l, ok := b.Lease()
	if !ok {
		if b.Counted() > 0 {
			s.lost++
		} else {
			s.refused++
		}
		return 0, nil
	}
	s.leases = append(s.leases, l)
	s.want = append(s.want, numbers(b.Events))
	return 0, nil
}

func (s *leaseSink) Close(context.Context) error { return nil }

// numbers are the numbers of the flows of es (test-count's EventType).
func numbers(es []pipeline.Event) []int32 {
	var out []int32
	for i := range es {
		if f := es[i].Flow; f != nil {
			out = append(out, f.GetEventType().GetType())
		}
	}
	return out
}

// check verifies that every leased batch still holds what it held at
// Write, and releases the leases.
func (s *leaseSink) check(t *testing.T, flows int) {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.lost > 0 {
		t.Errorf("%d batches of flows could not be leased", s.lost)
	}
	seen := 0
	for i, l := range s.leases {
		got := numbers(l.Events())
		if !slices.Equal(got, s.want[i]) && !t.Failed() {
			t.Errorf("leased batch %d changed after Write: holds %v, held %v", i, got, s.want[i])
		}
		seen += len(s.want[i])
		l.Release()
	}
	if seen != flows {
		t.Errorf("leased %d flows, want %d", seen, flows)
	}
	s.leases, s.want = nil, nil
}

func init() {
	pipeline.RegisterSink(pipeline.Spec{Type: "test-lease", Summary: "test sink that keeps batches"}, func(b *pipeline.Build, _ *struct{}) (*leaseSink, error) {
		s := &leaseSink{}
		builtSinks.Store(b.Name, s)
		return s, nil
	})
}

// A sink that leases the batches it is written keeps them unchanged until
// it releases them, on every path of the runtime: a fan-out shared with
// another sink and with a transform that removes events, a memory and a
// disk buffer. Leases delay no Ack. Without the lease's reference the
// runtime would return each batch to the pool after Write, where the
// source refills it (and the poison build overwrites it), so the check
// fails. flowbus's own LostEvents are written in a batch the runtime
// reuses: they cannot be leased.
func TestLeaseKeepsBatches(t *testing.T) {
	for _, buffer := range []string{"{events: 2000}", "{type: disk, path: %q}"} {
		t.Run(buffer, func(t *testing.T) {
			if buffer != "{events: 2000}" {
				buffer = fmt.Sprintf(buffer, t.TempDir())
			}
			p := load(t, fmt.Sprintf(`
metrics: {listen: ""}
lost_event_interval: 5ms
sources:
  gen: {type: test-count, count: 20000, batch: 100, lost_every: 20, ack: leased}
transforms:
  evens: {type: test-odd, inputs: [gen]}
sinks:
  keep: {type: test-lease, inputs: [gen], buffer: %s}
  all: {type: test-rec, inputs: [gen]}
  even: {type: test-rec, inputs: [evens]}
`, buffer))
			s := run(t, p, context.Background())
			k, _ := builtSinks.Load("keep")
			ks := k.(*leaseSink)
			// Every Ack resolved while the leases are still held.
			for i, ok := range ackResults(t, "leased", 200) {
				if !ok {
					t.Fatalf("batch %d: Ack not ok", i)
				}
			}
			for _, sk := range s.Sinks {
				if sk.Sink == "keep" && sk.Counts.Delivered != 20000 {
					t.Errorf("keep delivered %d, want 20000", sk.Counts.Delivered)
				}
			}
			if ks.refused == 0 {
				t.Error("flowbus's LostEvents were leased, or not written")
			}
			if n := sinkNamed("even").flows; n != 10000 {
				t.Errorf("even got %d flows, want 10000", n)
			}
			ks.check(t, 20000)
		})
	}
}
