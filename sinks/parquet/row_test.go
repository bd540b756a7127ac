package parquet

import (
	"bytes"
	"fmt"
	"slices"
	"strings"
	"testing"
	"unsafe"

	flowpb "github.com/flowbus/flowbus/flow"
	"github.com/flowbus/flowbus/flow/enumname"
)

// TestEnumName: a column's enum name is what the generated String gives,
// for every number (those the schema skips, those beyond it and negative
// ones included), and null for zero.
func TestEnumName(t *testing.T) {
	for _, c := range []struct {
		name  string
		check func(n int32) (got, want string)
	}{
		{"type", against(enumname.FlowType, flowpb.FlowType(0))},
		{"verdict", against(enumname.Verdict, flowpb.Verdict(0))},
		{"drop reason", against(enumname.DropReason, flowpb.DropReason(0))},
		{"traffic direction", against(enumname.TrafficDirection, flowpb.TrafficDirection(0))},
		{"ip version", against(enumname.IPVersion, flowpb.IPVersion(0))},
		{"l7 type", against(enumname.L7FlowType, flowpb.L7FlowType(0))},
	} {
		t.Run(c.name, func(t *testing.T) {
			for n := int32(-3); n < 300; n++ {
				if got, want := c.check(n); got != want {
					t.Errorf("number %d: %q, want %q", n, got, want)
				}
			}
			for _, n := range []int32{1 << 12, 1<<31 - 1, -1 << 31} {
				if got, want := c.check(n); got != want {
					t.Errorf("number %d: %q, want %q", n, got, want)
				}
			}
		})
	}
}

// against returns a check of enumName against String for E.
func against[E enumname.Enum](names enumname.Table[E], _ E) func(int32) (string, string) {
	return func(n int32) (string, string) {
		want := ""
		if n != 0 {
			want = E(n).String()
		}
		return enumName(names, E(n)), want
	}
}

// TestStringStore: a copy keeps the bytes its string had, though they
// change, over as many slabs as the copies take, and one longer than
// storeMax too; equal strings share a copy until a reset, after which a
// string gets a new copy in the reused storage.
func TestStringStore(t *testing.T) {
	var st stringStore
	var want, got []string
	var bufs [][]byte
	for i := range 2 * storeSlab / 16 {
		buf := fmt.Appendf(nil, "k8s:app=pod-%d", i)
		if i == 7 {
			buf = bytes.Repeat([]byte{'x'}, storeMax+1)
		}
		want = append(want, string(buf))
		got = append(got, st.copy(unsafe.String(&buf[0], len(buf))))
		bufs = append(bufs, buf)
	}
	for _, buf := range bufs {
		for i := range buf {
			buf[i] = '#'
		}
	}
	if !slices.Equal(got, want) {
		t.Fatal("copies changed with their originals")
	}
	if st.next < 2 {
		t.Errorf("%d slabs, want the copies over several", st.next)
	}
	if st.copy("") != "" {
		t.Error("the copy of an empty string is not empty")
	}

	st.reset()
	a, b := st.copy(strings.Clone("k8s:app=shared")), st.copy(strings.Clone("k8s:app=shared"))
	if unsafe.StringData(a) != unsafe.StringData(b) {
		t.Error("equal strings have a copy each")
	}
	st.reset()
	c := st.copy("k8s:app=shared")
	st.copy("k8s:app=zzzzzz") // where a was, with c a copy of its own
	if c != "k8s:app=shared" {
		t.Errorf("a copy made after a reset reads %q: it is one made before", c)
	}
}
