//go:build linux

package ebpf

import (
	"fmt"
	"strings"

	"golang.org/x/sys/unix"
)

// Capabilities the source needs (linux/capability.h numbers).
const (
	capNetAdmin = 12
	capSysAdmin = 21
	capPerfmon  = 38
	capBPF      = 39
)

// missingCaps returns the names of the capabilities that the effective set
// eff (bit i = capability i) lacks. CAP_SYS_ADMIN stands in for CAP_BPF and
// CAP_PERFMON, as it does in the kernel.
func missingCaps(eff uint64) []string {
	has := func(c uint) bool { return eff&(1<<c) != 0 }
	var missing []string
	if !has(capBPF) && !has(capSysAdmin) {
		missing = append(missing, "CAP_BPF")
	}
	if !has(capNetAdmin) {
		missing = append(missing, "CAP_NET_ADMIN")
	}
	if !has(capPerfmon) && !has(capSysAdmin) {
		missing = append(missing, "CAP_PERFMON")
	}
	return missing
}

// effectiveCaps reads the calling thread's effective capability set.
func effectiveCaps() (uint64, error) {
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return 0, fmt.Errorf("capget: %w", err)
	}
	return uint64(data[0].Effective) | uint64(data[1].Effective)<<32, nil
}

// privilegeError is the one sentence the source fails with when it lacks
// capabilities.
func privilegeError(missing []string) error {
	return fmt.Errorf("ebpf source: missing %s; it needs CAP_BPF, CAP_NET_ADMIN and CAP_PERFMON (or root) to load and attach its BPF programs",
		strings.Join(missing, ", "))
}

// checkPrivileges fails with privilegeError if the process lacks a
// capability the source needs.
func checkPrivileges() error {
	eff, err := effectiveCaps()
	if err != nil {
		return err
	}
	if m := missingCaps(eff); len(m) > 0 {
		return privilegeError(m)
	}
	return nil
}
