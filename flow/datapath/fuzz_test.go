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

// TestWriteSeedCorpus regenerates testdata/fuzz/FuzzDecode from the golden
// samples when FLOWBUS_WRITE_CORPUS is set.
func TestWriteSeedCorpus(t *testing.T) {
	if os.Getenv("FLOWBUS_WRITE_CORPUS") == "" {
		t.Skip("set FLOWBUS_WRITE_CORPUS=1 to regenerate the seed corpus")
	}
	dir := filepath.Join("testdata", "fuzz", "FuzzDecode")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	samples := [][]byte{tcpSample()}
	for _, g := range goldens() {
		samples = append(samples, g.sample)
	}
	for i, s := range samples {
		body := fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", s)
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("golden-%02d", i)), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}
