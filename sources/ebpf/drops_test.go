//go:build linux

package ebpf

import (
	"testing"

	flowpb "github.com/flowbus/flowbus/flow"
)

// Each drop flow owns the bytes of its extensions: overwriting one flow's
// (as the next user of its slot may) changes neither the cache nor the next
// flow with the same reason.
func TestReasonAnyOwnsItsBytes(t *testing.T) {
	s := &Source{reasons: map[uint32]string{2: "NO_SOCKET"}}
	first := &flowpb.Flow{Extensions: s.reasonAny(2)}
	for i := range first.Extensions.Value {
		first.Extensions.Value[i] = 0xDE
	}
	second := &flowpb.Flow{Extensions: s.reasonAny(2)}
	if got := KernelDropReason(second); got != "NO_SOCKET" {
		t.Fatalf("kernel reason after an earlier flow's bytes were overwritten: %q, want NO_SOCKET", got)
	}
}
