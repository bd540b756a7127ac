//go:build linux

package ebpf

import (
	"context"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	"gopkg.in/yaml.v3"

	"github.com/flowbus/flowbus/bpf"
	"github.com/flowbus/flowbus/pipeline"
)

func parseYAML(t *testing.T, src string) (settings, error) {
	t.Helper()
	var n yaml.Node
	if err := yaml.Unmarshal([]byte(src), &n); err != nil {
		t.Fatal(err)
	}
	node := &n
	if len(n.Content) > 0 {
		node = n.Content[0]
	}
	return pipeline.Make(nil, node, check)
}

func TestOptions(t *testing.T) {
	for _, c := range []struct {
		name, src string
		check     func(settings) bool
	}{
		{"defaults", "{}", func(s settings) bool {
			return s.interfaces.All && s.ingress && s.egress && s.load.Aggregate &&
				s.load.AggregationInterval == DefaultAggregationInterval &&
				s.load.CaptureLength == DefaultCaptureLength && s.perfPages == DefaultPerfBufferPages &&
				s.load.Drops && s.record == ""
		}},
		{"all scalar", "interfaces: all", func(s settings) bool { return s.interfaces.All }},
		{"all list", "interfaces: [all]", func(s settings) bool { return s.interfaces.All }},
		{"one name", "interfaces: eth0", func(s settings) bool {
			return !s.interfaces.All && len(s.interfaces.Names) == 1 && s.interfaces.Names[0] == "eth0"
		}},
		{"names", "interfaces: [eth0, eth1]", func(s settings) bool { return len(s.interfaces.Names) == 2 }},
		{"ingress", "direction: ingress", func(s settings) bool { return s.ingress && !s.egress }},
		{"egress", "direction: egress", func(s settings) bool { return !s.ingress && s.egress }},
		{"no aggregation", "aggregation: none", func(s settings) bool { return !s.load.Aggregate }},
		{"interval", "aggregation_interval: 250ms", func(s settings) bool { return s.load.AggregationInterval == 250*time.Millisecond }},
		{"capture min", "capture_length: 114", func(s settings) bool { return s.load.CaptureLength == 114 }},
		{"capture max", "capture_length: 1536", func(s settings) bool { return s.load.CaptureLength == 1536 }},
		{"pages", "perf_buffer_pages: 8", func(s settings) bool { return s.perfPages == 8 }},
		{"record", "record: /tmp/x.gob", func(s settings) bool { return s.record == "/tmp/x.gob" }},
		{"no drops", "drops: false", func(s settings) bool { return !s.load.Drops }},
		{"default buffer and attach", "direction: both", func(s settings) bool { return s.buffer == "auto" && s.attach == bpf.AttachAuto }},
		{"perf", "event_buffer: perf", func(s settings) bool { return s.buffer == "perf" }},
		{"ring", "event_buffer: ring", func(s settings) bool { return s.buffer == "ring" }},
		{"tcx", "attach: tcx", func(s settings) bool { return s.attach == bpf.AttachTCX }},
		{"clsact", "attach: clsact", func(s settings) bool { return s.attach == bpf.AttachClsact }},
		{"default hook", "direction: both", func(s settings) bool { return s.load.Hook == bpf.HookTC }},
		{"tracepoint", "hook: tracepoint", func(s settings) bool { return s.load.Hook == bpf.HookTracepoint }},
	} {
		t.Run(c.name, func(t *testing.T) {
			s, err := parseYAML(t, c.src)
			if err != nil {
				t.Fatal(err)
			}
			if !c.check(s) {
				t.Errorf("unexpected settings %+v", s)
			}
		})
	}
}

func TestOptionErrors(t *testing.T) {
	for _, c := range []struct {
		src, want string
	}{
		{"direction: sideways", `2:12: direction: "sideways" is not ingress, egress or both`},
		{"aggregation: flow", `2:14: aggregation: "flow" is not none or connection`},
		{"capture_length: 5000", "2:17: capture_length: 5000 is above the maximum of 1536"},
		{"capture_length: -1", "2:17: capture_length: -1 is below the minimum of 114"},
		{"capture_length: 0", "2:17: capture_length: 0 is below the minimum of 114"},
		// 64 bytes cut the TCP options of a SYN (14+20+40 for IPv4).
		{"capture_length: 64", "2:17: capture_length: 64 is below the minimum of 114, the bytes of an Ethernet, an IPv6 and a TCP header"},
		{"perf_buffer_pages: 0", "2:20: perf_buffer_pages: 0 is outside 1..65536"},
		{"aggregation_interval: 10us", "2:23: aggregation_interval: 10µs is below the minimum of 1ms"},
		{"aggregation_interval: soon", "2:23: invalid duration"},
		{"interfaces: [eth0, all]", "2:20: interfaces: `all` cannot be combined with names"},
		{"interfaces: []", "2:13: interfaces: empty list"},
		{"interfaces: {a: b}", "2:13: interfaces: expected `all` or a list"},
		{"drops: maybe", "2:8:"},
		{"unknown_key: 1", "2:1:"},
		{"event_buffer: shm", `2:15: event_buffer: "shm" is not auto, ring or perf`},
		{"attach: xdp", `2:9: attach: "xdp" is not auto, tcx or clsact`},
		{"hook: xdp", `2:7: hook: "xdp" is not tc or tracepoint`},
		{"hook: tracepoint\nattach: tcx", `3:9: attach: "tcx" applies to hook: tc only`},
	} {
		t.Run(c.src, func(t *testing.T) {
			_, err := parseYAML(t, "# ebpf source\n"+c.src)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Errorf("error %v, want it to contain %q", err, c.want)
			}
		})
	}
}

