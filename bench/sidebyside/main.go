// Command sidebyside runs flowbus's whole-process benchmarks next to their
// references, alternating the two for each of -runs runs, and prints the
// medians, the ratios, flows/s and flows/s per core (flows per second of
// the process's user+system CPU), with the load average before and after.
//
// Rows (-rows picks some, default all):
//
//	1  a 200,000-flow Hubble export → filter (verdict DROPPED, protocol tcp)
//	   → JSON file, against hubble observe --input-file with the same filter
//	2  1,000,000 Cilium monitor samples with varied addresses → discard,
//	   against Hubble's L3/L4 parser on the same recording (monitorparse)
//	3  generate 1,000,000 → filter → redact → sample (1 in 2) → protobuf →
//	   Kafka (kfake in another process, 6 partitions); the ceiling: the
//	   same records produced by a minimal kafka-go client and by franz-go
//	   to the same kind of broker
//	4  generate → protobuf → NATS JetStream (embedded), against the same
//	   pipeline publishing to core NATS
//
// Run from the bench directory: go run ./sidebyside. It builds flowbus
// from the parent directory, the hubble CLI and monitorparse with
// .ci/tools/build; inputs and outputs go under -work.
//
// The subcommands kfake, produce and gen-monitor are its helpers.
package main

import (
	"bufio"
	"bytes"

	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/flowbus/flowbus/flow/datapath"
	"github.com/flowbus/flowbus/flow/monitor"
)

func main() {
	if len(os.Args) > 1 {
		var err error
		switch os.Args[1] {
		case "kfake":
			err = runKfake(os.Args[2:])
		case "produce":
			err = runProduce(os.Args[2:])
		case "gen-monitor":
			err = runGenMonitor(os.Args[2:])
		default:
			err = runBench(os.Args[1:])
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "sidebyside:", err)
			os.Exit(1)
		}
		return
	}
	if err := runBench(nil); err != nil {
		fmt.Fprintln(os.Stderr, "sidebyside:", err)
		os.Exit(1)
	}
}

type bench struct {
	repo, work, self        string
	flowbus, hubble, parser string
	runs                    int
}

// result is one process run.
type result struct {
	wall, cpu time.Duration
	out       string // stdout + stderr
}

