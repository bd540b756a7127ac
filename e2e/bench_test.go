package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/flowbus/flowbus/internal/sinktest"
	"github.com/flowbus/flowbus/pipeline"
)

// exportFlows is the size of the Hubble export file the file-source
// benchmarks read once per op.
const exportFlows = 20000

var (
	exportOnce sync.Once
	exportPath string
	exportErr  error
	exportDir  string
)

func TestMain(m *testing.M) {
	if kind := os.Getenv(brokerEnv); kind != "" {
		os.Exit(runBroker(kind))
	}
	code := m.Run()
	if exportDir != "" {
		os.RemoveAll(exportDir)
	}
	os.Exit(code)
}

// exportFile returns the path of a Hubble export file of exportFlows
// generated flows, made once per test binary.
func exportFile(tb testing.TB) string {
	exportOnce.Do(func() {
		exportDir, exportErr = os.MkdirTemp("", "flowbus-e2e-")
		if exportErr != nil {
			return
		}
		exportPath = filepath.Join(exportDir, "flows.json")
		exportErr = GenerateExport(exportPath, exportFlows, 42)
	})
	if exportErr != nil {
		tb.Fatal(exportErr)
	}
	return exportPath
}

// typicalFilter is the filter of the whole-pipeline benchmarks: drops,
// web traffic or one namespace, except kube-system.
const typicalFilter = `
    allow:
      - {verdict: [DROPPED]}
      - {destination_port: ["443", "80"]}
      - {source_pod: ["shop/"]}
    deny:
      - {source_pod: ["kube-system/"]}`

// measure runs the pipeline built from cfg(i) for each of runs runs, each
// carrying flowsPerRun flows from its sources, and reports per-flow
// figures: flows/s (wall clock), cpu-ns/flow (the process's user+system
// time, in-process peers included), allocs/flow and B/flow.
func measure(b *testing.B, runs, flowsPerRun int, cfg func(run int) string, check func(*pipeline.Summary) error) {
	b.Helper()
	ps := make([]*pipeline.Pipeline, runs)
	for i := range ps {
		p, err := Build(cfg(i), b.TempDir())
		if err != nil {
			b.Fatal(err)
		}
		ps[i] = p
	}
	runtime.GC()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	cpu0 := CPUTime()
	b.ResetTimer()
	start := time.Now()
	for _, p := range ps {
		s, err := p.Run(context.Background())
		if err != nil {
			b.Fatal(err)
		}
		if s.Total.Received != uint64(flowsPerRun) {
			b.Fatalf("received %d flows, want %d", s.Total.Received, flowsPerRun)
		}
		if check != nil {
			if err := check(s); err != nil {
				b.Fatal(err)
			}
		}
	}
	wall := time.Since(start)
	b.StopTimer()
	cpu := CPUTime() - cpu0
	runtime.ReadMemStats(&after)
	flows := float64(runs * flowsPerRun)
	b.ReportMetric(flows/wall.Seconds(), "flows/s")
	b.ReportMetric(float64(cpu.Nanoseconds())/flows, "cpu-ns/flow")
	b.ReportMetric(float64(after.Mallocs-before.Mallocs)/flows, "allocs/flow")
	b.ReportMetric(float64(after.TotalAlloc-before.TotalAlloc)/flows, "B/flow")
}

// lossless fails a run that lost events.
func lossless(s *pipeline.Summary) error {
	if s.Total.Lost != 0 {
		return fmt.Errorf("lost %d events: %s", s.Total.Lost, s)
	}
	return nil
}

// BenchmarkGenerateDiscard is the runtime's own cost: the generate
// source as fast as it goes into the discard sink. One op is one flow.
func BenchmarkGenerateDiscard(b *testing.B) {
	measure(b, 1, b.N, func(int) string {
		return fmt.Sprintf(`
metrics: {listen: ""}
sources: {g: {type: generate, count: %d, seed: 1}}
sinks: {d: {type: discard, inputs: [g]}}
`, b.N)
	}, lossless)
}

// BenchmarkFileFilterDiscard is the filter's figure: a Hubble export file
// through a typical filter into discard. One op is one pass over a file of
// 20,000 flows; the per-flow figures are in the custom metrics.
func BenchmarkFileFilterDiscard(b *testing.B) {
	path := exportFile(b)
	measure(b, b.N, exportFlows, func(int) string {
		return fmt.Sprintf(`
metrics: {listen: ""}
sources: {in: {type: file, path: %q}}
transforms:
  f:
    type: filter
    inputs: [in]%s
sinks: {d: {type: discard, inputs: [f]}}
`, path, typicalFilter)
	}, lossless)
}

