package pipeline_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	flowpb "github.com/flowbus/flowbus/flow"
	"github.com/flowbus/flowbus/pipeline"
	"github.com/flowbus/flowbus/pipeline/config"
)

// Test-only components, registered under "test-*" types.

// countSource emits count flows (0 = until cancelled) in batches of batch,
// numbering them in Flow.Uuid order via Flow.Summary-free fields; it
// reports lost events through Output.Lost every lost_every batches.
type countSource struct {
	Count     int    `yaml:"count"`
	Batch     int    `yaml:"batch" default:"100"`
	LostEvery int    `yaml:"lost_every"`
	Done      string `yaml:"done"` // name of a gate to close when finished
	Fail      string `yaml:"fail"` // error to return once done
	Hold      string `yaml:"hold"` // name of a gate to wait for before returning
	// Ack attaches an Ack to every batch, recorded in acks under this
	// name and the batch's number.
	Ack  string `yaml:"ack"`
	Odds bool   `yaml:"odds"` // number the flows 1, 3, 5...: oddFilter removes them all
}

func (s *countSource) Run(ctx context.Context, out pipeline.Output) error {
	defer gate(s.Done).open()
	ts := timestamppb.Now()
	for i, nb := 0, 0; s.Count == 0 || i < s.Count; nb++ {
		b := pipeline.NewBatch()
		for j := 0; j < s.Batch && (s.Count == 0 || i < s.Count); j++ {
			e := b.Next()
			f := e.FlowStorage()
			// The slot owns its flow's Time: copy ts into it.
			if f.Time == nil {
				f.Time = new(timestamppb.Timestamp)
			}
			f.Time.Seconds, f.Time.Nanos = ts.Seconds, ts.Nanos
			f.NodeName = "test"
			f.Verdict = flowpb.Verdict_FORWARDED
			f.Uuid = ""
			f.EventType = &flowpb.CiliumEventType{Type: int32(i)}
			if s.Odds {
				f.EventType.Type = int32(2*i + 1)
			}
			e.Time, e.NodeName = f.Time, "test"
			i++
		}
		if s.Ack != "" {
			b.SetAck(newTestAck(s.Ack, nb))
		}
		if err := out.Emit(ctx, b); err != nil {
			return nil
		}
		if s.LostEvery > 0 && nb%s.LostEvery == 0 {
			out.Lost(flowpb.LostEventSource_PERF_EVENT_RING_BUFFER, 1, 3)
		}
	}
	gate(s.Done).open()
	select {
	case <-gate(s.Hold).ch:
	case <-ctx.Done():
	}
	if s.Fail != "" {
		return errors.New(s.Fail)
	}
	return nil
}

// oddFilter removes flows with an odd number (DropsFiltered).
type oddFilter struct{}

func (oddFilter) Process(b *pipeline.Batch) {
	b.Keep(func(e *pipeline.Event) bool { return e.Flow.EventType.Type%2 == 0 })
}

// recSink records what it is given: flows and reported LostEvents. It
// waits on a gate before its first write, then sleeps delay per batch,
// gives up on every fail_every-th batch, and on the first fail_lost batches
// of reported LostEvents.
type recSink struct {
	Wait      string          `yaml:"wait"`
	Delay     config.Duration `yaml:"delay"`
	FailEvery int             `yaml:"fail_every"`
	FailLost  int             `yaml:"fail_lost"`
	// Later resolves the batch's Ack on another goroutine after Write
	// returned, as a sink that delivers asynchronously would.
	Later bool `yaml:"later"`
	// LoseEarly gives up every batch lent with late delivery through the
	// late-loss function before Write returns, as a sink's resolver may
	// when its broker refuses at once.
	LoseEarly bool `yaml:"lose_early"`
	lateLoss  func(int)

	name    string
	mu      sync.Mutex
	flows   int
	lost    []*flowpb.LostEvent
	writes  int
	closed  atomic.Bool
	waited  bool
	maxSeen int32
	// lostFailed counts the batches of reported LostEvents given up on.
	lostFailed int
	// lateData and syncData count the batches of flows lent with and
	// without LateDelivery, lateReported the batches of reported
	// LostEvents lent with it.
	lateData, syncData, lateReported int
}

