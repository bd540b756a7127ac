package ebpf

import "github.com/flowbus/flowbus/sources/ciliummonitor"

// recorder writes raw samples as a cilium-monitor stream
// (ciliummonitor.Recorder), which the cilium-monitor source replays with
// `path:`.
type recorder interface {
	Sample(cpu int, data []byte) error
	Lost(cpu int, n uint64) error
	Close() error
}

func newRecorder(path string) (recorder, error) {
	return ciliummonitor.CreateRecorder(path)
}
