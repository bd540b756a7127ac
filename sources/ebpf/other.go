//go:build !linux

package ebpf

import (
	"fmt"
	"runtime"

	"github.com/flowbus/flowbus/pipeline"
)

func init() {
	pipeline.RegisterSource(pipeline.Spec{
		Type:    "ebpf",
		Summary: "loads flowbus's own BPF programs into the Linux kernel (Linux only)",
	}, New)
}

// Source is the ebpf source, which exists only on Linux.
type Source struct{ pipeline.Source }

// New fails: the ebpf source loads BPF programs into the Linux kernel, and
// this binary was built for another system. Every other component works.
func New(b *pipeline.Build, o *Options) (*Source, error) {
	return nil, fmt.Errorf("loads BPF programs into the Linux kernel, and this flowbus is built for %s; the other sources (generate, file, cilium-monitor) work here", runtime.GOOS)
}
