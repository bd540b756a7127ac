package datapath

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"google.golang.org/protobuf/proto"

	flowpb "github.com/flowbus/flowbus/flow"
)

// FuzzDecode checks that no input panics, that errors are only ErrSkip or
// ErrMalformed, and that decoding into a reused flow (holding the result
// of another sample) gives the same flow as decoding into a fresh one.
func FuzzDecode(f *testing.F) {
	for _, g := range goldens() {
		f.Add(g.sample)
	}
	f.Add(tcpSample())
	prev := tcpSample()
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, v := range []SockTraceVersion{SockTraceV1_19, SockTraceV1_18} {
			d := &Decoder{SockTraceVersion: v, NoTime: true}
			fresh := new(flowpb.Flow)
			err := d.Decode(data, fresh)
			if err != nil {
				if !isKnown(err) {
					t.Fatalf("unexpected error kind: %v", err)
				}
				continue
			}
			reused := new(flowpb.Flow)
			if err := d.Decode(prev, reused); err != nil {
				t.Fatal(err)
			}
			if err := d.Decode(data, reused); err != nil {
				t.Fatalf("second decode failed: %v", err)
			}
			if !proto.Equal(fresh, reused) {
				t.Fatalf("reused flow differs:\nfresh  %v\nreused %v", text(fresh), text(reused))
			}
			if _, err := proto.Marshal(fresh); err != nil {
				t.Fatalf("flow does not marshal: %v", err)
			}
		}
	})
}

func isKnown(err error) bool {
	return err == ErrSkip || errorsIs(err, ErrMalformed)
}

// TestSeedCorpus checks that testdata/fuzz/FuzzDecode holds every golden
// sample, and rewrites it when FLOWBUS_WRITE_CORPUS is set.
func TestSeedCorpus(t *testing.T) {
	samples := [][]byte{tcpSample()}
	for _, g := range goldens() {
		samples = append(samples, g.sample)
	}
	checkCorpus(t, "FuzzDecode", "golden", samples)
}

func checkCorpus(t *testing.T, target, prefix string, seeds [][]byte) {
	dir := filepath.Join("testdata", "fuzz", target)
	write := os.Getenv("FLOWBUS_WRITE_CORPUS") != ""
	if write {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for i, s := range seeds {
		path := filepath.Join(dir, fmt.Sprintf("%s-%02d", prefix, i))
		body := fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", s)
		if write {
			if err := os.WriteFile(path, []byte(body), 0o644); err != nil {
				t.Fatal(err)
			}
			continue
		}
		got, err := os.ReadFile(path)
		if err != nil || string(got) != body {
			t.Errorf("%s is missing or stale; run with FLOWBUS_WRITE_CORPUS=1 to rewrite the seed corpus", path)
		}
	}
}
