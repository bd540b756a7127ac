package faults

import (
	"fmt"
	"path/filepath"
	"regexp"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/flowbus/flowbus/internal/sinktest"
)

// watchHealth polls /healthz at addr until stop is closed and counts the
// polls that did not get 200; it starts counting at the first 200.
func watchHealth(addr string, stop <-chan struct{}) *atomic.Int64 {
	var bad atomic.Int64
	go func() {
		up := false
		for {
			select {
			case <-stop:
				return
			case <-time.After(5 * time.Millisecond):
			}
			code, _ := get(addr, "/healthz")
			switch {
			case code == 200:
				up = true
			case up:
				bad.Add(1)
			}
		}
	}()
	return &bad
}

// SIGHUP with a valid configuration: the running pipeline drains and the
// new one starts. Sink a is in both generations (same file, appended), b
// only in the second; with when_full: block nothing is lost, each file
// holds exactly what the summary calls delivered for its sink, and the
// HTTP endpoint answers on the same address throughout.
func TestSIGHUPValidConfig(t *testing.T) {
	dir := t.TempDir()
	addr := freeAddr(t)
	outA, outB := filepath.Join(dir, "a.json"), filepath.Join(dir, "b.json")
	gen1 := fmt.Sprintf(`
metrics: {listen: "%s"}
sources:
  gen: {type: generate, rate: 20000, seed: 1}
sinks:
  a: {type: file, inputs: [gen], path: %s, buffer: {events: 2048, when_full: block}}
`, addr, outA)
	cfg := writeConfig(t, dir, gen1)
	p := start(t, cfg, nil)
	p.waitLog("pipeline running")
	p.eventually("gen1 output", func() bool { return lineCount(outA) > 2000 })
	stop := make(chan struct{})
	bad := watchHealth(addr, stop)
	p.eventually("the endpoint", func() bool { code, _ := get(addr, "/healthz"); return code == 200 })

	writeConfig(t, dir, fmt.Sprintf(`
metrics: {listen: "%s"}
sources:
  gen: {type: generate, rate: 20000, seed: 2}
transforms:
  drop: {type: filter, inputs: [gen], deny: [{verdict: [DROPPED]}]}
sinks:
  a: {type: file, inputs: [gen], path: %s, buffer: {events: 2048, when_full: block}}
  b: {type: file, inputs: [drop], path: %s, buffer: {events: 2048, when_full: block}}
`, addr, outA, outB))
	p.signal(syscall.SIGHUP)
	p.waitLog("reload done: the new pipeline runs")
	p.eventually("gen2 output", func() bool { return lineCount(outB) > 2000 })
	if v := metric(addr, `flowbus_reloads_total{result="ok"}`); v != 1 {
		t.Errorf(`flowbus_reloads_total{result="ok"} = %v`, v)
	}
	if code, body := get(addr, "/readyz"); code != 200 {
		t.Errorf("/readyz after the reload: %d %s", code, body)
	}
	close(stop)
	if n := bad.Load(); n != 0 {
		t.Errorf("/healthz failed %d times across the reload", n)
	}
	p.signal(syscall.SIGTERM)
	s := parseSummary(t, p.wait())
	t.Logf("summary %+v", s)
	if s.Reloads != 1 || s.ReloadsFailed != 0 || len(s.Sinks) != 2 {
		t.Fatalf("summary %+v", s)
	}
	for name, path := range map[string]string{"a": outA, "b": outB} {
		c, ex := s.Sinks[name], readExport(t, path)
		if c.Lost != 0 || ex.lost != 0 || ex.torn || ex.flows != c.Delivered {
			t.Errorf("sink %s: %v; its file holds %d flows, LostEvents for %d, torn %v", name, c, ex.flows, ex.lost, ex.torn)
		}
	}
	if b := s.Sinks["b"]; b.Filtered == 0 || b.Received >= s.Sinks["a"].Received {
		t.Errorf("sink b (second generation only, behind a filter): %v; sink a: %v", b, s.Sinks["a"])
	}
}

