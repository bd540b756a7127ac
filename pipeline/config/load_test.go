package config

import (
	"fmt"
	"net"
	"strings"
	"testing"
	"time"
)

func env(vars map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) { v, ok := vars[k]; return v, ok }
}

func TestParseDefaultsAndSubstitution(t *testing.T) {
	src := `
node_name: "${NODE:-}"
lost_event_interval: ${LEI:-250ms}
metrics: {listen: "${LISTEN:-}"}
buffer: {events: ${EVENTS:-100}, when_full: ${WHEN:-drop_newest}}
sources:
  a: {type: t, list: [${X}, "$${X}", plain$$], n: ${N:-5}}
sinks:
  b: {type: t, inputs: [a]}
`
	c, err := Parse([]byte(src), env(map[string]string{"X": "ex", "NODE": "n1"}))
	if err != nil {
		t.Fatal(err)
	}
	if c.NodeName != "n1" || c.LostEventInterval.D() != 250*time.Millisecond || c.Metrics.Listen != "" ||
		c.Buffer != (Buffer{Events: 100, MaxBytes: DefaultBufferBytes, WhenFull: DropNewest, Type: Memory, Sync: SyncInterval, SyncInterval: Duration(DefaultDiskSyncInterval)}) || c.ShutdownTimeout.D() != DefaultShutdownTimeout {
		t.Errorf("got %+v", c)
	}
	a := c.Sources[0].Node
	list := Find(a, "list")
	var got []string
	for _, it := range list.Content {
		got = append(got, it.Value)
	}
	if strings.Join(got, ",") != "ex,${X},plain$" {
		t.Errorf("list = %q", got)
	}
	if n := Find(a, "n"); n.ShortTag() != "!!int" || n.Value != "5" || n.Line != 7 || n.Column != 51 {
		t.Errorf("n = %+v", n)
	}
	if c.Sources[0].Name != "a" || c.Sinks[0].Name != "b" {
		t.Errorf("components %+v %+v", c.Sources, c.Sinks)
	}

	c, err = Parse([]byte("sources: {a: {type: t}}\nsinks: {b: {type: t}}\n"), env(nil))
	if err != nil || c.Metrics.Listen != DefaultMetricsListen || c.Buffer.Events != DefaultBufferEvents || c.Buffer.WhenFull != Block || c.NodeName == "" {
		t.Errorf("defaults: %v %+v", err, c)
	}
}

func TestParseErrors(t *testing.T) {
	for _, tc := range []struct{ src, want string }{
		{"", "1:1: the config is empty"},
		{"a: 1\n---\nb: 2\n", "2:1: the config must be a single YAML document"},
		{"node_name: ${1BAD}\n", `1:12: invalid environment reference "${1BAD}"`},
		{"node_name: x\n  bad: [\n", "invalid YAML"},
		{"sources: [a]\n", "1:10: expected a mapping of component names"},
		{"sources: {a: 1}\n", `1:14: component "a" must be a mapping`},
		{"sources: {a: }\n", `1:11: component "a" is empty`},
		{"buffer: {max_bytes: 0}\n", `1:21: buffer max_bytes must be at least 1, got 0`},
		{"buffer: {max_bytes: 64 MiBs}\n", `1:21: invalid size "64 MiBs"`},
		{"buffer: {max_bytes: -1KiB}\n", `1:21: invalid size "-1KiB"`},
		{"buffer: {max_bytes: 99999999999GiB}\n", `1:21: invalid size`},
	} {
		_, err := Parse([]byte(tc.src), env(nil))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: got %v, want %q", tc.src, err, tc.want)
		}
	}
}

// billionLaughs is a config of a few hundred bytes whose aliases expand to
// 10^9 nodes inside a component's options.
func billionLaughs() string {
	src := "sources:\n  a:\n    type: t\n    l0: &l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]\n"
	for i := 1; i < 9; i++ {
		src += fmt.Sprintf("    l%d: &l%d [*l%d, *l%d, *l%d, *l%d, *l%d, *l%d, *l%d, *l%d, *l%d, *l%d]\n", i, i, i-1, i-1, i-1, i-1, i-1, i-1, i-1, i-1, i-1, i-1)
	}
	return src + "sinks: {b: {type: t, inputs: [a]}}\n"
}

