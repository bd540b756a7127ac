package nats

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/flowbus/flowbus/internal/sinktest"
	"github.com/flowbus/flowbus/pipeline"
)

// acks records the results of the Acks of written batches.
type acks struct {
	mu     sync.Mutex
	ok, no int
}

func (a *acks) new() *pipeline.Ack {
	return pipeline.NewAck(func(ok bool) {
		a.mu.Lock()
		defer a.mu.Unlock()
		if ok {
			a.ok++
		} else {
			a.no++
		}
	})
}

func (a *acks) counts() (ok, no int) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.ok, a.no
}

// writeLate writes events [first, first+n) as a batch the runtime lends
// with late delivery allowed, numbered from seq, and resolves the
// runtime's own holder of its Ack as the runtime does.
func writeLate(t *testing.T, s *Sink, a *acks, first, n int, seq uint64) {
	t.Helper()
	b := sinktest.Batch(first, n)
	defer b.Release()
	b.SetSeq(1764777600123456, seq)
	b.SetLateDelivery(true)
	ack := a.new()
	b.SetAck(ack)
	failed, err := s.Write(context.Background(), b)
	if failed != 0 || err != nil {
		t.Fatalf("batch at %d: failed=%d err=%v", first, failed, err)
	}
	ack.Done(true)
}

// TestLateDeliveryBatchesInFlight: with late delivery, Write returns before
// the PubAcks, at most max_pending messages are in flight, and every batch's
// Ack resolves ok once its messages are stored; the stream holds each
// message once with its flowbus-seq.
func TestLateDeliveryBatchesInFlight(t *testing.T) {
	s := newSink(t, "protobuf", embeddedConfig(t, -1, "")) // max_pending: 256
	var lost atomic.Int64
	s.SetLateLoss(func(n int) { lost.Add(int64(n)) })
	var a acks
	const batches, per = 20, 100
	peak := 0
	for i := 0; i < batches; i++ {
		writeLate(t, s, &a, i*per, per, uint64(i*per+1))
		s.fmu.Lock()
		peak = max(peak, s.inflight)
		s.fmu.Unlock()
	}
	if peak > 256 {
		t.Errorf("%d messages in flight, above max_pending 256", peak)
	}
	if err := s.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if ok, no := a.counts(); ok != batches || no != 0 {
		t.Fatalf("acks: %d ok, %d not ok; want %d ok", ok, no, batches)
	}
	if lost.Load() != 0 || counter(s.m.Acked) != batches*per {
		t.Fatalf("late losses %d, acked %v; want 0 and %d", lost.Load(), counter(s.m.Acked), batches*per)
	}
	t.Logf("at most %d messages in flight", peak)

	// The sink closed the server: read the store with a new one.
	srv, err := startEmbedded(&EmbeddedOptions{Port: -1, StoreDir: s.embedded.StoreDir})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { srv.Shutdown(); srv.WaitForShutdown() }()
	r := newSink(t, "protobuf", fmt.Sprintf("url: %s\nsubject: hubble.flows.{{ verdict }}\njetstream: {stream: HUBBLE}\n", srv.ClientURL()))
	if n := streamMsgs(t, r); n != batches*per {
		t.Fatalf("stream has %d messages, want %d", n, batches*per)
	}
	st, err := r.jsc.Stream(context.Background(), "HUBBLE")
	if err != nil {
		t.Fatal(err)
	}
	for seq := uint64(1); seq <= batches*per; seq++ {
		m, err := st.GetMsg(context.Background(), seq)
		if err != nil {
			t.Fatal(err)
		}
		if got, want := m.Header.Get("flowbus-seq"), fmt.Sprintf("node-1/test/1764777600123456/%d", seq); got != want {
			t.Fatalf("message %d: flowbus-seq %q, want %q", seq, got, want)
		}
	}
}

// TestLateDeliveryGivesUpLate: messages of a batch in flight that are given
// up after Write returned are reported through the late-loss function (the
// runtime moves them from delivered to lost) and fail the batch's Ack.
func TestLateDeliveryGivesUpLate(t *testing.T) {
	s := newSink(t, "json", embeddedConfig(t, freePort(t), "ack_timeout: 100ms\nbackoff: {min: 5ms, max: 10ms}\nmax_attempts: 2\n"))
	var lost atomic.Int64
	s.SetLateLoss(func(n int) { lost.Add(int64(n)) })
	var a acks
	writeLate(t, s, &a, 0, 50, 1)
	waitFor(t, "the first batch resolved", func() bool { ok, _ := a.counts(); return ok == 1 })
	s.srv.srv.Shutdown()
	s.srv.srv.WaitForShutdown()
	writeLate(t, s, &a, 50, 40, 51)
	if err := s.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if ok, no := a.counts(); ok != 1 || no != 1 || lost.Load() != 40 {
		t.Fatalf("acks %d ok, %d not ok, %d lost late; want 1, 1 and 40", ok, no, lost.Load())
	}
	if f, acked := counter(s.m.Failed), counter(s.m.Acked); f != 40 || acked != 50 {
		t.Errorf("failed metric %v, acked %v; want 40 and 50", f, acked)
	}
}

// TestLateDeliveryAcrossRestart: batches in flight while the server
// restarts are retried with their Msg-Ids and the stream ends with every
// message once, with nothing given up.
func TestLateDeliveryAcrossRestart(t *testing.T) {
	port := freePort(t)
	s := newSink(t, "json", embeddedConfig(t, port, "ack_timeout: 300ms\nbackoff: {min: 20ms, max: 200ms}\nmax_attempts: 100\n"))
	var lost atomic.Int64
	s.SetLateLoss(func(n int) { lost.Add(int64(n)) })
	var a acks
	const batches, per = 30, 100
	for i := 0; i < 10; i++ {
		writeLate(t, s, &a, i*per, per, uint64(i*per+1))
	}
	old := s.srv.srv
	old.Shutdown()
	old.WaitForShutdown()
	done := make(chan struct{})
	go func() {
		defer close(done)
		waitFor(t, "retries during the outage", func() bool { return counter(s.m.Retried) > 0 })
		srv, err := startEmbedded(s.embedded)
		if err != nil {
			t.Error(err)
			return
		}
		s.srv.srv = srv
	}()
	for i := 10; i < batches; i++ {
		writeLate(t, s, &a, i*per, per, uint64(i*per+1))
	}
	<-done
	waitFor(t, "every batch resolved", func() bool { ok, no := a.counts(); return ok+no == batches })
	if ok, no := a.counts(); ok != batches || no != 0 || lost.Load() != 0 {
		t.Fatalf("acks %d ok, %d not ok, %d lost late; want %d ok", ok, no, lost.Load(), batches)
	}
	if n := streamMsgs(t, s); n != batches*per {
		t.Fatalf("stream has %d messages, want %d", n, batches*per)
	}
}
