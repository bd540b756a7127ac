// Package enumname names the values of the schema's enums from tables. A
// generated enum's String looks its number up in the enum's descriptor
// every time; encoders that name several enums of every flow (the Parquet
// columns, OCSF's unmapped fields) take the name from a table built once.
package enumname

import (
	"google.golang.org/protobuf/reflect/protoreflect"

	flowpb "github.com/flowbus/flowbus/flow"
)

// Tables of the enums that encoders name for every flow.
var (
	FlowType         = New[flowpb.FlowType]()
	Verdict          = New[flowpb.Verdict]()
	DropReason       = New[flowpb.DropReason]()
	TrafficDirection = New[flowpb.TrafficDirection]()
	IPVersion        = New[flowpb.IPVersion]()
	L7FlowType       = New[flowpb.L7FlowType]()
	LostEventSource  = New[flowpb.LostEventSource]()
)

// Enum is a generated protobuf enum type.
type Enum interface {
	~int32
	String() string
	Descriptor() protoreflect.EnumDescriptor
}

// Table holds E's String for each number from 0 to the largest the schema
// names (numbers it skips included).
type Table[E Enum] struct{ names []string }

// maxTable bounds a table's length: an enum numbered beyond it is named
// by String past that number.
const maxTable = 1 << 12

// New builds E's table.
func New[E Enum]() Table[E] {
	var zero E
	vals := zero.Descriptor().Values()
	top := 0
	for i := range vals.Len() {
		top = max(top, int(vals.Get(i).Number()))
	}
	names := make([]string, min(top, maxTable)+1)
	for n := range names {
		names[n] = E(n).String()
	}
	return Table[E]{names}
}

// Name is v.String(): from the table for a number in it, else from String
// (a number unknown to the schema is named by its decimal digits).
func (t Table[E]) Name(v E) string {
	if v >= 0 && int(v) < len(t.names) {
		return t.names[v]
	}
	return v.String()
}
