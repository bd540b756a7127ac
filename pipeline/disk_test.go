package pipeline_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	flowpb "github.com/flowbus/flowbus/flow"
	"github.com/flowbus/flowbus/pipeline"
)

// brokerSink stands for a broker sink: while `down` it is unready and
// gives every Write up (after a short wait, like a sink's retries); up, it
// records every event's flowbus-seq and flow number.
type brokerSink struct {
	mu    sync.Mutex
	seqs  map[string]int // "epoch/seq" → times seen
	flows map[int32]int  // flow number → times seen
	lost  []*flowpb.LostEvent
	// late counts the batches lent with LateDelivery (a disk buffer's
	// never are).
	late int
}

var brokerDown atomic.Bool
var brokerSinks sync.Map

func (s *brokerSink) Ready() error {
	if brokerDown.Load() {
		return errors.New("broker down")
	}
	return nil
}

func (s *brokerSink) Write(ctx context.Context, b *pipeline.Batch) (int, error) {
	if brokerDown.Load() {
		time.Sleep(2 * time.Millisecond)
		return b.Len(), nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if b.LateDelivery() {
		s.late++
	}
	for i := range b.Events {
		e := &b.Events[i]
		epoch, n, ok := b.Seq(i)
		if !ok {
			panic("a batch lent to a sink has no sequence numbers")
		}
		s.seqs[fmt.Sprintf("%d/%d", epoch, n)]++
		switch {
		case e.Flow != nil:
			s.flows[e.Flow.EventType.Type]++
		case e.Reported:
			s.lost = append(s.lost, e.Lost)
		}
	}
	return 0, nil
}

func (s *brokerSink) Close(context.Context) error { return nil }

func (s *brokerSink) flowCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.flows)
}

func (s *brokerSink) reportedLost() (n uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, l := range s.lost {
		n += l.NumEventsLost
	}
	return n
}

func init() {
	pipeline.RegisterSink(pipeline.Spec{Type: "test-broker", Summary: "test sink with an outage switch"}, func(b *pipeline.Build, _ *struct{}) (*brokerSink, error) {
		s := &brokerSink{seqs: map[string]int{}, flows: map[int32]int{}}
		brokerSinks.Store(b.Name, s)
		return s, nil
	})
}

func brokerNamed(name string) *brokerSink {
	s, _ := brokerSinks.Load(name)
	return s.(*brokerSink)
}

func diskConfig(dir string, count int, buffer string) string {
	return diskConfigHold(dir, count, buffer, "")
}

// diskConfigHold's source waits for the gate hold before it ends.
func diskConfigHold(dir string, count int, buffer, hold string) string {
	return fmt.Sprintf(`
metrics: {listen: ""}
lost_event_interval: 20ms
shutdown_timeout: 5s
sources:
  gen: {type: test-count, count: %d, batch: 100, done: gen-done, hold: %q}
sinks:
  bus:
    type: test-broker
    inputs: [gen]
    buffer: {type: disk, path: %q, %s}
`, count, hold, dir, buffer)
}

func segBytes(t *testing.T, dir string) (n int64) {
	t.Helper()
	segs, _ := filepath.Glob(filepath.Join(dir, "*.seg"))
	for _, s := range segs {
		fi, err := os.Stat(s)
		if err == nil {
			n += fi.Size()
		}
	}
	return n
}

// An outage longer than any retry budget: the source runs to its end into
// the disk buffer, and everything is delivered once the broker is back.
func TestDiskBufferOutage(t *testing.T) {
	dir := t.TempDir()
	brokerDown.Store(true)
	defer brokerDown.Store(false)
	p := load(t, diskConfigHold(dir, 20000, "max_bytes: 64MiB", "outage-over"))
	done := make(chan *pipeline.Summary)
	go func() { done <- run(t, p, context.Background()) }()
	<-gate("gen-done").ch
	time.Sleep(100 * time.Millisecond)
	if b := segBytes(t, dir); b < 20000*20 {
		t.Fatalf("%d bytes on disk for 20000 flows", b)
	}
	brokerDown.Store(false)
	for brokerNamed("bus").flowCount() < 20000 {
		time.Sleep(10 * time.Millisecond)
	}
	gate("outage-over").open()
	s := <-done
	k := brokerNamed("bus")
	if s.Total.Received != 20000 || s.Total.Delivered != 20000 || s.Total.Lost != 0 || s.Total.Buffered != 0 {
		t.Fatalf("summary %v", s.Total)
	}
	if len(k.flows) != 20000 || len(k.seqs) != 20000 {
		t.Fatalf("%d distinct flows, %d distinct seqs", len(k.flows), len(k.seqs))
	}
	checkSeqs(t, k, map[int]int{20000: 1})
	// The disk buffer keeps a batch until Write returns: no late delivery.
	if k.late != 0 {
		t.Errorf("%d batches from the disk buffer were lent with late delivery", k.late)
	}
}

