package monitor

import (
	"bytes"
	"encoding/gob"
	"errors"
	"io"
	"testing"
)

func TestReaderLimits(t *testing.T) {
	// A length prefix beyond MaxMessageSize is refused without reading.
	r := NewReader(bytes.NewReader([]byte{0xfc, 0x7f, 0xff, 0xff, 0xff}))
	var p Payload
	if err := r.Next(&p); !errors.Is(err, ErrMessageTooBig) {
		t.Errorf("err = %v", err)
	}
	if err := NewReader(bytes.NewReader(nil)).Next(&p); err != io.EOF {
		t.Errorf("empty stream: %v", err)
	}
}

// TestReaderMatchesGob checks the hand decoder against encoding/gob on
// payloads of every shape, for streams written with Payload's type id of
// this process, with another id (a stream from another process), and
// with another type (handed to gob).
func TestReaderMatchesGob(t *testing.T) {
	payloads := []Payload{
		{}, {Type: PayloadSample, Data: []byte{4}}, {Type: PayloadLost, CPU: 3, Lost: 1 << 40},
		{Type: -5, CPU: -1 << 40, Data: bytes.Repeat([]byte{7}, 70000)}, {CPU: 127, Lost: 128, Type: 255},
		{Data: []byte{}, Type: PayloadSample, CPU: 1},
	}
	// Same name and shape, registered later: another type id.
	type Payload struct {
		Data []byte
		CPU  int
		Lost uint64
		Type int
	}
	type renamed struct {
		Data []byte
		CPU  int
		Lost uint64
		Type int
	}
	for _, enc := range []struct {
		name string
		mode int
		fn   func(*gob.Encoder, *ciliumPayload) error
	}{
		{"this process", modeFast, func(e *gob.Encoder, p *ciliumPayload) error { return e.Encode(p) }},
		{"other id", modeFast, func(e *gob.Encoder, p *ciliumPayload) error {
			return e.Encode(&Payload{Data: p.Data, CPU: p.CPU, Lost: p.Lost, Type: p.Type})
		}},
		{"other type", modeGob, func(e *gob.Encoder, p *ciliumPayload) error {
			return e.Encode(&renamed{Data: p.Data, CPU: p.CPU, Lost: p.Lost, Type: p.Type})
		}},
	} {
		var buf bytes.Buffer
		e := gob.NewEncoder(&buf)
		for i := range payloads {
			if err := enc.fn(e, &payloads[i]); err != nil {
				t.Fatal(err)
			}
		}
		r := NewReader(bytes.NewReader(buf.Bytes()))
		var p ciliumPayload
		for i, want := range payloads {
			if err := r.Next(&p); err != nil {
				t.Fatalf("%s: payload %d: %v", enc.name, i, err)
			}
			if p.CPU != want.CPU || p.Lost != want.Lost || p.Type != want.Type || !bytes.Equal(p.Data, want.Data) {
				t.Fatalf("%s: payload %d: got %+v, want %+v", enc.name, i, p, want)
			}
		}
		if err := r.Next(&p); err != io.EOF {
			t.Fatalf("%s: end: %v", enc.name, err)
		}
		if r.mode != enc.mode {
			t.Errorf("%s: reader mode %d, want %d", enc.name, r.mode, enc.mode)
		}
	}
}

// ciliumPayload names the package-level Payload inside the test, where a
// local type of the same name hides it.
type ciliumPayload = Payload
