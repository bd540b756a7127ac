package bintest

import (
	"os/exec"
	"syscall"
)

// Command is exec.Command for a process a test starts and must not
// outlive it: the kernel kills the process when the test binary dies
// (a timeout, a crash, a kill of go test), so an endless pipeline never
// keeps writing after its test is gone.
func Command(name string, args ...string) *exec.Cmd {
	cmd := exec.Command(name, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	return cmd
}