// checkSeqs checks that the sequence numbers of each epoch run from 1
// without gaps; want maps the epochs' lengths, in order, to their count.
func checkSeqs(t *testing.T, k *brokerSink, want map[int]int) (dups int) {
	t.Helper()
	k.mu.Lock()
	defer k.mu.Unlock()
	byEpoch := map[string][]int{}
	for key, times := range k.seqs {
		ep, n, _ := strings.Cut(key, "/")
		var v int
		fmt.Sscan(n, &v)
		byEpoch[ep] = append(byEpoch[ep], v)
		dups += times - 1
	}
	got := map[int]int{}
	for ep, ns := range byEpoch {
		sort.Ints(ns)
		if ns[0] != 1 || ns[len(ns)-1] != len(ns) {
			t.Errorf("epoch %s: numbers %d..%d for %d events: gaps", ep, ns[0], ns[len(ns)-1], len(ns))
		}
		got[len(ns)]++
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("epochs by length: %v, want %v", got, want)
	}
	return dups
}

// A stop while the broker is away leaves the events on disk (buffered);
// the next run delivers them (recovered) with their first run's numbers,
// and its own events under a new epoch.
func TestDiskBufferRestart(t *testing.T) {
	dir := t.TempDir()
	brokerDown.Store(true)
	defer brokerDown.Store(false)
	s1 := run(t, load(t, diskConfig(dir, 5000, "sync: always")), context.Background())
	if s1.Total.Received != 5000 || s1.Total.Delivered != 0 || s1.Total.Buffered != 5000 || s1.Total.Lost != 0 {
		t.Fatalf("first run: %v", s1.Total)
	}
	brokerDown.Store(false)
	s2 := run(t, load(t, diskConfig(dir, 300, "sync: always")), context.Background())
	if s2.Total.Recovered != 5000 || s2.Total.Delivered != 5300 || s2.Total.Buffered != 0 || s2.Total.Lost != 0 {
		t.Fatalf("second run: %v", s2.Total)
	}
	if dups := checkSeqs(t, brokerNamed("bus"), map[int]int{5000: 1, 300: 1}); dups != 0 {
		t.Errorf("%d duplicates", dups)
	}
	if b := segBytes(t, dir); b > 64 {
		t.Errorf("%d bytes of segments left after delivering everything", b)
	}
}

// A torn tail (a crash in the middle of a write) is reported lost in the
// next run's stream, with the number of events the record held, and the
// rest is delivered.
func TestDiskBufferTornTail(t *testing.T) {
	dir := t.TempDir()
	brokerDown.Store(true)
	defer brokerDown.Store(false)
	run(t, load(t, diskConfig(dir, 1000, "sync: never")), context.Background())
	segs, _ := filepath.Glob(filepath.Join(dir, "*.seg"))
	var last string
	for _, s := range segs {
		if fi, _ := os.Stat(s); fi.Size() > 8 {
			last = s
		}
	}
	fi, _ := os.Stat(last)
	if err := os.Truncate(last, fi.Size()-500); err != nil {
		t.Fatal(err)
	}
	brokerDown.Store(false)
	s := run(t, load(t, diskConfig(dir, 10, "sync: never")), context.Background())
	k := brokerNamed("bus")
	if s.Total.Recovered != 1000 || s.Total.Lost != 100 || s.Total.Delivered != 910 {
		t.Fatalf("summary %v", s.Total)
	}
	if rl := k.reportedLost(); rl != 100 {
		t.Errorf("LostEvents report %d events", rl)
	}
}