// BenchmarkFileFilterFileJSON is the file → filter → file json pipeline, in
// process. One op is one pass over a file of 20,000 flows.
func BenchmarkFileFilterFileJSON(b *testing.B) {
	path := exportFile(b)
	dir := b.TempDir()
	measure(b, b.N, exportFlows, func(i int) string {
		return fmt.Sprintf(`
metrics: {listen: ""}
sources: {in: {type: file, path: %q}}
transforms:
  f:
    type: filter
    inputs: [in]%s
sinks: {out: {type: file, inputs: [f], path: %q, encoding: json}}
`, path, typicalFilter, filepath.Join(dir, fmt.Sprintf("out-%d.json", i%2)))
	}, lossless)
}

// kafkaPipeline is the reference generate → filter → redact → sample →
// protobuf → kafka pipeline, for n flows into the broker at addr, with the
// top-level keys in top.
func kafkaPipeline(n int, addr, top string) string {
	return fmt.Sprintf(`
metrics: {listen: ""}
%s
sources: {g: {type: generate, count: %d, seed: 1}}
transforms:
  f:
    type: filter
    inputs: [g]
    deny:
      - {source_pod: ["kube-system/"]}
  r:
    type: redact
    inputs: [f]
    http: {url_query: true, user_info: true}
    kafka: {api_key: true}
  s:
    type: sample
    inputs: [r]
    rate: 2
    keep: [{verdict: [DROPPED]}]
sinks:
  k:
    type: kafka
    inputs: [s]
    brokers: [%q]
    topic: flows
    encoding: protobuf
`, top, n, addr)
}

func newKafka(tb testing.TB, opts ...kfake.Opt) *kfake.Cluster {
	opts = append([]kfake.Opt{kfake.NumBrokers(1), kfake.Ports(0), kfake.SeedTopics(3, "flows")}, opts...)
	c, err := kfake.NewCluster(opts...)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(c.Close)
	return c
}

// BenchmarkGenerateFilterRedactSampleKafka is the Kafka figure:
// generate → filter → redact → sample (1 in 2, drops always) → protobuf →
// Kafka (kfake in process, 3 partitions, acks all). The broker shares the
// two cores: "stored" keeps the records in kfake's in-memory log (4 MiB
// segments: with kfake's default of 100 MiB, a quarter of the CPU time went
// to kfake copying its growing segment), "blackhole" has kfake acknowledge
// without storing, which is closer to a broker on another machine. One op
// is one generated flow.
func BenchmarkGenerateFilterRedactSampleKafka(b *testing.B) {
	for _, bc := range []struct {
		name string
		opts []kfake.Opt
	}{
		{"stored", []kfake.Opt{kfake.BrokerConfigs(map[string]string{"log.segment.bytes": "4194304"})}},
		{"blackhole", []kfake.Opt{kfake.BlackholeProduce()}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			c := newKafka(b, bc.opts...)
			measure(b, 1, b.N, func(int) string {
				return kafkaPipeline(b.N, c.ListenAddrs()[0], "shutdown_timeout: 5s")
			}, lossless)
		})
	}
}

// BenchmarkGenerateNATSJetStream: generate → protobuf → NATS JetStream
// (embedded server, file store, every PubAck awaited). One op is one flow.
func BenchmarkGenerateNATSJetStream(b *testing.B) {
	store := b.TempDir()
	measure(b, 1, b.N, func(int) string {
		return fmt.Sprintf(`
metrics: {listen: ""}
shutdown_timeout: 30s
sources: {g: {type: generate, count: %d, seed: 1}}
sinks:
  n:
    type: nats
    inputs: [g]
    url: embedded
    embedded: {port: -1, store_dir: %q}
    subject: hubble.flows
    encoding: protobuf
    jetstream: {stream: BENCH, create: true, max_pending: 4000}
`, b.N, store)
	}, lossless)
}

