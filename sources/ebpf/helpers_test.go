//go:build linux

package ebpf

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"
	"gopkg.in/yaml.v3"

	"github.com/flowbus/flowbus/bpf/bpftest"
	flowpb "github.com/flowbus/flowbus/flow"
	"github.com/flowbus/flowbus/pipeline"
)

// collector is a pipeline.Output that keeps copies of every flow and the
// lost counts. Emit blocks while a test holds gate (Lock); Emits hold it for
// reading.
type collector struct {
	mu     sync.Mutex
	cond   *sync.Cond
	flows  []*flowpb.Flow
	events []pipeline.Event // envelope data of the flows
	lost   map[int32]uint64
	gate   sync.RWMutex
}

func newCollector() *collector {
	c := &collector{lost: map[int32]uint64{}}
	c.cond = sync.NewCond(&c.mu)
	return c
}

func (c *collector) Emit(ctx context.Context, b *pipeline.Batch) error {
	c.gate.RLock()
	defer c.gate.RUnlock()
	c.mu.Lock()
	for i := range b.Events {
		e := &b.Events[i]
		if e.Flow == nil {
			continue
		}
		f := proto.Clone(e.Flow).(*flowpb.Flow)
		c.flows = append(c.flows, f)
		c.events = append(c.events, pipeline.Event{NodeName: e.NodeName, Time: e.Time})
	}
	c.cond.Broadcast()
	c.mu.Unlock()
	b.Release()
	return ctx.Err()
}

func (c *collector) Lost(src flowpb.LostEventSource, cpu int32, n uint64) {
	if src != flowpb.LostEventSource_PERF_EVENT_RING_BUFFER {
		panic("unexpected lost source " + src.String())
	}
	c.mu.Lock()
	c.lost[cpu] += n
	c.cond.Broadcast()
	c.mu.Unlock()
}

func (c *collector) lostTotal() uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	var n uint64
	for _, v := range c.lost {
		n += v
	}
	return n
}

// waitFlow waits for a flow that match accepts.
func (c *collector) waitFlow(t *testing.T, what string, match func(*flowpb.Flow) bool) *flowpb.Flow {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	stop := time.AfterFunc(10*time.Second, func() { c.mu.Lock(); c.cond.Broadcast(); c.mu.Unlock() })
	defer stop.Stop()
	c.mu.Lock()
	defer c.mu.Unlock()
	seen := 0
	for {
		for ; seen < len(c.flows); seen++ {
			if match(c.flows[seen]) {
				return c.flows[seen]
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no flow for %s among %d flows", what, len(c.flows))
		}
		c.cond.Wait()
	}
}

// count returns the number of flows match accepts.
func (c *collector) count(match func(*flowpb.Flow) bool) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, f := range c.flows {
		if match(f) {
			n++
		}
	}
	return n
}

// running is a started source.
type running struct {
	src  *Source
	out  *collector
	stop func() // cancels and waits for Run
}

func startSource(t *testing.T, cfg string) *running {
	t.Helper()
	var node yaml.Node
	if err := yaml.Unmarshal([]byte(cfg), &node); err != nil {
		t.Fatal(err)
	}
	b := &pipeline.Build{Name: "test", Type: "ebpf", NodeName: "test-node",
		Log: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))}
	s, err := pipeline.Make(b, node.Content[0], New)
	if err != nil {
		t.Fatal(err)
	}
	src := s
	if err := src.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	out := newCollector()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- src.Run(ctx, out) }()
	var once sync.Once
	r := &running{src: src, out: out}
	r.stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("Run: %v", err)
				}
			case <-time.After(10 * time.Second):
				t.Error("Run did not return 10s after cancel")
			}
		})
	}
	t.Cleanup(r.stop)
	return r
}

// onCPU runs fn on a thread pinned to cpu.
func onCPU(cpu int, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // the thread exits with the goroutine
		var set unix.CPUSet
		set.Set(cpu)
		if err := unix.SchedSetaffinity(0, &set); err != nil {
			errc <- err
			return
		}
		errc <- fn()
	}()
	return <-errc
}

// listenTCP opens a TCP listener inside the pair's namespace that reads
// and discards every connection.
func listenTCP(t testing.TB, p *bpftest.Pair, ip net.IP) *net.TCPAddr {
	t.Helper()
	var ln net.Listener
	if err := p.InNS(func() (err error) {
		ln, err = net.Listen("tcp", net.JoinHostPort(ip.String(), "0"))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				buf := make([]byte, 64<<10)
				for {
					if _, err := c.Read(buf); err != nil {
						return
					}
				}
			}()
		}
	}()
	return ln.Addr().(*net.TCPAddr)
}

// listenUDP opens a UDP socket inside the pair's namespace that discards
// what it receives.
func listenUDP(t testing.TB, p *bpftest.Pair, ip net.IP) *net.UDPAddr {
	t.Helper()
	var c net.PacketConn
	if err := p.InNS(func() (err error) {
		c, err = net.ListenPacket("udp", net.JoinHostPort(ip.String(), "0"))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if uc, ok := c.(*net.UDPConn); ok {
		uc.SetReadBuffer(8 << 20)
	}
	t.Cleanup(func() { c.Close() })
	go func() {
		buf := make([]byte, 64<<10)
		for {
			if _, _, err := c.ReadFrom(buf); err != nil {
				return
			}
		}
	}()
	return c.LocalAddr().(*net.UDPAddr)
}

func is(f *flowpb.Flow, src, dst net.IP) bool {
	return f.GetIP().GetSource() == src.String() && f.GetIP().GetDestination() == dst.String()
}

func ifaceYAML(p *bpftest.Pair, extra ...string) string {
	return "interfaces: [" + p.Host + "]\n" + strings.Join(extra, "\n") + "\n"
}

// sendSpoofed sends a datagram from the peer to a closed port of the host
// whose source the host's strict reverse-path filter rejects (its route
// back leads out of another interface), and returns that source.
func sendSpoofed(t *testing.T, p *bpftest.Pair) net.IP {
	t.Helper()
	other := "fbo" + p.Host[3:]
	t.Cleanup(func() { exec.Command("ip", "link", "del", other).Run() })
	spoofNet := fmt.Sprintf("10.%d.%d", p.HostIP[1]^0x40, p.HostIP[2])
	for _, args := range [][]string{
		{"ip", "link", "add", other, "type", "veth", "peer", "name", other + "x"},
		{"ip", "addr", "add", spoofNet + ".1/24", "dev", other},
		{"ip", "link", "set", other, "up"},
		{"ip", "link", "set", other + "x", "up"},
		{"sysctl", "-qw", "net.ipv4.conf." + p.Host + ".rp_filter=1"},
	} {
		if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
			t.Fatalf("%v: %v %s", args, err, out)
		}
	}
	p.Run(t, "ip", "addr", "add", spoofNet+".2/32", "dev", p.Peer)
	spoofed := net.ParseIP(spoofNet + ".2").To4()
	if err := p.InNS(func() error {
		c, err := net.DialUDP("udp4", &net.UDPAddr{IP: spoofed}, &net.UDPAddr{IP: p.HostIP, Port: 9})
		if err != nil {
			return err
		}
		defer c.Close()
		_, err = c.Write([]byte("spoofed"))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	return spoofed
}
