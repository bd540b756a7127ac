//go:build linux

package bpf

import "testing"

func TestCiliumDropReason(t *testing.T) {
	for _, c := range []struct {
		kernel string
		want   uint8
	}{
		{"NETFILTER_DROP", 133},
		{"SKB_DROP_REASON_NETFILTER_DROP", 133},
		{"IP_RPFILTER", 132},
		{"IP_INHDR", 134},
		{"IP_NOPROTO", 142},
		{"IP_OUTNOROUTES", 169},
		{"IPV6_BAD_EXTHDR", 156},
		{"NO_SOCKET", DropReasonUnknown},
		{"TCP_CSUM", DropReasonUnknown},
		{"", DropReasonUnknown},
	} {
		if got := CiliumDropReason(c.kernel); got != c.want {
			t.Errorf("CiliumDropReason(%q) = %d, want %d", c.kernel, got, c.want)
		}
	}
}

func TestDropReasonConfig(t *testing.T) {
	kernel := map[uint32]string{
		0: "SKB_NOT_DROPPED_YET", 1: "SKB_CONSUMED", 2: "NOT_SPECIFIED",
		3: "NO_SOCKET", 12: "NETFILTER_DROP", 128: "MAX", 0xffff0000: "SUBSYS_MASK",
	}
	cfg := DropReasonConfig(kernel)
	for _, v := range []uint32{0, 1, 2, 128} {
		if cfg[v].Report {
			t.Errorf("reason %d (%s) reported", v, kernel[v])
		}
	}
	if r := cfg[3]; !r.Report || r.Cilium != DropReasonUnknown {
		t.Errorf("NO_SOCKET: %+v", r)
	}
	if r := cfg[12]; !r.Report || r.Cilium != 133 {
		t.Errorf("NETFILTER_DROP: %+v", r)
	}
	if r := cfg[dropReasonEntries-1]; !r.Report || r.Cilium != DropReasonUnknown {
		t.Errorf("subsystem reasons not reported: %+v", r)
	}
	if len(cfg) != 3 {
		t.Errorf("%d entries, want 3: %v", len(cfg), cfg)
	}
}

func TestKernelDropReasons(t *testing.T) {
	names, err := KernelDropReasons()
	if err != nil {
		t.Fatal(err) // every kernel flowbus supports has BTF
	}
	found := map[string]bool{}
	for _, n := range names {
		found[n] = true
	}
	for _, n := range []string{"NOT_SPECIFIED", "NO_SOCKET", "NETFILTER_DROP", "SKB_CONSUMED"} {
		if !found[n] {
			t.Errorf("kernel reason %s not found", n)
		}
	}
}