// BenchmarkDiskBufferKafka compares a sink's memory buffer with its disk
// buffer (each fsync policy) on generate → protobuf → Kafka (kfake in
// process, acknowledging without storing, so the figure is flowbus's own).
// One op is one flow; disk-B/flow is what the disk buffer appends per
// flow (the generator's flows, with their framing).
func BenchmarkDiskBufferKafka(b *testing.B) {
	for _, bc := range []struct{ name, buffer string }{
		{"memory", "{}"},
		{"disk-interval", "{type: disk, path: %q}"},
		{"disk-always", "{type: disk, path: %q, sync: always}"},
		{"disk-never", "{type: disk, path: %q, sync: never}"},
	} {
		b.Run(bc.name, func(b *testing.B) {
			c := newKafka(b, kfake.BlackholeProduce())
			buffer := bc.buffer
			if strings.Contains(buffer, "%q") {
				buffer = fmt.Sprintf(buffer, b.TempDir())
			}
			p, err := Build(fmt.Sprintf(`
metrics: {listen: ""}
shutdown_timeout: 30s
sources: {g: {type: generate, count: %d, seed: 1}}
sinks:
  k:
    type: kafka
    inputs: [g]
    brokers: [%q]
    topic: flows
    encoding: protobuf
    buffer: %s
`, b.N, c.ListenAddrs()[0], buffer), b.TempDir())
			if err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			b.ResetTimer()
			s, err := p.Run(context.Background())
			b.StopTimer()
			if err != nil {
				b.Fatal(err)
			}
			if err := lossless(s); err != nil || s.Total.Delivered != uint64(b.N) {
				b.Fatalf("%v: %v", err, s)
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "flows/s")
			if w := sinktest.Metric(p.Registry(), "flowbus_disk_buffer_written_bytes_total"); w > 0 {
				b.ReportMetric(w/float64(b.N), "disk-B/flow")
			}
		})
	}
}

// BenchmarkGenerateParquet is the whole pipeline generate → parquet: one
// op is one flow (b.N flows in one run, hourly partitions), and
// disk-B/flow is the size of the completed files per flow. "defaults" is
// the sink's defaults, the others set compression_level or sort_rows.
//
// It measures a sink that has been running: the same pipeline runs once,
// untimed, before the timed run. The sink's buffers are hundreds of
// megabytes (a row group per open file, the runs held for ordering), and
// a process's first run pays for each new page of memory as the kernel
// maps it, which on the virtual machines this was measured on costs tens
// of microseconds a page: a third more CPU per flow in a 500,000-flow
// run. A sink that runs for hours pays that once. FLOWBUS_E2E_COLD=1
// skips the untimed run, to measure a new process.
func BenchmarkGenerateParquet(b *testing.B) {
	for _, c := range []struct{ name, opts string }{
		{"defaults", ""},
		{"better", ", compression_level: better"},
		{"sort_rows_4096", ", sort_rows: 4096"},
	} {
		b.Run(c.name, func(b *testing.B) {
			cfg := func(n int, dir string) string {
				return fmt.Sprintf(`
metrics: {listen: ""}
sources: {g: {type: generate, count: %d, seed: 1}}
sinks: {lake: {type: parquet, inputs: [g], path: "%s/dt={{ time.date }}/hr={{ time.hour }}"%s}}
`, n, dir, c.opts)
			}
			if b.N > 1 && os.Getenv("FLOWBUS_E2E_COLD") == "" {
				warm, err := Build(cfg(b.N, b.TempDir()), b.TempDir())
				if err != nil {
					b.Fatal(err)
				}
				if _, err := warm.Run(context.Background()); err != nil {
					b.Fatal(err)
				}
			}
			dir := b.TempDir()
			measure(b, 1, b.N, func(int) string { return cfg(b.N, dir) }, lossless)
			var size int64
			filepath.WalkDir(dir, func(_ string, d os.DirEntry, err error) error {
				if err == nil && !d.IsDir() {
					if fi, err := d.Info(); err == nil {
						size += fi.Size()
					}
				}
				return nil
			})
			b.ReportMetric(float64(size)/float64(b.N), "disk-B/flow")
		})
	}
}

// BenchmarkGenerateFile is the whole pipeline generate → file, one op one
// flow (b.N flows in one run), for each encoding a SIEM or a lake takes:
// Hubble's export JSON and OCSF Network Activity JSON. out-B/flow is the
// file's size per flow.
func BenchmarkGenerateFile(b *testing.B) {
	for _, enc := range []string{"json", "ocsf"} {
		b.Run(enc, func(b *testing.B) {
			out := filepath.Join(b.TempDir(), "out."+enc)
			measure(b, 1, b.N, func(int) string {
				return fmt.Sprintf(`
metrics: {listen: ""}
sources: {g: {type: generate, count: %d, seed: 1}}
sinks: {out: {type: file, inputs: [g], path: %q, encoding: %s}}
`, b.N, out, enc)
			}, lossless)
			if fi, err := os.Stat(out); err == nil {
				b.ReportMetric(float64(fi.Size())/float64(b.N), "out-B/flow")
			}
		})
	}
}