// TestParseAliasAmplification: a config whose aliases expand past
// MaxExpandedNodes is refused at the alias that takes it past the limit,
// before any component walks the expansion.
func TestParseAliasAmplification(t *testing.T) {
	_, err := Parse([]byte(billionLaughs()), env(nil))
	if err == nil || !strings.Contains(err.Error(), "9:49:") || !strings.Contains(err.Error(), "aliases expand the config to more than 1000000 nodes (alias *l4") {
		t.Errorf("got %v", err)
	}
	// A wide expansion: one big anchored list, and a list of aliases of it.
	wide := "sources:\n  a:\n    type: t\n    big: &b [" + strings.Repeat("x, ", 5000) + "x]\n    l: [" + strings.Repeat("*b, ", 999) + "*b]\nsinks: {b: {type: t, inputs: [a]}}\n"
	if _, err := Parse([]byte(wide), env(nil)); err == nil || !strings.Contains(err.Error(), "5:") || !strings.Contains(err.Error(), "more than 1000000 nodes") {
		t.Errorf("wide: got %v", err)
	}
	// Aliases within the limit are fine.
	ok := "sources:\n  a: &a {type: t, l: &l [x, y]}\n  c: {type: t, l: *l}\nsinks: {b: {type: t, inputs: [a]}}\n"
	if _, err := Parse([]byte(ok), env(nil)); err != nil {
		t.Errorf("ok: %v", err)
	}
}

func TestBufferMaxBytes(t *testing.T) {
	for src, want := range map[string]ByteSize{
		"":                           DefaultBufferBytes,
		"buffer: {max_bytes: 4096}":  4096,
		"buffer: {max_bytes: 64MiB}": 64 << 20,
		"buffer: {max_bytes: 2 GiB}": 2 << 30,
		"buffer: {max_bytes: 5MB}":   5e6,
		"buffer: {max_bytes: 10B}":   10,
	} {
		c, err := Parse([]byte(src+"\nsources: {a: {type: t}}\nsinks: {b: {type: t}}\n"), env(nil))
		if err != nil || c.Buffer.MaxBytes != want || c.Buffer.Events != DefaultBufferEvents {
			t.Errorf("%q: %v %+v, want max_bytes %d", src, err, c, want)
		}
	}
	b, errs := DecodeBuffer(resolve(parse(t, "{max_bytes: 1KiB}")), Buffer{Events: 5, MaxBytes: 9, WhenFull: Block})
	if errs != nil || b != (Buffer{Events: 5, MaxBytes: 1024, WhenFull: Block}) {
		t.Errorf("DecodeBuffer: %+v %v", b, errs)
	}
}

func TestDiskBuffer(t *testing.T) {
	def := Buffer{Events: 5, MaxBytes: 9, WhenFull: Block, Type: Memory, Sync: SyncInterval, SyncInterval: Duration(time.Second)}
	for _, tc := range []struct {
		src  string
		want Buffer
		err  string
	}{
		{src: "{type: disk, path: /d}", want: Buffer{Events: 5, MaxBytes: DefaultDiskBufferBytes, WhenFull: Block, Type: Disk, Path: "/d", Sync: SyncInterval, SyncInterval: Duration(time.Second)}},
		{src: "{type: disk, path: d, max_bytes: 2GiB, when_full: drop_oldest, sync: always}", want: Buffer{Events: 5, MaxBytes: 2 << 30, WhenFull: DropOldest, Type: Disk, Path: "d", Sync: SyncAlways, SyncInterval: Duration(time.Second)}},
		{src: "{type: disk}", err: "1:8: a disk buffer needs a path"},
		{src: "{path: /d}", err: "1:8: path is a key of disk buffers"},
		{src: "{when_full: drop_oldest}", err: "1:13: when_full: drop_oldest needs a disk buffer"},
		{src: "{type: tape}", err: "1:8: buffer type must be memory or disk"},
		{src: "{type: disk, path: d, sync: sometimes}", err: "1:29: sync must be interval, always or never"},
		{src: "{type: disk, path: d, sync_interval: 0s}", err: "1:38: sync_interval must be positive"},
	} {
		b, errs := DecodeBuffer(resolve(parse(t, tc.src)), def)
		if tc.err != "" {
			if errs == nil || !strings.Contains(errs.Error(), tc.err) {
				t.Errorf("%s: %v, want %q", tc.src, errs, tc.err)
			}
			continue
		}
		if errs != nil || b != tc.want {
			t.Errorf("%s: %+v %v", tc.src, b, errs)
		}
	}
	if _, err := Parse([]byte("buffer: {type: disk, path: /d}\nsources: {a: {type: x}}\nsinks: {b: {type: y}}\n"), nil); err == nil || !strings.Contains(err.Error(), "the top-level buffer cannot be a disk buffer") {
		t.Errorf("top-level disk buffer: %v", err)
	}
}

// flowbus runs next to Cilium, often on the host network: its default
// metrics port must not be one of Cilium's (agent 9962, operator 9963,
// Envoy 9964, Hubble metrics 9965, Hubble server 4244, Relay 4245).
func TestDefaultMetricsPortAvoidsCilium(t *testing.T) {
	_, port, err := net.SplitHostPort(DefaultMetricsListen)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"9962", "9963", "9964", "9965", "4244", "4245"} {
		if port == p {
			t.Errorf("default metrics port %s is Cilium's", port)
		}
	}
	if port != "9470" {
		t.Errorf("default metrics port %s: the Helm chart, the systemd unit and README say 9470", port)
	}
}
