package hubble_test

import (
	"context"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/flowbus/flowbus/flow/observer"
	"github.com/flowbus/flowbus/internal/cputime"
	"github.com/flowbus/flowbus/internal/observerserver"
	"github.com/flowbus/flowbus/internal/sinktest"
)

// cpuTime is the CPU time the process has used: on a shared machine it
// measures the work, where wall time measures the neighbours too.
func cpuTime(*testing.B) time.Duration { return cputime.Process() }

// BenchmarkRingInsert: the cost of Write per flow (one op is one flow), the
// ring full and going round, flows of the file and broker sinks' tests:
// full batches of 512, which the ring keeps by reference, and batches a
// filter left with 128 of their 512 events, whose flows it copies.
func BenchmarkRingInsert(b *testing.B) {
	for _, keep := range []int{512, 128} {
		b.Run(fmt.Sprintf("kept=%d/512", keep), func(b *testing.B) {
			s := newSink(b, "")
			batch := sinktest.Batch(0, 512)
			defer batch.Release()
			batch.Events = batch.Events[:keep]
			for range 65536 / keep * 2 { // two rounds: every slot holds a flow
				s.Write(context.Background(), batch)
			}
			b.ReportAllocs()
			cpu := cpuTime(b)
			b.ResetTimer()
			for i := 0; i < b.N; i += keep {
				batch.Events = batch.Events[:min(keep, b.N-i)]
				s.Write(context.Background(), batch)
			}
			b.StopTimer()
			b.ReportMetric(float64(cpuTime(b)-cpu)/float64(b.N), "cpu-ns/flow")
			batch.Events = batch.Events[:512]
		})
	}
}

// BenchmarkRingMemory: the heap a full ring of 65,535 flows holds, put as
// the sink puts them (observerserver.Server.PutBatch): full batches of 512
// (kept by reference), batches a filter halved (512 flows filled, 256
// kept: still kept by reference, pinning the spare storage of the removed
// half) and quartered (128 kept: copied).
func BenchmarkRingMemory(b *testing.B) {
	for _, keep := range []int{512, 256, 128} {
		b.Run(fmt.Sprintf("kept=%d/512", keep), func(b *testing.B) {
			for range b.N {
				var before, after runtime.MemStats
				// Two collections empty the batch pool (the first moves
				// its batches to the victim cache, the second frees
				// them): otherwise the batches an earlier iteration gave
				// back are counted before and reused, and the ring's
				// memory seems a fraction of what it is.
				runtime.GC()
				runtime.GC()
				runtime.ReadMemStats(&before)
				srv := observerserver.New(observerserver.Options{Capacity: 65535})
				for i := 0; i < 65535; i += keep {
					batch := sinktest.Batch(i, 512)
					batch.Truncate(min(keep, 65535-i))
					srv.PutBatch(batch)
					batch.Release()
				}
				runtime.GC()
				runtime.ReadMemStats(&after)
				b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/(1<<20), "MiB/65535flows")
				b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/65535, "B/flow")
				b.ReportMetric(float64(srv.Batches()), "batches")
				runtime.KeepAlive(srv)
				srv.Clear()
			}
		})
	}
}

// BenchmarkGetFlows: flows written to the sink and streamed to following
// gRPC clients over a unix socket, in the same process. One op is one flow
// written; flows/s counts the flows the clients received (all clients
// together), cpu-ns/flow the process's CPU time (server and clients) per
// flow received. The writer keeps at most half a ring ahead of the slowest
// client, so that what is measured is the rate a client sustains, not how
// fast the writer overruns it (which Write alone measures); a client that
// falls behind all the same gets lost events: lost/op.
func BenchmarkGetFlows(b *testing.B) {
	const ahead = 65535 / 2 // half the ring
	for _, followers := range []int{1, 10} {
		b.Run(fmt.Sprintf("followers=%d", followers), func(b *testing.B) {
			s := newSink(b, "")
			c := observer.NewObserverClient(dial(b, s))
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			var got, lost atomic.Int64
			var wg sync.WaitGroup
			want := int64(b.N)
			seen := make([]atomic.Int64, followers) // flows received or lost, per client
			for k := range followers {
				st := follow(b, c, ctx)
				wg.Go(func() {
					var n int64
					for n < want {
						r, err := st.Recv()
						if err != nil {
							return
						}
						if l := r.GetLostEvents(); l != nil {
							n += int64(l.GetNumEventsLost())
							lost.Add(int64(l.GetNumEventsLost()))
						} else {
							n++
							got.Add(1)
						}
						seen[k].Store(n)
					}
				})
			}
			slowest := func() int64 {
				m := want
				for k := range seen {
					m = min(m, seen[k].Load())
				}
				return m
			}
			batch := sinktest.Batch(0, 512)
			defer batch.Release()
			cpu := cpuTime(b)
			start := time.Now()
			b.ResetTimer()
			for i := 0; i < b.N; i += 512 {
				for int64(i)-slowest() > ahead {
					time.Sleep(100 * time.Microsecond)
				}
				batch.Events = batch.Events[:min(512, b.N-i)]
				s.Write(context.Background(), batch)
			}
			wg.Wait()
			b.StopTimer()
			el := time.Since(start)
			batch.Events = batch.Events[:512]
			b.ReportMetric(float64(got.Load())/el.Seconds(), "flows/s")
			b.ReportMetric(float64(cpuTime(b)-cpu)/float64(max(got.Load(), 1)), "cpu-ns/flow")
			b.ReportMetric(float64(lost.Load())/float64(b.N), "lost/op")
		})
	}
}
