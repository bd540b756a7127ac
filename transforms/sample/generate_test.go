package sample

import (
	"fmt"
	"testing"

	flowpb "github.com/flowbus/flowbus/flow"
	"github.com/flowbus/flowbus/pipeline"
	"github.com/flowbus/flowbus/sources/generate"
)

// connKey names f's connection independently of direction, for the test.
func connKey(f *flowpb.Flow) string {
	p, sp, dp := l4(f.GetL4())
	a := fmt.Sprintf("%s|%d", f.GetIP().GetSource(), sp)
	b := fmt.Sprintf("%s|%d", f.GetIP().GetDestination(), dp)
	if b < a {
		a, b = b, a
	}
	return fmt.Sprintf("%d %s %s", p, a, b)
}

// TestGeneratedFlows samples 100k flows of the generate source, whose
// conversations carry both directions: a connection's flows share one
// decision, drops are always kept, and about 1/rate of the connections
// pass.
func TestGeneratedFlows(t *testing.T) {
	const rate = 10
	s := build(t, "rate: 10\nkeep: [{verdict: [DROPPED]}]")
	g := generate.NewGenerator(11)
	decision := map[string]bool{}
	dirs := map[string]map[string]bool{}
	var e pipeline.Event
	drops, kept, total := 0, 0, 0
	for i := range 100_000 {
		g.Fill(&e, int64(i)*1e6)
		e.SampleRate = 0
		f := e.Flow
		if f.GetIP() == nil {
			continue
		}
		k := s.keepEvent(&e)
		total++
		if f.Verdict == flowpb.Verdict_DROPPED {
			drops++
			if !k || e.SampleRate != 0 {
				t.Fatalf("drop not kept as it is: kept %v rate %d", k, e.SampleRate)
			}
			continue
		}
		if k {
			kept++
		}
		key := connKey(f)
		if d, ok := decision[key]; ok && d != k {
			t.Fatalf("connection %s split: %v then %v", key, d, k)
		}
		decision[key] = k
		if dirs[key] == nil {
			dirs[key] = map[string]bool{}
		}
		dirs[key][f.GetIP().GetSource()] = true
	}
	both, keptConns := 0, 0
	for key, d := range decision {
		if len(dirs[key]) == 2 {
			both++
		}
		if d {
			keptConns++
		}
	}
	if both < len(decision)/2 {
		t.Errorf("only %d of %d connections were seen in both directions", both, len(decision))
	}
	share := float64(keptConns) / float64(len(decision))
	if share < 0.8/rate || share > 1.2/rate {
		t.Errorf("kept %d of %d connections (%.3f), want about 1/%d", keptConns, len(decision), share, rate)
	}
	t.Logf("%d flows (%d drops), %d connections (%d both ways): kept %d flows, %d connections", total, drops, len(decision), both, kept, keptConns)
}

// BenchmarkGenerated samples batches of 512 generated flows; b.N counts
// flows, generation is not timed.
func BenchmarkGenerated(b *testing.B) {
	s := build(b, "rate: 10\nkeep: [{verdict: [DROPPED]}]")
	g := generate.NewGenerator(1)
	batch := pipeline.NewBatch()
	defer batch.Release()
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i += 512 {
		b.StopTimer()
		batch.Truncate(0)
		for j := range 512 {
			g.Fill(batch.Next(), int64(i+j))
		}
		b.StartTimer()
		s.Process(batch)
	}
}