func runBench(args []string) error {
	fs := flag.NewFlagSet("sidebyside", flag.ExitOnError)
	rows := fs.String("rows", "1,2,3,4", "the rows to run")
	runs := fs.Int("runs", 3, "runs per side (the median is reported)")
	work := fs.String("work", filepath.Join(os.TempDir(), "flowbus-sidebyside"), "directory for inputs and outputs")
	repo := fs.String("repo", "..", "the flowbus repository")
	jsFlows := fs.Int("jetstream-flows", 300000, "flows per run of row 4")
	prebuilt := fs.String("flowbus", "", "a flowbus binary to measure instead of building one from -repo (say, one built from main, to compare)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	b := &bench{runs: *runs, work: *work}
	var err error
	if b.repo, err = filepath.Abs(*repo); err != nil {
		return err
	}
	if b.self, err = os.Executable(); err != nil {
		return err
	}
	if err := os.MkdirAll(b.work, 0o755); err != nil {
		return err
	}
	fmt.Printf("load average before: %s\n", loadavg())
	if *prebuilt != "" {
		if b.flowbus, err = filepath.Abs(*prebuilt); err != nil {
			return err
		}
	} else {
		b.flowbus = filepath.Join(b.work, "flowbus")
		if err := b.cmd(b.repo, "go", "build", "-o", b.flowbus, ".").Run(); err != nil {
			return fmt.Errorf("building flowbus: %w", err)
		}
	}
	for _, r := range strings.Split(*rows, ",") {
		var err error
		switch strings.TrimSpace(r) {
		case "1":
			err = b.rowJSON()
		case "2":
			err = b.rowMonitor()
		case "3":
			err = b.rowKafka()
		case "4":
			err = b.rowJetStream(*jsFlows)
		default:
			err = fmt.Errorf("unknown row %q", r)
		}
		if err != nil {
			return fmt.Errorf("row %s: %w", r, err)
		}
	}
	fmt.Printf("load average after: %s\n", loadavg())
	return nil
}

func (b *bench) cmd(dir, name string, args ...string) *exec.Cmd {
	c := exec.Command(name, args...)
	c.Dir = dir
	c.Stderr = os.Stderr
	return c
}

// tool builds a tool with .ci/tools/build and returns its path.
func (b *bench) tool(args ...string) (string, error) {
	c := b.cmd(b.repo, filepath.Join(b.repo, ".ci/tools/build"), args...)
	out, err := c.Output()
	if err != nil {
		return "", fmt.Errorf(".ci/tools/build %s: %w", strings.Join(args, " "), err)
	}
	return strings.TrimSpace(string(out)), nil
}

// run runs a command to the end and measures it; stdout goes to stdout
// (a file) when not empty.
func run(env []string, stdout, name string, args ...string) (result, error) {
	c := exec.Command(name, args...)
	c.Env = append(os.Environ(), env...)
	var buf bytes.Buffer
	c.Stderr = &buf
	c.Stdout = &buf
	if stdout != "" {
		f, err := os.Create(stdout)
		if err != nil {
			return result{}, err
		}
		defer f.Close()
		c.Stdout = f
	}
	start := time.Now()
	err := c.Run()
	r := result{wall: time.Since(start), out: buf.String()}
	if c.ProcessState != nil {
		r.cpu = c.ProcessState.UserTime() + c.ProcessState.SystemTime()
	}
	if err != nil {
		return r, fmt.Errorf("%s: %w\n%s", filepath.Base(name), err, r.out)
	}
	return r, nil
}

func median(rs []result) result {
	s := slices.Clone(rs)
	slices.SortFunc(s, func(a, b result) int { return int(a.wall - b.wall) })
	return s[len(s)/2]
}

// micros is d per n, in microseconds.
func micros(d time.Duration, n int) float64 {
	if n == 0 {
		return 0
	}
	return float64(d.Microseconds()) / float64(n)
}

func loadavg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(b))
	return strings.Join(f[:3], " ")
}

// side runs a and b alternately, b.runs times each, and returns their
// medians.
func (b *bench) side(fa, fb func() (result, error)) (result, result, error) {
	var ra, rb []result
	for i := 0; i < b.runs; i++ {
		x, err := fa()
		if err != nil {
			return result{}, result{}, err
		}
		y, err := fb()
		if err != nil {
			return result{}, result{}, err
		}
		ra, rb = append(ra, x), append(rb, y)
	}
	return median(ra), median(rb), nil
}

func perSec(n int, d time.Duration) string {
	return fmt.Sprintf("%.0fk", float64(n)/d.Seconds()/1000)
}

func (b *bench) report(row string, flows int, fb result, refName string, ref result) {
	fmt.Printf("%s: flowbus %.3f s (%s flows/s, %s flows/s per core, cpu %.3f s)", row, fb.wall.Seconds(), perSec(flows, fb.wall), perSec(flows, fb.cpu), fb.cpu.Seconds())
	if refName != "" {
		fmt.Printf(" | %s %.3f s (cpu %.3f s) | ratio %.2f×", refName, ref.wall.Seconds(), ref.cpu.Seconds(), ref.wall.Seconds()/fb.wall.Seconds())
	}
	fmt.Printf(" | load %s\n", loadavg())
}

var summaryRe = regexp.MustCompile(`flowbus: received=(\d+) delivered=(\d+)`)

// summary returns the received and delivered counts of flowbus's exit line.
func summary(out string) (int, int) {
	m := summaryRe.FindStringSubmatch(out)
	if m == nil {
		return -1, -1
	}
	r, _ := strconv.Atoi(m[1])
	d, _ := strconv.Atoi(m[2])
	return r, d
}

func (b *bench) writeConfig(name, text string) (string, error) {
	p := filepath.Join(b.work, name)
	return p, os.WriteFile(p, []byte(text), 0o644)
}

func countLines(path string) (int, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	n := 0
	buf := make([]byte, 1<<20)
	for {
		k, err := f.Read(buf)
		n += bytes.Count(buf[:k], []byte{'\n'})
		if errors.Is(err, io.EOF) {
			return n, nil
		}
		if err != nil {
			return n, err
		}
	}
}

