package enumname

import "testing"

// TestName: a table's name is String's, for every number (those the
// schema skips, those beyond it and negative ones included).
func TestName(t *testing.T) {
	for _, c := range []struct {
		name  string
		check func(n int32) (got, want string)
	}{
		{"type", against(FlowType)},
		{"verdict", against(Verdict)},
		{"drop reason", against(DropReason)},
		{"traffic direction", against(TrafficDirection)},
		{"ip version", against(IPVersion)},
		{"l7 type", against(L7FlowType)},
		{"lost event source", against(LostEventSource)},
	} {
		t.Run(c.name, func(t *testing.T) {
			for n := int32(-3); n < 300; n++ {
				if got, want := c.check(n); got != want {
					t.Errorf("number %d: %q, want %q", n, got, want)
				}
			}
			for _, n := range []int32{maxTable, maxTable + 1, 1<<31 - 1, -1 << 31} {
				if got, want := c.check(n); got != want {
					t.Errorf("number %d: %q, want %q", n, got, want)
				}
			}
		})
	}
}

// against returns a check of t's names against String.
func against[E Enum](t Table[E]) func(int32) (string, string) {
	return func(n int32) (string, string) { return t.Name(E(n)), E(n).String() }
}
