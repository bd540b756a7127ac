package ciliummonitor

import (
	"bytes"
	"encoding/gob"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"testing"

	flowpb "github.com/flowbus/flowbus/flow"
	"github.com/flowbus/flowbus/flow/datapath"
	"github.com/flowbus/flowbus/flow/monitor"
)

// FuzzReader feeds arbitrary bytes to the stream reader and decodes the
// samples it yields: nothing may panic, and a stream never yields more
// payloads than it has bytes.
func FuzzReader(f *testing.F) {
	for _, s := range seedStreams(f) {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		r := monitor.NewReader(bytes.NewReader(data))
		ref := gob.NewDecoder(bytes.NewReader(data))
		refOK := true
		var d datapath.Decoder
		fl := new(flowpb.Flow)
		var p monitor.Payload
		for n := 0; ; n++ {
			if n > len(data) {
				t.Fatalf("%d payloads from %d bytes", n, len(data))
			}
			err := r.Next(&p)
			if err != nil {
				if err == io.EOF && r.Buffered() != 0 {
					t.Fatalf("EOF with %d bytes buffered", r.Buffered())
				}
				return
			}
			// What the Reader decodes, encoding/gob decodes the same.
			var q monitor.Payload
			if refOK {
				if err := ref.Decode(&q); err != nil {
					t.Fatalf("payload %d: the reader decoded %+v, gob failed: %v", n, p, err)
				}
			}
			if refOK && (p.CPU != q.CPU || p.Lost != q.Lost || p.Type != q.Type || !bytes.Equal(p.Data, q.Data)) {
				t.Fatalf("payload %d: reader %+v, gob %+v", n, p, q)
			}
			if p.Type == monitor.PayloadSample {
				if err := d.Decode(p.Data, fl); err != nil && !errors.Is(err, datapath.ErrSkip) && !errors.Is(err, datapath.ErrMalformed) {
					t.Fatalf("decode error of unknown kind: %v", err)
				}
			}
		}
	})
}

// seedStreams are monitor streams like the agent's: the test script, a
// stream of lost records only, and a stream cut short.
func seedStreams(tb testing.TB) [][]byte {
	var t testing.T
	payloads, _, _ := script(&t)
	enc := func(ps []monitor.Payload) []byte {
		var b bytes.Buffer
		e := gob.NewEncoder(&b)
		for i := range ps {
			if err := e.Encode(&ps[i]); err != nil {
				tb.Fatal(err)
			}
		}
		return b.Bytes()
	}
	full := enc(payloads)
	return [][]byte{
		full,
		enc([]monitor.Payload{{Type: monitor.PayloadLost, CPU: 3, Lost: 1 << 40}}),
		enc(payloads[:1]),
		full[:len(full)/2],
	}
}

// TestSeedCorpus checks that testdata/fuzz/FuzzReader holds the seed
// streams, and rewrites it when FLOWBUS_WRITE_CORPUS is set.
func TestSeedCorpus(t *testing.T) {
	checkCorpus(t, "FuzzReader", "stream", seedStreams(t))
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
