//go:build linux

package ebpf

import "github.com/flowbus/flowbus/flow/monitor"

// recorder writes raw samples as a cilium-monitor stream
// (monitor.Recorder), which the cilium-monitor source replays with
// `path:`.
type recorder interface {
	Sample(cpu int, data []byte) error
	Lost(cpu int, n uint64) error
	Close() error
}

func newRecorder(path string) (recorder, error) {
	return monitor.CreateRecorder(path)
}
