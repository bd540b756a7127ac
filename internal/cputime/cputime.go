// Package cputime reads the CPU time the process has used, for benchmarks
// that report CPU per operation: on a shared machine it varies far less
// than the wall clock, and it includes the garbage collector's work and
// any in-process peer (an embedded broker).
package cputime

import (
	"syscall"
	"time"
)

// Process is the user and system CPU time the whole process has used
// (0 when the system cannot say).
func Process() time.Duration {
	ru := rusage()
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// Switches is how many times the process's threads have left their CPU:
// the context switches they asked for (waiting) and those the kernel made
// (preempting them), 0 when the system cannot say. Benchmarks whose
// goroutines hand work to each other report it per operation: a machine
// with more runnable threads than cores switches, and refills its caches,
// far more often.
func Switches() int64 {
	ru := rusage()
	return int64(ru.Nvcsw + ru.Nivcsw)
}

// rusage is the process's resource usage, all zero when the system cannot
// say.
func rusage() syscall.Rusage {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return syscall.Rusage{}
	}
	return ru
}