// A record damaged in the middle: the sequence numbers around it say how
// many events it held.
func TestDiskBufferCorruptRecord(t *testing.T) {
	dir := t.TempDir()
	brokerDown.Store(true)
	defer brokerDown.Store(false)
	run(t, load(t, diskConfig(dir, 1000, "sync: never")), context.Background())
	segs, _ := filepath.Glob(filepath.Join(dir, "*.seg"))
	var last string
	for _, s := range segs {
		if fi, _ := os.Stat(s); fi.Size() > 8 {
			last = s
		}
	}
	f, err := os.OpenFile(last, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	fi, _ := f.Stat()
	// Damage the header of a record in the middle: its own count is
	// unreadable.
	f.WriteAt([]byte("garbage!garbage!garbage!"), fi.Size()/2)
	f.Close()
	brokerDown.Store(false)
	s := run(t, load(t, diskConfig(dir, 10, "sync: never")), context.Background())
	k := brokerNamed("bus")
	if s.Total.Recovered != 1000 || s.Total.Lost == 0 || s.Total.Lost%100 != 0 || s.Total.Delivered+s.Total.Lost != 1010 {
		t.Fatalf("summary %v", s.Total)
	}
	if rl := k.reportedLost(); rl != s.Total.Lost {
		t.Errorf("LostEvents report %d events, summary %d", rl, s.Total.Lost)
	}
}

// A full disk buffer applies when_full.
func TestDiskBufferFull(t *testing.T) {
	for _, wf := range []string{"drop_newest", "drop_oldest"} {
		t.Run(wf, func(t *testing.T) {
			dir := t.TempDir()
			brokerDown.Store(true)
			defer brokerDown.Store(false)
			p := load(t, diskConfigHold(dir, 20000, "max_bytes: 300KiB, when_full: "+wf, "full-over"))
			done := make(chan *pipeline.Summary)
			go func() { done <- run(t, p, context.Background()) }()
			<-gate("gen-done").ch
			if b := segBytes(t, dir); b > 300<<10 {
				t.Errorf("%d bytes on disk, max_bytes 300KiB", b)
			}
			brokerDown.Store(false)
			// Let the deliverer find the broker back (its retry wait
			// grew during the outage) before the pipeline drains.
			for deadline := time.Now().Add(30 * time.Second); brokerNamed("bus").flowCount() == 0 && time.Now().Before(deadline); {
				time.Sleep(10 * time.Millisecond)
			}
			gate("full-over").open()
			s := <-done
			k := brokerNamed("bus")
			if s.Total.Lost == 0 || s.Total.Delivered == 0 || s.Total.Delivered+s.Total.Lost != 20000 {
				t.Fatalf("summary %v", s.Total)
			}
			if rl := k.reportedLost(); rl != s.Total.Lost {
				t.Errorf("LostEvents report %d events, summary %d", rl, s.Total.Lost)
			}
			k.mu.Lock()
			var maxFlow int32
			for f := range k.flows {
				maxFlow = max(maxFlow, f)
			}
			k.mu.Unlock()
			// drop_newest keeps the oldest flows, drop_oldest the newest.
			if wf == "drop_oldest" && maxFlow != 19999 || wf == "drop_newest" && k.flows[0] != 1 {
				t.Errorf("%s: newest flow delivered %d, flow 0 %d times", wf, maxFlow, k.flows[0])
			}
		})
	}
	t.Run("block", func(t *testing.T) {
		dir := t.TempDir()
		brokerDown.Store(true)
		defer brokerDown.Store(false)
		p := load(t, diskConfigHold(dir, 20000, "max_bytes: 300KiB, when_full: block", "full-over"))
		done := make(chan *pipeline.Summary)
		go func() { done <- run(t, p, context.Background()) }()
		time.Sleep(300 * time.Millisecond)
		select {
		case <-gate("gen-done").ch:
			t.Fatal("the source was not held back")
		default:
		}
		brokerDown.Store(false)
		<-gate("gen-done").ch
		gate("full-over").open()
		s := <-done
		if s.Total.Lost != 0 || s.Total.Delivered != 20000 {
			t.Fatalf("summary %v", s.Total)
		}
	})
}

// A file system that fills up before max_bytes: the appends it refuses
// (ENOSPC) apply when_full as a full disk buffer does, and every event is
// delivered or reported lost once the broker is back.
func TestDiskBufferFullFileSystem(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("mounting a tmpfs needs root")
	}
	dir := t.TempDir()
	if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, "size=256k"); err != nil {
		t.Fatalf("mount tmpfs: %v", err)
	}
	t.Cleanup(func() { syscall.Unmount(dir, 0) })
	brokerDown.Store(true)
	defer brokerDown.Store(false)
	p := load(t, diskConfigHold(dir, 20000, "max_bytes: 64MiB, when_full: drop_newest", "fs-full-over"))
	done := make(chan *pipeline.Summary)
	go func() { done <- run(t, p, context.Background()) }()
	<-gate("gen-done").ch
	brokerDown.Store(false)
	for deadline := time.Now().Add(30 * time.Second); brokerNamed("bus").flowCount() == 0 && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
	}
	gate("fs-full-over").open()
	s := <-done
	t.Logf("summary %v", s.Total)
	k := brokerNamed("bus")
	if s.Total.Lost == 0 || s.Total.Delivered == 0 || s.Total.Delivered+s.Total.Lost != 20000 {
		t.Fatalf("summary %v", s.Total)
	}
	if rl := k.reportedLost(); rl != s.Total.Lost {
		t.Errorf("LostEvents report %d events, summary %d", rl, s.Total.Lost)
	}
	// drop_newest keeps the oldest flows.
	k.mu.Lock()
	first := k.flows[0]
	k.mu.Unlock()
	if first != 1 {
		t.Errorf("flow 0 delivered %d times", first)
	}
}

