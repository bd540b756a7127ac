package flowjson

import (
	"testing"

	"google.golang.org/protobuf/encoding/protojson"

	flowpb "github.com/flowbus/flowbus/flow"
	"github.com/flowbus/flowbus/flow/flowjson/randflow"
	"github.com/flowbus/flowbus/flow/observer"
	"github.com/flowbus/flowbus/internal/cputime"
)

var samples = []struct {
	name string
	flow func() *flowpb.Flow
}{
	{"L3L4", randflow.L3L4},
	{"Enriched", randflow.Enriched},
}

func BenchmarkEncode(b *testing.B) {
	for _, s := range samples {
		f := s.flow()
		b.Run(s.name+"/flowjson", func(b *testing.B) {
			buf, _ := AppendExport(nil, f, nil, f.NodeName, f.Time)
			b.SetBytes(int64(len(buf)))
			b.ReportAllocs()
			for b.Loop() {
				buf, _ = AppendExport(buf[:0], f, nil, f.NodeName, f.Time)
			}
		})
		b.Run(s.name+"/protojson", func(b *testing.B) {
			env := envelope(f, nil, f.NodeName, f.Time)
			buf, _ := reference(env)
			b.SetBytes(int64(len(buf)))
			b.ReportAllocs()
			for b.Loop() {
				reference(env)
			}
		})
	}
}

func BenchmarkDecode(b *testing.B) {
	for _, s := range samples {
		f := s.flow()
		line, _ := AppendExport(nil, f, nil, f.NodeName, f.Time)
		b.Run(s.name+"/flowjson", func(b *testing.B) {
			ev := new(observer.ExportEvent)
			b.SetBytes(int64(len(line)))
			b.ReportAllocs()
			cpu := cpuTime()
			for b.Loop() {
				if err := Unmarshal(line, ev); err != nil {
					b.Fatal(err)
				}
			}
			reportCPU(b, cpu)
		})
		b.Run(s.name+"/decoder", func(b *testing.B) {
			var dec Decoder
			ev := new(observer.ExportEvent)
			b.SetBytes(int64(len(line)))
			b.ReportAllocs()
			cpu := cpuTime()
			for b.Loop() {
				if err := dec.Unmarshal(line, ev); err != nil {
					b.Fatal(err)
				}
			}
			reportCPU(b, cpu)
		})
		b.Run(s.name+"/protojson", func(b *testing.B) {
			ev := new(observer.ExportEvent)
			b.SetBytes(int64(len(line)))
			b.ReportAllocs()
			cpu := cpuTime()
			for b.Loop() {
				if err := protojson.Unmarshal(line, ev); err != nil {
					b.Fatal(err)
				}
			}
			reportCPU(b, cpu)
		})
	}
}

// BenchmarkTranscode is the per-line codec work of file → file json: decode
// a line into reused storage and encode it again.
func BenchmarkTranscode(b *testing.B) {
	for _, s := range samples {
		f := s.flow()
		line, _ := AppendExport(nil, f, nil, f.NodeName, f.Time)
		b.Run(s.name, func(b *testing.B) {
			ev := new(observer.ExportEvent)
			out := make([]byte, 0, 4096)
			b.SetBytes(int64(len(line)))
			b.ReportAllocs()
			cpu := cpuTime()
			for b.Loop() {
				if err := Unmarshal(line, ev); err != nil {
					b.Fatal(err)
				}
				var err error
				if out, err = AppendExport(out[:0], ev.GetFlow(), ev.GetLostEvents(), ev.NodeName, ev.Time); err != nil {
					b.Fatal(err)
				}
			}
			reportCPU(b, cpu)
		})
	}
}

// cpuTime is the process's CPU time (user and system) in nanoseconds: on a
// shared machine it varies less than the wall clock, and it includes the
// garbage collector's work on the other threads.
func cpuTime() int64 { return int64(cputime.Process()) }

// reportCPU reports the CPU time per operation since cpu (a cpuTime).
func reportCPU(b *testing.B, cpu int64) {
	b.ReportMetric(float64(cpuTime()-cpu)/float64(b.N), "cpu-ns/op")
}
