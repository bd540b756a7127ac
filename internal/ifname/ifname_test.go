//go:build linux

package ifname

import (
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
)

// link creates a veth pair in the test's network namespace and returns the
// index of its end called name; t.Cleanup deletes it.
func link(t *testing.T, name string) uint32 {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("needs root: creates network interfaces (CI runs the tests as root)")
	}
	if out, err := exec.Command("ip", "link", "add", name, "type", "veth", "peer", "name", name+"p").CombinedOutput(); err != nil {
		t.Fatalf("ip link add %s: %v: %s", name, err, out)
	}
	t.Cleanup(func() { exec.Command("ip", "link", "del", name).Run() })
	l, err := netlink.LinkByName(name)
	if err != nil {
		t.Fatal(err)
	}
	return uint32(l.Attrs().Index)
}

func TestGet(t *testing.T) {
	var c Cache
	if got := c.Get(1); got != "lo" {
		t.Errorf("index 1 = %q, want lo", got)
	}
	name := fmt.Sprintf("fbn%da", os.Getpid()%1000000)
	idx := link(t, name)
	if got := c.Get(idx); got != name {
		t.Errorf("index %d = %q, want %q", idx, got, name)
	}
	if got := c.Get(1 << 30); got != "" {
		t.Errorf("an index no link has = %q", got)
	}
}

// TestWatch: with the subscription, a rename and a deletion reach the
// cache at once, without waiting for the minute a name is trusted.
func TestWatch(t *testing.T) {
	var c Cache
	stop, err := c.Watch(slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	name := fmt.Sprintf("fbn%db", os.Getpid()%1000000)
	idx := link(t, name)
	waitName(t, &c, idx, name)
	renamed := name + "r"
	for _, args := range [][]string{{"link", "set", name, "down"}, {"link", "set", name, "name", renamed}} {
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %v: %v: %s", args, err, out)
		}
	}
	t.Cleanup(func() { exec.Command("ip", "link", "del", renamed).Run() })
	waitName(t, &c, idx, renamed)
	if out, err := exec.Command("ip", "link", "del", renamed).CombinedOutput(); err != nil {
		t.Fatalf("ip link del: %v: %s", err, out)
	}
	waitName(t, &c, idx, "")
}

// waitName waits until the cache has name for idx from memory (what a
// link event put there).
func waitName(t *testing.T, c *Cache, idx uint32, name string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		c.mu.Lock()
		n, ok := c.m[idx]
		c.mu.Unlock()
		if (name == "" && !ok) || (ok && n.name == name) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("index %d: cache has %q (known %v), want %q", idx, n.name, ok, name)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