// A restart while the disk buffer's file system is full: the pipeline
// starts, and what the first run left on disk is delivered.
func TestDiskBufferRestartOnFullFileSystem(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("mounting a tmpfs needs root")
	}
	dir := t.TempDir()
	if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, "size=1m"); err != nil {
		t.Fatalf("mount tmpfs: %v", err)
	}
	t.Cleanup(func() { syscall.Unmount(dir, 0) })
	brokerDown.Store(true)
	defer brokerDown.Store(false)
	s1 := run(t, load(t, diskConfig(dir, 1000, "when_full: drop_newest")), context.Background())
	if s1.Total.Buffered != 1000 {
		t.Fatalf("first run: %v", s1.Total)
	}
	f, err := os.Create(filepath.Join(dir, "filler"))
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := f.Write(make([]byte, 4096)); err != nil {
			break
		}
	}
	f.Close()
	brokerDown.Store(false)
	s2 := run(t, load(t, diskConfig(dir, 10, "when_full: drop_newest")), context.Background())
	t.Logf("second run: %v", s2.Total)
	if s2.Total.Recovered != 1000 || s2.Total.Delivered < 1000 || s2.Total.Delivered+s2.Total.Lost != 1010 {
		t.Fatalf("second run: %v", s2.Total)
	}
}

// An acknowledging source in front of a disk buffer: each batch's Ack
// resolves once, ok, as soon as the batch is on disk, even while the broker
// is away (the disk buffer keeps it until the broker acknowledged it), so
// the source can commit and is never held back by the outage; a batch
// dropped because the disk buffer is full is nacked.
func TestDiskBufferAcks(t *testing.T) {
	for _, tc := range []struct {
		name, buffer string
		wantNack     bool
	}{
		{"room", "max_bytes: 64MiB", false},
		{"full, drop_newest", "max_bytes: 1KiB, when_full: drop_newest", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			brokerDown.Store(true)
			defer brokerDown.Store(false)
			p := load(t, fmt.Sprintf(`
metrics: {listen: ""}
shutdown_timeout: 2s
sources:
  gen: {type: test-count, count: 3000, batch: 100, ack: gen}
sinks:
  bus:
    type: test-broker
    inputs: [gen]
    buffer: {type: disk, path: %q, %s}
`, dir, tc.buffer))
			s := run(t, p, context.Background())
			var okN, nackN uint64
			for _, ok := range ackResults(t, "gen", 30) {
				if ok {
					okN += 100
				} else {
					nackN += 100
				}
			}
			t.Logf("summary %v; acked %d, nacked %d", s.Total, okN, nackN)
			if okN+nackN != 3000 || (nackN > 0) != tc.wantNack {
				t.Errorf("acked %d, nacked %d of 3000", okN, nackN)
			}
			if okN != s.Total.Buffered+s.Total.Delivered {
				t.Errorf("acked %d events; %d are on disk and %d delivered", okN, s.Total.Buffered, s.Total.Delivered)
			}
		})
	}
}
