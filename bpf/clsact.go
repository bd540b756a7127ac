package bpf

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"sync/atomic"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

// The clsact fallback, for kernels without tcx (before Linux 6.6): the
// program becomes a direct-action cls_bpf filter on the interface's clsact
// qdisc, added and removed with rtnetlink. Unlike a tcx link, such a filter
// outlives the process, so flowbus uses one fixed priority and handle and
// replaces whatever filter holds them (a crashed run's) when it attaches.
// The clsact qdisc itself is left in place: other programs may use it.
const (
	tcHClsact     = 0xFFFFFFF1
	tcHMinIngress = 0xFFF2
	tcHMinEgress  = 0xFFF3
	// ClsactPriority and ClsactHandle identify flowbus's filters.
	ClsactPriority = 0xfb1
	ClsactHandle   = 0xfb1

	tcaBPFFD            = 6
	tcaBPFName          = 7
	tcaBPFFlags         = 8
	tcaBPFFlagActDirect = 1
	ethPAll             = 0x0003
)

// clsactFilter is an attached cls_bpf filter; Close removes it.
type clsactFilter struct {
	ifindex int
	dir     Direction
	closed  atomic.Bool
}

func (f *clsactFilter) Close() error {
	if f.closed.Swap(true) {
		return nil
	}
	err := deleteFilter(f.ifindex, f.dir)
	if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENODEV) || errors.Is(err, unix.EINVAL) {
		return nil // already gone (with its interface or its qdisc)
	}
	return err
}

// attachClsact attaches prog as flowbus's filter in direction d.
func attachClsact(ifindex int, d Direction, prog *ebpf.Program, name string) (*clsactFilter, error) {
	// Create the clsact qdisc unless it exists.
	q := tcmsg(ifindex, 0xFFFF0000, tcHClsact, 0)
	q = attr(q, unix.TCA_KIND, []byte("clsact\x00"))
	if err := rtnetlink(unix.RTM_NEWQDISC, unix.NLM_F_CREATE|unix.NLM_F_EXCL, q); err != nil && !errors.Is(err, unix.EEXIST) {
		return nil, fmt.Errorf("add clsact qdisc: %w", err)
	}
	// Replace a stale filter of an earlier run.
	if err := deleteFilter(ifindex, d); err != nil && !errors.Is(err, unix.ENOENT) {
		return nil, fmt.Errorf("remove stale filter: %w", err)
	}
	var opts []byte
	fd := make([]byte, 4)
	binary.NativeEndian.PutUint32(fd, uint32(prog.FD()))
	opts = attr(opts, tcaBPFFD, fd)
	opts = attr(opts, tcaBPFName, append([]byte(name), 0))
	flags := make([]byte, 4)
	binary.NativeEndian.PutUint32(flags, tcaBPFFlagActDirect)
	opts = attr(opts, tcaBPFFlags, flags)
	m := filterMsg(ifindex, d)
	m = attr(m, unix.TCA_OPTIONS, opts)
	if err := rtnetlink(unix.RTM_NEWTFILTER, unix.NLM_F_CREATE|unix.NLM_F_EXCL, m); err != nil {
		return nil, fmt.Errorf("add cls_bpf filter: %w", err)
	}
	return &clsactFilter{ifindex: ifindex, dir: d}, nil
}

func deleteFilter(ifindex int, d Direction) error {
	return rtnetlink(unix.RTM_DELTFILTER, 0, filterMsg(ifindex, d))
}

// filterMsg is the tcmsg and kind of flowbus's filter in direction d.
func filterMsg(ifindex int, d Direction) []byte {
	minor := uint32(tcHMinIngress)
	if d == Egress {
		minor = tcHMinEgress
	}
	// info: priority in the upper 16 bits, protocol (network order) below.
	var proto [2]byte
	binary.BigEndian.PutUint16(proto[:], ethPAll)
	info := uint32(ClsactPriority)<<16 | uint32(binary.NativeEndian.Uint16(proto[:]))
	m := tcmsg(ifindex, ClsactHandle, 0xFFFF0000|minor, info)
	return attr(m, unix.TCA_KIND, []byte("bpf\x00"))
}

// tcmsg encodes struct tcmsg.
func tcmsg(ifindex int, handle, parent, info uint32) []byte {
	b := make([]byte, 20)
	b[0] = unix.AF_UNSPEC
	ne := binary.NativeEndian
	ne.PutUint32(b[4:], uint32(int32(ifindex)))
	ne.PutUint32(b[8:], handle)
	ne.PutUint32(b[12:], parent)
	ne.PutUint32(b[16:], info)
	return b
}

// attr appends a netlink attribute.
func attr(b []byte, typ uint16, data []byte) []byte {
	n := 4 + len(data)
	hdr := make([]byte, 4)
	binary.NativeEndian.PutUint16(hdr[0:], uint16(n))
	binary.NativeEndian.PutUint16(hdr[2:], typ)
	b = append(b, hdr...)
	b = append(b, data...)
	for len(b)%4 != 0 {
		b = append(b, 0)
	}
	return b
}

// rtnetlink sends one request and waits for its acknowledgement.
func rtnetlink(typ uint16, flags uint16, payload []byte) error {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_ROUTE)
	if err != nil {
		return os.NewSyscallError("socket", err)
	}
	defer unix.Close(fd)
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return os.NewSyscallError("bind", err)
	}
	msg := make([]byte, 16, 16+len(payload))
	ne := binary.NativeEndian
	ne.PutUint32(msg[0:], uint32(16+len(payload)))
	ne.PutUint16(msg[4:], typ)
	ne.PutUint16(msg[6:], flags|unix.NLM_F_REQUEST|unix.NLM_F_ACK)
	ne.PutUint32(msg[8:], 1)
	msg = append(msg, payload...)
	if err := unix.Sendto(fd, msg, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return os.NewSyscallError("sendto", err)
	}
	buf := make([]byte, 8192)
	for {
		n, _, err := unix.Recvfrom(fd, buf, 0)
		if err != nil {
			return os.NewSyscallError("recvfrom", err)
		}
		for b := buf[:n]; len(b) >= 16; {
			l := int(ne.Uint32(b[0:]))
			if l < 16 || l > len(b) {
				return errors.New("rtnetlink: malformed reply")
			}
			if ne.Uint16(b[4:]) == unix.NLMSG_ERROR && l >= 20 {
				if code := int32(ne.Uint32(b[16:])); code != 0 {
					return unix.Errno(-code)
				}
				return nil
			}
			b = b[(l+3)&^3:]
		}
	}
}
