//go:build linux

// Package bpftest builds throwaway network namespaces joined by veth pairs
// for the privileged tests of flowbus's BPF programs and the ebpf source.
package bpftest

import (
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// RequireRoot skips t unless the test runs as root, saying why. Privileged
// tests run in CI, which runs as root.
func RequireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: loads BPF programs and creates network namespaces")
	}
}

var (
	seq       atomic.Int32
	cleanOnce sync.Once
)

// removeStale deletes the namespaces and interfaces that test processes
// which no longer exist left behind (killed before their cleanup ran).
// Names carry the creating process's id: fbns<pid><letter>, fb?<pid><letter>.
func removeStale() {
	dead := func(name, prefix string) bool {
		rest := strings.TrimPrefix(name, prefix)
		if rest == name || len(rest) < 2 {
			return false
		}
		pid, err := strconv.Atoi(rest[:len(rest)-1])
		if err != nil {
			return false
		}
		_, err = os.Stat(fmt.Sprintf("/proc/%d", pid))
		return os.IsNotExist(err)
	}
	if entries, err := os.ReadDir("/var/run/netns"); err == nil {
		for _, e := range entries {
			if dead(e.Name(), "fbns") {
				exec.Command("ip", "netns", "del", e.Name()).Run()
			}
		}
	}
	if ifaces, err := net.Interfaces(); err == nil {
		for _, ifi := range ifaces {
			if len(ifi.Name) > 3 && strings.HasPrefix(ifi.Name, "fb") && dead(ifi.Name, ifi.Name[:3]) {
				exec.Command("ip", "link", "del", ifi.Name).Run()
			}
		}
	}
}

// Pair is a veth pair: Host stays in the test's network namespace, Peer
// lives in the namespace NS.
type Pair struct {
	NS               string // network namespace name (ip netns)
	Host, Peer       string // interface names
	HostIndex        int
	HostIP, PeerIP   net.IP // IPv4
	HostIP6, PeerIP6 net.IP // IPv6
	HostMAC, PeerMAC net.HardwareAddr
}

// NewPair creates a namespace and a veth pair with IPv4 and IPv6
// addresses, all up; t.Cleanup removes them.
func NewPair(t testing.TB) *Pair {
	t.Helper()
	p := PlanPair()
	p.Create(t)
	return p
}

// PlanPair chooses the names and addresses of a pair without creating it
// (to configure something with its names before they exist).
func PlanPair() *Pair {
	cleanOnce.Do(removeStale)
	n := seq.Add(1)
	id := fmt.Sprintf("%d%c", os.Getpid()%1000000, 'a'+rune(n%26))
	a, b := 128+rand.IntN(128), rand.IntN(256)
	p := &Pair{
		NS:      "fbns" + id,
		Host:    "fbh" + id,
		Peer:    "fbp" + id,
		HostIP:  net.IPv4(10, byte(a), byte(b), 1).To4(),
		PeerIP:  net.IPv4(10, byte(a), byte(b), 2).To4(),
		HostIP6: net.ParseIP(fmt.Sprintf("fd00:fb:%x:%x::1", a, b)),
		PeerIP6: net.ParseIP(fmt.Sprintf("fd00:fb:%x:%x::2", a, b)),
	}
	return p
}

