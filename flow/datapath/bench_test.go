package datapath

import (
	"testing"

	flowpb "github.com/flowbus/flowbus/flow"
)

func BenchmarkDecodeTraceTCPv4(b *testing.B) {
	benchDecode(b, tcpSample())
}

func benchDecode(b *testing.B, sample []byte) {
	var d Decoder
	f := new(flowpb.Flow)
	if err := d.Decode(sample, f); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.SetBytes(int64(len(sample)))
	for b.Loop() {
		if err := d.Decode(sample, f); err != nil {
			b.Fatal(err)
		}
	}
}
