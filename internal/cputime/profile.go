package cputime

import (
	"fmt"
	"os"
	"runtime/pprof"
)

// Profiled runs fn, writing a CPU profile of the process to path meanwhile
// unless path is empty: flowbus's --cpuprofile, and a benchmark's child
// process (a server, a broker) as -cpuprofile does for the benchmark's own.
// The profile's own errors start with label (the flag or variable that
// named path); fn's are returned as they are.
func Profiled(label, path string, fn func() error) error {
	if path == "" {
		return fn()
	}
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("%s: %w", label, err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return fmt.Errorf("%s: %w", label, err)
	}
	ferr := fn()
	pprof.StopCPUProfile()
	if err := f.Close(); err != nil && ferr == nil {
		ferr = fmt.Errorf("%s: %w", label, err)
	}
	return ferr
}
