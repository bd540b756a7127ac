package cputime

import (
	"fmt"
	"os"
	"runtime/pprof"
)

// Profiled runs fn, writing a CPU profile of the process to path meanwhile
// unless path is empty: for a benchmark's child process (a server, a
// broker), as -cpuprofile does for the benchmark's own.
func Profiled(path string, fn func() error) error {
	if path == "" {
		return fn()
	}
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("cpu profile: %w", err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return fmt.Errorf("cpu profile: %w", err)
	}
	ferr := fn()
	pprof.StopCPUProfile()
	if err := f.Close(); err != nil && ferr == nil {
		ferr = fmt.Errorf("cpu profile: %w", err)
	}
	return ferr
}