func (s *recSink) Write(ctx context.Context, b *pipeline.Batch) (int, error) {
	if !s.waited {
		s.waited = true
		select {
		case <-gate(s.Wait).ch:
		case <-ctx.Done():
			return b.Len(), ctx.Err()
		}
	}
	if s.Delay > 0 {
		time.Sleep(s.Delay.D())
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case b.Counted() == 0 && b.LateDelivery():
		s.lateReported++
	case b.Counted() == 0:
	case b.LateDelivery():
		s.lateData++
	default:
		s.syncData++
	}
	s.writes++
	if s.FailEvery > 0 && s.writes%s.FailEvery == 0 {
		return b.Len(), nil
	}
	if s.LoseEarly && b.LateDelivery() && b.Counted() > 0 {
		s.lateLoss(b.Counted())
		return 0, nil
	}
	if s.Later {
		a := b.Ack().Hold()
		go func() { time.Sleep(time.Millisecond); a.Done(true) }()
	}
	if b.Counted() == 0 && s.lostFailed < s.FailLost {
		s.lostFailed++
		return b.Len(), nil
	}
	for i := range b.Events {
		e := &b.Events[i]
		switch {
		case e.Reported:
			s.lost = append(s.lost, e.Lost)
		case e.Flow != nil:
			s.flows++
			if t := e.Flow.EventType.Type; t > s.maxSeen {
				s.maxSeen = t
			}
		}
	}
	return 0, nil
}

func (s *recSink) SetLateLoss(lose func(int)) { s.lateLoss = lose }

func (s *recSink) Close(ctx context.Context) error {
	s.closed.Store(true)
	return nil
}

func (s *recSink) reportedLost() (n uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, l := range s.lost {
		n += l.NumEventsLost
	}
	return n
}

// gates synchronise test components by name; "" is always open. A gate
// once opened stays open, so resetTestComponents closes them all again
// before each pipeline a test loads (go test -count=N reruns tests in the
// same process).
var gates sync.Map

type gateT struct {
	ch   chan struct{}
	once sync.Once
}

func gate(name string) *gateT {
	if name == "" {
		g := &gateT{ch: make(chan struct{})}
		close(g.ch)
		g.once.Do(func() {})
		return g
	}
	g, _ := gates.LoadOrStore(name, &gateT{ch: make(chan struct{})})
	return g.(*gateT)
}

func (g *gateT) open() { g.once.Do(func() { close(g.ch) }) }

// sinks built by the test factory, by component name.
var builtSinks sync.Map

// resetTestComponents forgets the gates, sinks and lifecycle journals of
// earlier pipelines, so a test sees only what its own pipeline opened,
// built and recorded. Tests in this package do not run in parallel.
func resetTestComponents() {
	gates.Clear()
	builtSinks.Clear()
	lifeSinks.Clear()
	journals.Clear()
	acks.Clear()
}

// acks records the calls of the test sources' Acks: by "name/batch", the
// results in call order.
var acks sync.Map

type ackRecord struct {
	mu  sync.Mutex
	got []bool
}

func newTestAck(name string, batch int) *pipeline.Ack {
	r := &ackRecord{}
	acks.Store(fmt.Sprintf("%s/%d", name, batch), r)
	return pipeline.NewAck(func(ok bool) {
		r.mu.Lock()
		r.got = append(r.got, ok)
		r.mu.Unlock()
	})
}

// ackResults returns the results of every batch's Ack of source name, in
// batch order, and fails when an Ack was called other than exactly once.
func ackResults(t testing.TB, name string, batches int) []bool {
	t.Helper()
	out := make([]bool, batches)
	for i := range batches {
		v, ok := acks.Load(fmt.Sprintf("%s/%d", name, i))
		if !ok {
			t.Fatalf("batch %d of %s has no Ack", i, name)
		}
		r := v.(*ackRecord)
		r.mu.Lock()
		got := r.got
		r.mu.Unlock()
		if len(got) != 1 {
			t.Fatalf("the Ack of batch %d of %s was called %d times, want once", i, name, len(got))
		}
		out[i] = got[0]
	}
	return out
}

