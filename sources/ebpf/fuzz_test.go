//go:build linux

package ebpf

import (
	"encoding/binary"
	"testing"

	"github.com/flowbus/flowbus/bpf"
	"github.com/flowbus/flowbus/pipeline"
)

// sample builds a sample as flowbus's programs write it: hdr then pkt.
func sample(hdr []byte, pkt []byte) []byte {
	ne := binary.NativeEndian
	ne.PutUint32(hdr[8:12], uint32(len(pkt)))
	ne.PutUint16(hdr[12:14], uint16(len(pkt)))
	return append(hdr, pkt...)
}

func traceHeader(obs byte, ifindex uint32, flags byte) []byte {
	h := make([]byte, bpf.TraceHeaderLen)
	h[0], h[1], h[14], h[26], h[27] = 4, obs, 1, 5, flags
	binary.NativeEndian.PutUint32(h[28:32], ifindex)
	return h
}

func dropHeader(cilium byte, kernel uint16, ifindex uint32, flags byte) []byte {
	h := make([]byte, bpf.DropHeaderLen)
	h[0], h[1], h[14], h[36] = 1, cilium, 2, flags
	binary.NativeEndian.PutUint16(h[28:30], kernel)
	binary.NativeEndian.PutUint32(h[32:36], ifindex)
	return h
}

var (
	ethIPv4 = []byte{2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 0x08, 0x00}
	ipv4TCP = []byte{0x45, 0, 0, 40, 0, 1, 0x40, 0, 64, 6, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2,
		0x9c, 0x40, 0, 80, 0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x02, 0xff, 0xff, 0, 0, 0, 0}
	ipv4UDP = []byte{0x45, 0, 0, 29, 0, 1, 0, 0, 64, 17, 0, 0, 10, 0, 0, 2, 10, 0, 0, 1,
		0x9c, 0x41, 0, 9, 0, 9, 0, 0, 'x'}
	ipv6ICMP = []byte{0x60, 0, 0, 0, 0, 8, 58, 64,
		0xfd, 0, 0, 0xfb, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1,
		0xfd, 0, 0, 0xfb, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2,
		128, 0, 0, 0, 0, 1, 0, 1}
)

func seedSamples() [][]byte {
	return [][]byte{
		sample(traceHeader(11, 2, 0), append(append([]byte{}, ethIPv4...), ipv4TCP...)),
		sample(traceHeader(10, 2, 0), append(append([]byte{}, ethIPv4...), ipv4UDP...)),
		sample(traceHeader(10, 3, 3), ipv6ICMP), // L3 device, IPv6
		sample(dropHeader(0, 3, 2, 0), append(append([]byte{}, ethIPv4...), ipv4UDP...)),
		sample(dropHeader(132, 16, 2, 2), ipv4UDP),
		sample(dropHeader(0, bpf.DropLineUnknown, 0, 3), ipv6ICMP),
		{4}, {1, 0}, {},
	}
}

// FuzzDecodeSample feeds arbitrary samples through the source's decoding
// and annotation: it must never panic, and a decoded flow must carry the
// node name.
func FuzzDecodeSample(f *testing.F) {
	for _, s := range seedSamples() {
		f.Add(s)
	}
	src := newSource(&pipeline.Build{NodeName: "fuzz"}, settings{})
	src.reasons = map[uint32]string{3: "NO_SOCKET", 16: "IP_RPFILTER"}
	f.Fuzz(func(t *testing.T, data []byte) {
		b := pipeline.NewBatch()
		defer b.Release()
		if src.decode(b, data) {
			if b.Len() != 1 || b.Events[0].Flow.NodeName != "fuzz" || b.Events[0].NodeName != "fuzz" {
				t.Fatalf("decoded event without node name: %v", b.Events)
			}
		} else if b.Len() != 0 {
			t.Fatalf("failed decode left %d events", b.Len())
		}
	})
}

func TestDecodeSeeds(t *testing.T) {
	src := newSource(&pipeline.Build{NodeName: "n"}, settings{})
	src.reasons = map[uint32]string{3: "NO_SOCKET", 16: "IP_RPFILTER"}
	seeds := seedSamples()
	b := pipeline.NewBatch()
	defer b.Release()
	for i, s := range seeds[:6] {
		if !src.decode(b, s) {
			t.Fatalf("seed %d did not decode", i)
		}
	}
	want := []string{"", "", "", "NO_SOCKET", "IP_RPFILTER", "SUBSYSTEM"}
	for i, e := range b.Events {
		if got := KernelDropReason(e.Flow); got != want[i] {
			t.Errorf("seed %d: kernel drop reason %q, want %q", i, got, want[i])
		}
	}
	if f := b.Events[4].Flow; f.DropReasonDesc.String() != "INVALID_SOURCE_IP" || f.File != nil || f.GetIP().GetSource() != "10.0.0.2" {
		t.Errorf("L3 drop flow: %v", f)
	}
	if f := b.Events[2].Flow; f.GetL4().GetICMPv6().GetType() != 128 || f.TrafficDirection.String() != "INGRESS" {
		t.Errorf("L3 IPv6 trace flow: %v", f)
	}
}

// BenchmarkDecode measures the user-space work per sample after the perf
// read: decoding into reused flow storage plus the source's annotations.
func BenchmarkDecode(b *testing.B) {
	src := newSource(&pipeline.Build{NodeName: "bench"}, settings{})
	src.reasons = map[uint32]string{3: "NO_SOCKET"}
	src.names.Put(2, "eth0")
	for _, c := range []struct {
		name   string
		sample []byte
	}{
		{"trace-tcp", seedSamples()[0]},
		{"trace-udp", seedSamples()[1]},
		{"drop-udp", seedSamples()[3]},
	} {
		b.Run(c.name, func(b *testing.B) {
			batch := pipeline.NewBatch()
			defer batch.Release()
			b.ReportAllocs()
			for i := range b.N {
				if i%pipeline.DefaultBatchSize == 0 {
					batch.Truncate(0)
				}
				if !src.decode(batch, c.sample) {
					b.Fatal("not decoded")
				}
			}
		})
	}
}