// Create creates the planned pair: the namespace and the veth pair with
// their addresses, all up; t.Cleanup removes them.
func (p *Pair) Create(t testing.TB) {
	t.Helper()
	t.Cleanup(func() {
		exec.Command("ip", "link", "del", p.Host).Run()
		exec.Command("ip", "netns", "del", p.NS).Run()
	})
	run(t, "ip", "netns", "add", p.NS)
	run(t, "ip", "link", "add", p.Host, "type", "veth", "peer", "name", p.Peer)
	run(t, "ip", "link", "set", p.Peer, "netns", p.NS)
	run(t, "ip", "addr", "add", p.HostIP.String()+"/24", "dev", p.Host)
	run(t, "ip", "addr", "add", p.HostIP6.String()+"/64", "dev", p.Host, "nodad")
	run(t, "ip", "link", "set", p.Host, "up")
	run(t, "ip", "-n", p.NS, "addr", "add", p.PeerIP.String()+"/24", "dev", p.Peer)
	run(t, "ip", "-n", p.NS, "addr", "add", p.PeerIP6.String()+"/64", "dev", p.Peer, "nodad")
	run(t, "ip", "-n", p.NS, "link", "set", p.Peer, "up")
	run(t, "ip", "-n", p.NS, "link", "set", "lo", "up")
	ifi, err := net.InterfaceByName(p.Host)
	if err != nil {
		t.Fatal(err)
	}
	p.HostIndex, p.HostMAC = ifi.Index, ifi.HardwareAddr
	if err := p.InNS(func() error {
		pi, err := net.InterfaceByName(p.Peer)
		if err == nil {
			p.PeerMAC = pi.HardwareAddr
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
}

// Run runs a command inside the pair's namespace.
func (p *Pair) Run(t testing.TB, args ...string) {
	t.Helper()
	run(t, append([]string{"ip", "netns", "exec", p.NS}, args...)...)
}

func run(t testing.TB, args ...string) {
	t.Helper()
	out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v: %s", strings.Join(args, " "), err, out)
	}
}

// InNS runs fn on a thread switched into the pair's namespace. Sockets
// that fn opens stay in that namespace after it returns.
func (p *Pair) InNS(fn func() error) error {
	runtime.LockOSThread()
	self, err := os.Open(fmt.Sprintf("/proc/self/task/%d/ns/net", unix.Gettid()))
	if err != nil {
		runtime.UnlockOSThread()
		return err
	}
	defer self.Close()
	target, err := os.Open("/var/run/netns/" + p.NS)
	if err != nil {
		runtime.UnlockOSThread()
		return err
	}
	defer target.Close()
	if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("setns %s: %w", p.NS, err)
	}
	ferr := fn()
	if err := unix.Setns(int(self.Fd()), unix.CLONE_NEWNET); err != nil {
		// Leave the thread locked: it dies with the goroutine instead of
		// running other goroutines in the wrong namespace.
		return fmt.Errorf("setns back: %w", err)
	}
	runtime.UnlockOSThread()
	return ferr
}

// Ping sends count ICMP echo requests from the host side to ip (IPv4 or
// IPv6) and waits for each reply.
func Ping(ip net.IP, count int) error {
	network, typ := "ip4:icmp", byte(8)
	if ip.To4() == nil {
		network, typ = "ip6:ipv6-icmp", 128
	}
	c, err := net.ListenPacket(network, "")
	if err != nil {
		return fmt.Errorf("icmp socket: %w", err)
	}
	defer c.Close()
	id := uint16(os.Getpid())
	buf := make([]byte, 1500)
	for seq := 0; seq < count; seq++ {
		msg := []byte{typ, 0, 0, 0, byte(id >> 8), byte(id), byte(seq >> 8), byte(seq), 'f', 'l', 'o', 'w'}
		if typ == 8 {
			cs := checksum(msg)
			msg[2], msg[3] = byte(cs>>8), byte(cs)
		} // the kernel fills the ICMPv6 checksum
		if _, err := c.WriteTo(msg, &net.IPAddr{IP: ip}); err != nil {
			return fmt.Errorf("send echo: %w", err)
		}
		for {
			if err := c.SetReadDeadline(deadline()); err != nil {
				return err
			}
			n, _, err := c.ReadFrom(buf)
			if err != nil {
				return fmt.Errorf("echo reply %d: %w", seq, err)
			}
			if n >= 8 && (buf[0] == 0 || buf[0] == 129) && buf[4] == byte(id>>8) && buf[5] == byte(id) && buf[7] == byte(seq) {
				break
			}
		}
	}
	return nil
}

func checksum(b []byte) uint16 {
	var s uint32
	for i := 0; i+1 < len(b); i += 2 {
		s += uint32(b[i])<<8 | uint32(b[i+1])
	}
	if len(b)%2 == 1 {
		s += uint32(b[len(b)-1]) << 8
	}
	for s > 0xffff {
		s = s>>16 + s&0xffff
	}
	return ^uint16(s)
}

func deadline() time.Time { return time.Now().Add(5 * time.Second) }