const exportFlows = 200000

func (b *bench) rowJSON() error {
	hubble, err := b.tool("hubble")
	if err != nil {
		return err
	}
	flows := filepath.Join(b.work, "flows.json")
	if _, err := os.Stat(flows); err != nil {
		if _, err := run([]string{"COUNT=" + strconv.Itoa(exportFlows), "FLOWS=" + flows}, "", b.flowbus, "run", "-c", filepath.Join(b.repo, "e2e/testdata/generate-export.yaml")); err != nil {
			return err
		}
	}
	out := filepath.Join(b.work, "out.json")
	cfg, err := b.writeConfig("row1.yaml", fmt.Sprintf(`metrics: {listen: ""}
sources: {in: {type: file, path: %q}}
transforms:
  f: {type: filter, inputs: [in], allow: [{verdict: [DROPPED], protocol: [tcp]}]}
sinks: {out: {type: file, inputs: [f], path: %q, encoding: json}}
`, flows, out))
	if err != nil {
		return err
	}
	hout := filepath.Join(b.work, "hubble-out.json")
	fb, ref, err := b.side(func() (result, error) {
		os.Remove(out)
		return run(nil, "", b.flowbus, "run", "-c", cfg)
	}, func() (result, error) {
		return run(nil, hout, hubble, "observe", "--input-file", flows, "--verdict", "DROPPED", "--protocol", "tcp", "-o", "jsonpb")
	})
	if err != nil {
		return err
	}
	nf, _ := countLines(out)
	nh, _ := countLines(hout)
	same := "differ"
	if a, err := os.ReadFile(out); err == nil {
		if b, err := os.ReadFile(hout); err == nil && bytes.Equal(a, b) {
			same = "are byte-identical"
		}
	}
	fmt.Printf("row 1 (%d-flow export → filter → JSON file): flowbus wrote %d flows, hubble %d; the outputs %s\n", exportFlows, nf, nh, same)
	b.report("row 1", exportFlows, fb, "hubble observe", ref)
	return nil
}

const monitorSamples = 1000000

func (b *bench) rowMonitor() error {
	parser, err := b.tool("hubble", "monitorparse")
	if err != nil {
		return err
	}
	rec := filepath.Join(b.work, "monitor.rec")
	if _, err := os.Stat(rec); err != nil {
		if _, err := run(nil, "", b.self, "gen-monitor", "-n", strconv.Itoa(monitorSamples), "-o", rec); err != nil {
			return err
		}
	}
	cfg, err := b.writeConfig("row2.yaml", fmt.Sprintf(`metrics: {listen: ""}
node_name: bench
sources: {m: {type: cilium-monitor, path: %q}}
sinks: {d: {type: discard, inputs: [m]}}
`, rec))
	if err != nil {
		return err
	}
	fb, ref, err := b.side(func() (result, error) {
		return run(nil, "", b.flowbus, "run", "-c", cfg)
	}, func() (result, error) {
		return run(nil, "", parser, rec)
	})
	if err != nil {
		return err
	}
	r, _ := summary(fb.out)
	fmt.Printf("row 2 (%d monitor samples → discard): flowbus received %d, Hubble's parser: %s\n", monitorSamples, r, strings.TrimSpace(ref.out))
	b.report("row 2", monitorSamples, fb, "Hubble's parser", ref)
	return nil
}

const kafkaFlows = 1000000

// kfake starts a broker process and returns its address and a stop
// function.
func (b *bench) kfake() (string, func(), error) {
	c := exec.Command(b.self, "kfake", "-partitions", "6")
	c.Stderr = os.Stderr
	in, err := c.StdinPipe()
	if err != nil {
		return "", nil, err
	}
	out, err := c.StdoutPipe()
	if err != nil {
		return "", nil, err
	}
	if err := c.Start(); err != nil {
		return "", nil, err
	}
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		c.Process.Kill()
		c.Wait()
		return "", nil, fmt.Errorf("kfake: %w", err)
	}
	return strings.TrimSpace(line), func() { in.Close(); c.Wait() }, nil
}

func kafkaConfig(addr string, sink string) string {
	return fmt.Sprintf(`metrics: {listen: ""}
shutdown_timeout: 30s
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
%s`, kafkaFlows, sink)
}

