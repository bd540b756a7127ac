//go:build !linux

package bintest

import "os/exec"

// Command is exec.Command; only Linux can tie a child's life to its
// parent's.
func Command(name string, args ...string) *exec.Cmd {
	return exec.Command(name, args...)
}