func init() {
	pipeline.RegisterSource(pipeline.Spec{Type: "test-count", Summary: "test source"}, func(b *pipeline.Build, s *countSource) (*countSource, error) {
		return s, nil
	})
	pipeline.RegisterTransform(pipeline.Spec{Type: "test-odd", Summary: "test transform"}, pipeline.DropsFiltered, func(b *pipeline.Build, _ *struct{}) (oddFilter, error) {
		return oddFilter{}, nil
	})
	pipeline.RegisterSink(pipeline.Spec{Type: "test-rec", Summary: "test sink"}, func(b *pipeline.Build, s *recSink) (*recSink, error) {
		s.name = b.Name
		builtSinks.Store(b.Name, s)
		return s, nil
	})
}

func sinkNamed(name string) *recSink {
	s, _ := builtSinks.Load(name)
	return s.(*recSink)
}

func (s *recSink) flowsNow() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.flows
}

// lifeSink fails Start with start_error, and is unready with unready. With
// journal it records its start and close in the journal of that name.
type lifeSink struct {
	StartError string `yaml:"start_error"`
	Unready    string `yaml:"unready"`
	Journal    string `yaml:"journal"`
	name       string
	started    atomic.Bool
	closed     atomic.Bool
}

func (s *lifeSink) Start(ctx context.Context) error {
	record(s.Journal, "start "+s.name)
	if s.StartError != "" {
		return errors.New(s.StartError)
	}
	s.started.Store(true)
	return nil
}

func (s *lifeSink) Ready() error {
	if s.Unready != "" {
		return errors.New(s.Unready)
	}
	return nil
}

func (s *lifeSink) Write(ctx context.Context, b *pipeline.Batch) (int, error) { return 0, nil }
func (s *lifeSink) Close(ctx context.Context) error {
	record(s.Journal, "close "+s.name)
	s.closed.Store(true)
	return nil
}

var lifeSinks sync.Map

// lifeOptions configure the test-life source and transform: Start fails
// with start_error; start and stop are recorded in the journal.
type lifeOptions struct {
	StartError string `yaml:"start_error"`
	Journal    string `yaml:"journal"`
}

// lifeSource is a source with Start and Stop; Run returns at once.
type lifeSource struct {
	lifeOptions
	name string
}

func (s *lifeSource) Start(context.Context) error {
	record(s.Journal, "start "+s.name)
	if s.StartError != "" {
		return errors.New(s.StartError)
	}
	return nil
}

func (s *lifeSource) Stop(context.Context) error {
	record(s.Journal, "stop "+s.name)
	return nil
}

func (s *lifeSource) Run(context.Context, pipeline.Output) error { return nil }

// lifeTransform is a transform with Start and Stop that passes everything.
type lifeTransform struct{ lifeSource }

func (lifeTransform) Process(*pipeline.Batch) {}

// journals hold the lifecycle calls of the test-life components, by
// journal name.
var journals sync.Map

func record(journal, entry string) {
	if journal == "" {
		return
	}
	v, _ := journals.LoadOrStore(journal, &journalT{})
	j := v.(*journalT)
	j.mu.Lock()
	j.entries = append(j.entries, entry)
	j.mu.Unlock()
}

func journalOf(name string) []string {
	v, ok := journals.Load(name)
	if !ok {
		return nil
	}
	j := v.(*journalT)
	j.mu.Lock()
	defer j.mu.Unlock()
	return append([]string(nil), j.entries...)
}

type journalT struct {
	mu      sync.Mutex
	entries []string
}

func init() {
	pipeline.RegisterSink(pipeline.Spec{Type: "test-life", Summary: "test sink with a lifecycle"}, func(b *pipeline.Build, s *lifeSink) (*lifeSink, error) {
		s.name = b.Name
		lifeSinks.Store(b.Name, s)
		return s, nil
	})
	pipeline.RegisterSource(pipeline.Spec{Type: "test-life", Summary: "test source with a lifecycle"}, func(b *pipeline.Build, o *lifeOptions) (*lifeSource, error) {
		return &lifeSource{lifeOptions: *o, name: b.Name}, nil
	})
	pipeline.RegisterTransform(pipeline.Spec{Type: "test-life", Summary: "test transform with a lifecycle"}, pipeline.DropsNone, func(b *pipeline.Build, o *lifeOptions) (*lifeTransform, error) {
		return &lifeTransform{lifeSource{lifeOptions: *o, name: b.Name}}, nil
	})
}