func (b *bench) rowKafka() error {
	// The records the pipeline produces, for the ceiling.
	records := filepath.Join(b.work, "records.pb")
	cfg, err := b.writeConfig("row3-records.yaml", kafkaConfig("", fmt.Sprintf("  out: {type: file, inputs: [s], path: %q, encoding: protobuf}\n", records)))
	if err != nil {
		return err
	}
	os.Remove(records)
	if _, err := run(nil, "", b.flowbus, "run", "-c", cfg); err != nil {
		return err
	}
	var fbs []result
	var produced int
	ceil := map[string][]time.Duration{}
	ceilCPU := map[string][]time.Duration{} // the producing process's CPU while it produced (the broker not included)
	for i := 0; i < b.runs; i++ {
		addr, stop, err := b.kfake()
		if err != nil {
			return err
		}
		cfg, err := b.writeConfig("row3.yaml", kafkaConfig(addr, fmt.Sprintf("  k: {type: kafka, inputs: [s], brokers: [%q], topic: flows, encoding: protobuf}\n", addr)))
		if err != nil {
			stop()
			return err
		}
		r, err := run(nil, "", b.flowbus, "run", "-c", cfg)
		stop()
		if err != nil {
			return err
		}
		_, produced = summary(r.out)
		fbs = append(fbs, r)
		for _, client := range []string{"kafka-go", "kafka-go-client", "franz-go"} {
			addr, stop, err := b.kfake()
			if err != nil {
				return err
			}
			r, err := run(nil, "", b.self, "produce", "-client", client, "-brokers", addr, "-records", records)
			stop()
			if err != nil {
				return err
			}
			d, err := time.ParseDuration(strings.TrimSpace(lastField(r.out, "elapsed=")))
			if err != nil {
				return fmt.Errorf("produce %s: %q: %w", client, r.out, err)
			}
			c, err := time.ParseDuration(lastField(r.out, "cpu="))
			if err != nil {
				return fmt.Errorf("produce %s: %q: %w", client, r.out, err)
			}
			ceil[client] = append(ceil[client], d)
			ceilCPU[client] = append(ceilCPU[client], c)
		}
	}
	fb := median(fbs)
	fmt.Printf("row 3 (generate %d → filter → redact → sample → protobuf → kfake, 6 partitions): %d records produced\n", kafkaFlows, produced)
	b.report("row 3", kafkaFlows, fb, "", result{})
	for _, client := range []string{"kafka-go", "kafka-go-client", "franz-go"} {
		ds := ceil[client]
		slices.Sort(ds)
		d := ds[len(ds)/2]
		cs := ceilCPU[client]
		slices.Sort(cs)
		fmt.Printf("row 3 ceiling: %s produced the same %d records in %.3f s: %s records/s, %.2f µs CPU per record (flowbus: %s records/s, %.2f µs CPU per record)\n",
			client, produced, d.Seconds(), perSec(produced, d), micros(cs[len(cs)/2], produced), perSec(produced, fb.wall), micros(fb.cpu, produced))
	}
	return nil
}

func lastField(out, key string) string {
	i := strings.LastIndex(out, key)
	if i < 0 {
		return ""
	}
	s := out[i+len(key):]
	if j := strings.IndexAny(s, " \n"); j >= 0 {
		s = s[:j]
	}
	return s
}

func (b *bench) rowJetStream(n int) error {
	store := filepath.Join(b.work, "nats")
	config := func(js string) (string, error) {
		return b.writeConfig("row4.yaml", fmt.Sprintf(`metrics: {listen: ""}
shutdown_timeout: 60s
sources: {g: {type: generate, count: %d, seed: 1}}
sinks:
  n:
    type: nats
    inputs: [g]
    url: embedded
    embedded: {port: -1, store_dir: %q}
    subject: hubble.flows
    encoding: protobuf
%s`, n, store, js))
	}
	fb, ref, err := b.side(func() (result, error) {
		os.RemoveAll(store)
		cfg, err := config("    jetstream: {stream: BENCH, create: true}\n")
		if err != nil {
			return result{}, err
		}
		return run(nil, "", b.flowbus, "run", "-c", cfg)
	}, func() (result, error) {
		os.RemoveAll(store)
		cfg, err := config("")
		if err != nil {
			return result{}, err
		}
		return run(nil, "", b.flowbus, "run", "-c", cfg)
	})
	if err != nil {
		return err
	}
	r, d := summary(fb.out)
	fmt.Printf("row 4 (generate %d → protobuf → JetStream, embedded): received %d, delivered %d; core NATS: %s flows/s\n", n, r, d, perSec(n, ref.wall))
	b.report("row 4", n, fb, "core NATS", ref)
	return nil
}