// SIGHUP with an invalid configuration: its errors are logged with their
// positions, the running pipeline continues untouched, and the exit
// summary counts one failed reload and reconciles.
func TestSIGHUPInvalidConfig(t *testing.T) {
	dir := t.TempDir()
	out := filepath.Join(dir, "out.json")
	addr := freeAddr(t)
	cfg := writeConfig(t, dir, fmt.Sprintf(`
metrics: {listen: "%s"}
sources:
  gen: {type: generate, rate: 20000, seed: 3}
sinks:
  out: {type: file, inputs: [gen], path: %s, buffer: {when_full: block}}
`, addr, out))
	p := start(t, cfg, nil)
	p.eventually("output", func() bool { return lineCount(out) > 1000 })
	writeConfig(t, dir, `sources:
  gen: {type: generate, rate: fast}
sinks:
  out: {type: file, inputs: [gen, ghost], path: 42}
`)
	p.signal(syscall.SIGHUP)
	p.waitLog("reload rejected")
	before := lineCount(out)
	p.eventually("the old pipeline still writing", func() bool { return lineCount(out) > before+1000 })
	if v := metric(addr, `flowbus_reloads_total{result="failed"}`); v != 1 {
		t.Errorf(`flowbus_reloads_total{result="failed"} = %v`, v)
	}
	p.signal(syscall.SIGTERM)
	stderr := p.wait()
	for _, want := range []string{
		cfg + `:2:31: source \"gen\" (generate):`,
		cfg + `:4:35: sink \"out\": unknown input \"ghost\"`,
	} {
		if !strings.Contains(stderr, want) {
			t.Errorf("stderr lacks %s:\n%s", want, stderr)
		}
	}
	if !regexp.MustCompile(`level=ERROR msg="invalid configuration" error="` + regexp.QuoteMeta(cfg) + `:\d+:\d+: `).MatchString(stderr) {
		t.Errorf("no positioned error in the log:\n%s", stderr)
	}
	s := parseSummary(t, stderr)
	ex := readExport(t, out)
	if s.Reloads != 0 || s.ReloadsFailed != 1 || s.Total.Lost != 0 || ex.flows != s.Total.Delivered || ex.torn {
		t.Errorf("summary %+v; the file holds %d flows", s, ex.flows)
	}
}

// SIGHUP with an embedded NATS server on a fixed port: the server stops
// with the old generation and starts again on the same port and store for
// the new one; the stream holds every flow of both generations, and the
// metrics endpoint stays up across the reload.
func TestSIGHUPEmbeddedNATS(t *testing.T) {
	dir, store := t.TempDir(), t.TempDir()
	addr, port := freeAddr(t), freePort(t)
	config := func(seed int) string {
		return fmt.Sprintf(`
metrics: {listen: "%s"}
sources:
  gen: {type: generate, rate: 10000, seed: %d}
sinks:
  bus:
    type: nats
    inputs: [gen]
    encoding: protobuf
    url: embedded
    embedded: {port: %d, store_dir: %s}
    subject: hubble.flows.{{ verdict }}
    lost_subject: hubble.lost
    jetstream: {stream: HUBBLE, create: true}
    buffer: {when_full: block}
`, addr, seed, port, store)
	}
	p := start(t, writeConfig(t, dir, config(1)), nil)
	acked := func() float64 { return metric(addr, `flowbus_sink_messages_acked_total{component="bus",type="nats"}`) }
	p.eventually("gen1 delivering", func() bool { return acked() > 2000 })
	stop := make(chan struct{})
	bad := watchHealth(addr, stop)
	p.eventually("the endpoint", func() bool { code, _ := get(addr, "/healthz"); return code == 200 })
	writeConfig(t, dir, config(2))
	p.signal(syscall.SIGHUP)
	p.waitLog("reload done: the new pipeline runs")
	// The counters of the new generation start from zero.
	p.eventually("gen2 delivering", func() bool { return acked() > 2000 })
	close(stop)
	if n := bad.Load(); n != 0 {
		t.Errorf("/healthz failed %d times across the reload", n)
	}
	p.signal(syscall.SIGTERM)
	s := parseSummary(t, p.wait())
	t.Logf("summary %+v", s)
	if s.Reloads != 1 || s.Total.Lost != 0 || s.Total.Delivered != s.Total.Received {
		t.Errorf("summary %+v", s)
	}
	// The store outlives flowbus: read it back with a server of our own.
	srv := natsServer(t, freePort(t), store)
	sinktest.CheckStream(t, streamPayloads(t, srv.ClientURL(), "HUBBLE"), s.Total)
}