func TestMissingCaps(t *testing.T) {
	const (
		bpfCap   = uint64(1) << capBPF
		perfmon  = uint64(1) << capPerfmon
		netAdmin = uint64(1) << capNetAdmin
		sysAdmin = uint64(1) << capSysAdmin
	)
	for _, c := range []struct {
		eff  uint64
		want string
	}{
		{bpfCap | perfmon | netAdmin, ""},
		{sysAdmin | netAdmin, ""},
		{0, "CAP_BPF,CAP_NET_ADMIN,CAP_PERFMON"},
		{bpfCap | netAdmin, "CAP_PERFMON"},
		{sysAdmin, "CAP_NET_ADMIN"},
		{perfmon | netAdmin, "CAP_BPF"},
	} {
		if got := strings.Join(missingCaps(c.eff), ","); got != c.want {
			t.Errorf("missingCaps(%#x) = %q, want %q", c.eff, got, c.want)
		}
	}
}

// TestStartWithoutPrivileges drops the capabilities of one thread and
// starts the source on it: Start fails with one sentence naming them.
func TestStartWithoutPrivileges(t *testing.T) {
	eff, err := effectiveCaps()
	if err != nil {
		t.Fatal(err)
	}
	src, err := pipeline.Make(&pipeline.Build{Name: "e", Type: "ebpf", NodeName: "n"}, nil, New)
	if err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() {
		// Capabilities are per thread; this thread never runs other code.
		runtime.LockOSThread()
		hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
		var data [2]unix.CapUserData
		if err := unix.Capget(&hdr, &data[0]); err != nil {
			errc <- err
			return
		}
		drop := uint64(1)<<capBPF | 1<<capPerfmon | 1<<capNetAdmin | 1<<capSysAdmin
		e := (uint64(data[0].Effective) | uint64(data[1].Effective)<<32) &^ drop
		data[0].Effective, data[1].Effective = uint32(e), uint32(e>>32)
		if err := unix.Capset(&hdr, &data[0]); err != nil {
			errc <- err
			return
		}
		errc <- src.Start(context.Background())
	}()
	err = <-errc
	want := "ebpf source: missing CAP_BPF, CAP_NET_ADMIN, CAP_PERFMON; it needs CAP_BPF, CAP_NET_ADMIN and CAP_PERFMON (or root)"
	if err == nil || !strings.HasPrefix(err.Error(), want) {
		t.Fatalf("Start without capabilities: %v (effective set was %#x)", err, eff)
	}
	if strings.Contains(err.Error(), "\n") {
		t.Errorf("error spans lines: %q", err)
	}
	if src.Ready() == nil {
		t.Error("Ready before a successful Start")
	}
}

func TestWakeupEvents(t *testing.T) {
	for _, c := range []struct {
		ring int
		cap  uint32
		want int
	}{
		{4096, 128, 5},
		{4096, 1536, 1},
		{64 * 4096, 128, 64},
		{8 * 4096, 128, 41},
	} {
		if got := wakeupEvents(c.ring, c.cap); got != c.want {
			t.Errorf("wakeupEvents(%d, %d) = %d, want %d", c.ring, c.cap, got, c.want)
		}
	}
}

func TestRegistered(t *testing.T) {
	for _, typ := range pipeline.Types("sources") {
		if typ == "ebpf" {
			return
		}
	}
	t.Fatal(`source type "ebpf" not registered`)
}

func TestRingSize(t *testing.T) {
	page, cpus := uint64(os.Getpagesize()), uint64(runtime.NumCPU())
	for _, c := range []struct {
		pages int
		min   uint64
	}{
		{DefaultPerfBufferPages, minRingSize},
		{1, page * cpus},
		{1000, 1000 * page * cpus},
	} {
		got := uint64(ringSize(c.pages))
		if got&(got-1) != 0 || got < c.min || got < uint64(c.pages)*page*cpus || got >= 2*max(c.min, uint64(c.pages)*page*cpus) {
			t.Errorf("ringSize(%d) = %d, want the power of two at or above max(%d, %d pages per CPU)", c.pages, got, c.min, c.pages)
		}
		if w := ringWakeup(uint32(got)); w == 0 || w > got/4 || w > 64<<10 {
			t.Errorf("ringWakeup(%d) = %d", got, w)
		}
	}
}
