//go:build linux

package bpf

import (
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync/atomic"

	"github.com/cilium/ebpf"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// The clsact fallback, for kernels without tcx (before Linux 6.6): the
// program becomes a direct-action cls_bpf filter on the interface's clsact
// qdisc. Filters run by ascending priority (pref), and within one priority
// the cls_bpf classifier runs its newest filter first; the first program that
// returns anything but TC_ACT_UNSPEC ends the chain. So flowbus's filter goes
// one priority ahead of the first existing filter, or, when that one holds
// priority 1 (as Cilium's filters do), joins it at priority 1 as its newest
// filter. Unlike a tcx link, a filter outlives the process: filters named
// flowbus_* found at attach (a crashed run's) are removed first. The clsact
// qdisc itself is left in place: other programs may use it.
const (
	// ClsactHandle is the handle of flowbus's filters.
	ClsactHandle = 0xfb1
	namePrefix   = "flowbus_"
)

// clsactFilter is an attached cls_bpf filter; Close removes it.
type clsactFilter struct {
	filter netlink.BpfFilter
	closed atomic.Bool
}

func (f *clsactFilter) Close() error {
	if f.closed.Swap(true) {
		return nil
	}
	err := netlink.FilterDel(&f.filter)
	if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENODEV) || errors.Is(err, unix.EINVAL) {
		return nil // already gone (with its interface or its qdisc)
	}
	if err != nil {
		return fmt.Errorf("remove clsact filter: %w", err)
	}
	return nil
}

func clsactParent(d Direction) uint32 {
	if d == Egress {
		return netlink.HANDLE_MIN_EGRESS
	}
	return netlink.HANDLE_MIN_INGRESS
}

// describeFilter names a filter for logs: "pref 1 bpf cil_from_netdev".
func describeFilter(f netlink.Filter) string {
	a := f.Attrs()
	if b, ok := f.(*netlink.BpfFilter); ok {
		name := b.Name
		if name == "" {
			name = fmt.Sprintf("id %d", b.Id)
		}
		return fmt.Sprintf("clsact pref %d bpf %s", a.Priority, name)
	}
	return fmt.Sprintf("clsact pref %d %s", a.Priority, f.Type())
}

// listFilters returns the filters on the interface's clsact hook of
// direction d, in the order the kernel runs them.
func listFilters(ifindex int, d Direction) ([]netlink.Filter, error) {
	l := &netlink.Dummy{LinkAttrs: netlink.LinkAttrs{Index: ifindex}}
	fs, err := netlink.FilterList(l, clsactParent(d))
	if err != nil {
		if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOENT) {
			return nil, nil // no clsact qdisc
		}
		return nil, err
	}
	return fs, nil
}

// clsactOthers describes the filters on the hook that are not flowbus's.
func clsactOthers(ifindex int, d Direction) []string {
	fs, _ := listFilters(ifindex, d)
	var out []string
	for _, f := range fs {
		if b, ok := f.(*netlink.BpfFilter); ok && strings.HasPrefix(b.Name, namePrefix) {
			continue
		}
		out = append(out, describeFilter(f))
	}
	return out
}

// clsactPosition says whether flowbus's filter called name is the first
// the kernel runs on the hook, and describes the others.
func clsactPosition(ifindex int, d Direction, name string) (first bool, others []string) {
	fs, _ := listFilters(ifindex, d)
	for i, f := range fs {
		if b, ok := f.(*netlink.BpfFilter); ok && b.Name == name {
			first = first || i == 0
			continue
		}
		others = append(others, describeFilter(f))
	}
	return first, others
}

// attachClsact attaches prog as flowbus's filter in direction d, ahead of
// the filters already there when it can. ahead says whether it is the
// first filter the kernel runs; others describes the other filters.
func attachClsact(ifindex int, d Direction, prog *ebpf.Program, name string) (f *clsactFilter, ahead bool, others []string, err error) {
	qdisc := &netlink.GenericQdisc{
		QdiscAttrs: netlink.QdiscAttrs{LinkIndex: ifindex, Handle: netlink.MakeHandle(0xffff, 0), Parent: netlink.HANDLE_CLSACT},
		QdiscType:  "clsact",
	}
	if err := netlink.QdiscAdd(qdisc); err != nil && !errors.Is(err, unix.EEXIST) {
		return nil, false, nil, fmt.Errorf("add clsact qdisc: %w", err)
	}
	existing, err := listFilters(ifindex, d)
	if err != nil {
		return nil, false, nil, fmt.Errorf("list filters: %w", err)
	}
	var foreign []netlink.Filter
	for _, ef := range existing {
		if b, ok := ef.(*netlink.BpfFilter); ok && strings.HasPrefix(b.Name, namePrefix) {
			// A crashed run's filter.
			if err := netlink.FilterDel(ef); err != nil && !errors.Is(err, unix.ENOENT) {
				return nil, false, nil, fmt.Errorf("remove stale filter %s: %w", describeFilter(ef), err)
			}
			continue
		}
		foreign = append(foreign, ef)
		others = append(others, describeFilter(ef))
	}
	prio := pickPriority(foreign)
	nf := netlink.BpfFilter{
		FilterAttrs: netlink.FilterAttrs{
			LinkIndex: ifindex,
			Parent:    clsactParent(d),
			Handle:    freeHandle(foreign, prio),
			Priority:  prio,
			Protocol:  unix.ETH_P_ALL,
		},
		Fd:           prog.FD(),
		Name:         name,
		DirectAction: true,
	}
	if err := netlink.FilterAdd(&nf); err != nil {
		if prio == 1 && len(foreign) > 0 {
			// Priority 1 is held by a classifier flowbus cannot join
			// (another kind or protocol): take the first free priority.
			nf.Priority = firstFree(foreign)
			nf.Handle = ClsactHandle
			err = netlink.FilterAdd(&nf)
		}
		if err != nil {
			return nil, false, others, fmt.Errorf("add cls_bpf filter: %w", err)
		}
	}
	// Check where the kernel put it.
	after, err := listFilters(ifindex, d)
	if err == nil && len(after) > 0 {
		b, ok := after[0].(*netlink.BpfFilter)
		ahead = ok && b.Name == name && b.Handle == nf.Handle
	}
	return &clsactFilter{filter: nf}, ahead, others, nil
}

// pickPriority is one below the lowest priority in use, or 1.
func pickPriority(fs []netlink.Filter) uint16 {
	if len(fs) == 0 {
		return 1
	}
	lowest := fs[0].Attrs().Priority
	for _, f := range fs {
		lowest = min(lowest, f.Attrs().Priority)
	}
	if lowest > 1 {
		return lowest - 1
	}
	return 1
}

// firstFree is the lowest priority no filter uses.
func firstFree(fs []netlink.Filter) uint16 {
	used := make([]int, 0, len(fs))
	for _, f := range fs {
		used = append(used, int(f.Attrs().Priority))
	}
	sort.Ints(used)
	p := 1
	for _, u := range used {
		if u == p {
			p++
		}
	}
	return uint16(p)
}

// freeHandle is ClsactHandle unless a filter of priority prio holds it.
func freeHandle(fs []netlink.Filter, prio uint16) uint32 {
	h := uint32(ClsactHandle)
	for taken := true; taken; {
		taken = false
		for _, f := range fs {
			if a := f.Attrs(); a.Priority == prio && a.Handle == h {
				h++
				taken = true
			}
		}
	}
	return h
}
