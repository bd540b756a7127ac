package parquet_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"

	"github.com/flowbus/flowbus/pipeline"
)

// An acknowledging source (a Kafka consumer) may commit rows only once the
// file holding them is complete: the sink holds each batch's Ack past Write
// and resolves it when the file is renamed into place, not before.
func TestAckWhenFileComplete(t *testing.T) {
	for _, tc := range []struct {
		name     string
		deadline bool // Close's context has ended: the file is removed
		want     bool // the Ack's result
	}{
		{"complete", false, true},
		{"not completed before the shutdown deadline", true, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			var lost int
			s := newSink(t, fmt.Sprintf("path: %s\n", filepath.Join(dir, "flows")), &lost)
			batches, _, _ := input(100)
			var calls atomic.Int32
			var result atomic.Bool
			b := batches[0]
			b.SetAck(pipeline.NewAck(func(ok bool) { calls.Add(1); result.Store(ok) }))
			failed, err := s.Write(context.Background(), b)
			if err != nil {
				t.Fatal(err)
			}
			b.Ack().Done(failed == 0) // what the runtime does when Write returns
			if failed == 0 && calls.Load() != 0 {
				t.Fatalf("the Ack fired before the file was complete")
			}
			ctx, cancel := context.WithCancel(context.Background())
			if tc.deadline {
				cancel()
			}
			if err := s.Close(ctx); (err != nil) == tc.want {
				t.Errorf("close: %v", err)
			}
			cancel()
			if calls.Load() != 1 || result.Load() != tc.want {
				t.Errorf("Ack called %d times, ok=%v; want once, ok=%v", calls.Load(), result.Load(), tc.want)
			}
			for _, b := range batches {
				b.Release()
			}
		})
	}
}

// Write only encodes; the writer goroutine opens and writes the files. A
// batch it cannot write (here: its directory cannot be created) is lost
// late: counted by SetLateLoss, its Ack resolved false, no file left.
func TestWriterFailureIsLateLoss(t *testing.T) {
	dir := t.TempDir()
	var lost int
	s := newSink(t, fmt.Sprintf("path: %s\n", filepath.Join(dir, "flows")), &lost)
	// A regular file where the directory should be.
	if err := os.RemoveAll(filepath.Join(dir, "flows")); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "flows"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	batches, _, _ := input(100)
	var calls atomic.Int32
	var result atomic.Bool
	b := batches[0]
	b.SetAck(pipeline.NewAck(func(ok bool) { calls.Add(1); result.Store(ok) }))
	failed, err := s.Write(context.Background(), b)
	if failed != 0 || err != nil {
		t.Fatalf("Write: failed %d, %v; want 0, nil (the writer goroutine fails later)", failed, err)
	}
	b.Ack().Done(true)
	if err := s.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if want := b.Counted(); lost != want {
		t.Errorf("late losses %d, want %d", lost, want)
	}
	if calls.Load() != 1 || result.Load() {
		t.Errorf("Ack called %d times, ok=%v; want once, false", calls.Load(), result.Load())
	}
	if got := files(t, dir); len(got) != 1 || got[0] != "flows" {
		t.Errorf("files: %v", got)
	}
	for _, b := range batches {
		b.Release()
	}
}