// runGenMonitor writes a monitor recording of n TCP/UDP trace samples
// over IPv4 and IPv6 with addresses and ports that rarely repeat, the
// datapath's view of a busy node.
func runGenMonitor(args []string) error {
	fs := flag.NewFlagSet("gen-monitor", flag.ExitOnError)
	n := fs.Int("n", monitorSamples, "samples")
	out := fs.String("o", "monitor.rec", "output file")
	if err := fs.Parse(args); err != nil {
		return err
	}
	rec, err := monitor.CreateRecorder(*out)
	if err != nil {
		return err
	}
	var buf []byte
	x := uint64(0x9e3779b97f4a7c15)
	for i := 0; i < *n; i++ {
		x ^= x << 13
		x ^= x >> 7
		x ^= x << 17
		buf = traceSample(buf[:0], x, i%4 == 3)
		if err := rec.Sample(i%2, buf); err != nil {
			return err
		}
	}
	return rec.Close()
}

// traceSample appends a TraceNotify (version 2 layout, 56 bytes) carrying
// an Ethernet/IP/TCP or UDP packet whose addresses and ports come from r.
func traceSample(b []byte, r uint64, v6 bool) []byte {
	ne := binary.NativeEndian
	be := binary.BigEndian
	var pkt [14 + 40 + 20]byte
	n := 14
	proto := byte(6)
	if r&(1<<40) != 0 {
		proto = 17
	}
	if v6 {
		be.PutUint16(pkt[12:], 0x86dd)
		ip := pkt[14:]
		ip[0] = 0x60
		ip[6], ip[7] = proto, 64
		ip[8], ip[9], ip[23] = 0xfd, 0x00, 1
		be.PutUint64(ip[16:], r)
		ip[24], ip[25], ip[39] = 0xfd, 0x00, 2
		be.PutUint64(ip[32:], r*0x2545f4914f6cdd1d)
		n += 40
	} else {
		be.PutUint16(pkt[12:], 0x0800)
		ip := pkt[14:]
		ip[0], ip[8], ip[9] = 0x45, 64, proto
		ip[12] = 10
		ip[13], ip[14], ip[15] = byte(r), byte(r>>8), byte(r>>16)
		ip[16] = 10
		ip[17], ip[18], ip[19] = byte(r>>24), byte(r>>32), byte(r>>48)
		n += 20
	}
	l4 := pkt[n:]
	be.PutUint16(l4[0:], uint16(r>>16)|1024)
	be.PutUint16(l4[2:], []uint16{80, 443, 53, 8080}[r>>62])
	if proto == 6 {
		l4[12], l4[13] = 5<<4, 0x10
		n += 20
	} else {
		be.PutUint16(l4[4:], 8)
		n += 8
	}
	if v6 {
		be.PutUint16(pkt[18:], uint16(n-14-40))
	} else {
		be.PutUint16(pkt[16:], uint16(n-14))
	}
	start := len(b)
	b = append(b, make([]byte, 56)...)
	h := b[start:]
	h[0], h[1] = datapath.MessageTypeTrace, 0 // to-endpoint
	ne.PutUint16(h[2:], uint16(r>>20))
	ne.PutUint32(h[8:], uint32(n))
	ne.PutUint16(h[12:], uint16(n))
	h[14] = 2
	ne.PutUint32(h[16:], 1000+uint32(r>>3)%64)
	ne.PutUint32(h[20:], 2000+uint32(r>>9)%64)
	h[26] = 1
	ne.PutUint32(h[28:], 4)
	b = append(b, pkt[:n]...)
	for (len(b)-start+4)%8 != 0 { // perf padding
		b = append(b, 0)
	}
	return b
}
