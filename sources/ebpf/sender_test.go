//go:build linux

package ebpf

import (
	"fmt"
	"net"
	"runtime"
	"sync"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/flowbus/flowbus/bpf/bpftest"
)

// sinkUDP opens a UDP socket inside the pair's namespace that nobody reads:
// once its buffer is full the peer drops what arrives, in its own namespace
// (which the drop program does not watch), which costs less than reading.
func sinkUDP(t testing.TB, p *bpftest.Pair, ip net.IP) *net.UDPAddr {
	t.Helper()
	var c net.PacketConn
	if err := p.InNS(func() (err error) {
		c, err = net.ListenPacket("udp", net.JoinHostPort(ip.String(), "0"))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c.LocalAddr().(*net.UDPAddr)
}

// sendBatch is how many datagrams one sendmmsg call sends.
const sendBatch = 64

// blast sends n 64-byte UDP datagrams to dst from senders sockets, each on
// its own thread, with sendmmsg in batches of sendBatch, paced at rate
// datagrams/s in total (0: as fast as possible). It returns how long the
// sending took.
func blast(dst *net.UDPAddr, n, senders, rate int) (time.Duration, error) {
	var wg sync.WaitGroup
	errs := make([]error, senders)
	start := time.Now()
	for i := range senders {
		share := n / senders
		if i == 0 {
			share += n % senders
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			errs[i] = sendmmsg(dst, share, rate/senders, start)
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	for _, err := range errs {
		if err != nil {
			return elapsed, err
		}
	}
	return elapsed, nil
}

// sendmmsg sends n datagrams on a new connected socket, at rate per second
// from start (0: unpaced).
func sendmmsg(dst *net.UDPAddr, n, rate int, start time.Time) error {
	family, sa := unix.AF_INET, unix.Sockaddr(nil)
	if ip4 := dst.IP.To4(); ip4 != nil {
		a := &unix.SockaddrInet4{Port: dst.Port}
		copy(a.Addr[:], ip4)
		sa = a
	} else {
		family = unix.AF_INET6
		a := &unix.SockaddrInet6{Port: dst.Port}
		copy(a.Addr[:], dst.IP.To16())
		sa = a
	}
	fd, err := unix.Socket(family, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("socket: %w", err)
	}
	defer unix.Close(fd)
	if err := unix.Connect(fd, sa); err != nil {
		return fmt.Errorf("connect %s: %w", dst, err)
	}
	payload := make([]byte, 64)
	iov := unix.Iovec{Base: &payload[0]}
	iov.SetLen(len(payload))
	msgs := make([]unix.Mmsghdr, sendBatch)
	for i := range msgs {
		msgs[i].Hdr.Iov = &iov
		msgs[i].Hdr.SetIovlen(1)
	}
	for sent := 0; sent < n; {
		if rate > 0 {
			if d := time.Duration(sent) * time.Second / time.Duration(rate); time.Since(start) < d {
				time.Sleep(d - time.Since(start))
			}
		}
		k := min(sendBatch, n-sent)
		r, _, errno := unix.Syscall6(unix.SYS_SENDMMSG, uintptr(fd), uintptr(unsafe.Pointer(&msgs[0])), uintptr(k), 0, 0, 0)
		runtime.KeepAlive(payload)
		if errno != 0 {
			if errno == unix.EINTR || errno == unix.EAGAIN || errno == unix.ENOBUFS {
				continue
			}
			return fmt.Errorf("sendmmsg: %w", errno)
		}
		sent += int(r)
	}
	return nil
}
