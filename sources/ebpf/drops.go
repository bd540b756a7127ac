//go:build linux

package ebpf

import (
	"encoding/binary"
	"fmt"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/flowbus/flowbus/bpf"
	flowpb "github.com/flowbus/flowbus/flow"
)

// KernelDropReasonKey is the key of Flow.extensions (a
// google.protobuf.Struct) that holds the kernel's drop reason name.
const KernelDropReasonKey = "kernel_drop_reason"

// annotateDrop adds what a drop sample of flowbus's program carries beyond
// Cilium's fields: the kernel's reason (in `line`), the interface, and
// where the packet was dropped (traffic_direction: INGRESS when it had
// arrived on the device, EGRESS on its way out).
func (s *Source) annotateDrop(f *flowpb.Flow, raw []byte) {
	if len(raw) < bpf.DropHeaderLen {
		return
	}
	code := binary.NativeEndian.Uint16(raw[28:30])
	ifindex := binary.NativeEndian.Uint32(raw[32:36])
	// file 0 is no Cilium source file: the location is the kernel's.
	f.File = nil
	if f.DropReason == bpf.DropReasonUnknown {
		// No Cilium reason means the same: drop_reason and
		// event_type.sub_type stay non-zero (0 reads "Success" in Cilium's
		// tools), drop_reason_desc says unknown.
		f.DropReasonDesc = flowpb.DropReason_DROP_REASON_UNKNOWN
	}
	f.Extensions = s.reasonAny(code)
	switch raw[bpf.DropDirOffset] {
	case bpf.DropDirIngress:
		f.TrafficDirection = flowpb.TrafficDirection_INGRESS
	case bpf.DropDirEgress:
		f.TrafficDirection = flowpb.TrafficDirection_EGRESS
	}
	if ifindex != 0 {
		if f.Interface == nil {
			f.Interface = &flowpb.NetworkInterface{}
		}
		f.Interface.Index, f.Interface.Name = ifindex, ""
	}
}

// reasonAny returns a fresh Any holding {kernel_drop_reason: name}. The
// encoded Struct is cached per reason; each Any gets its own copy, because
// the flow's slot owns every byte the flow reaches and the next user of the
// slot may overwrite it.
func (s *Source) reasonAny(code uint16) *anypb.Any {
	if s.reasonAnys == nil {
		s.reasonAnys = map[uint16][]byte{}
	}
	val, ok := s.reasonAnys[code]
	if !ok {
		name, known := s.reasons[uint32(code)]
		switch {
		case code == bpf.DropLineUnknown:
			name = "SUBSYSTEM"
		case !known:
			name = fmt.Sprintf("REASON_%d", code)
		}
		st := &structpb.Struct{Fields: map[string]*structpb.Value{
			KernelDropReasonKey: structpb.NewStringValue(name),
		}}
		var err error
		val, err = proto.MarshalOptions{Deterministic: true}.Marshal(st)
		if err != nil {
			return nil
		}
		s.reasonAnys[code] = val
	}
	return &anypb.Any{TypeUrl: "type.googleapis.com/google.protobuf.Struct", Value: append([]byte(nil), val...)}
}

// KernelDropReason returns the kernel drop reason a flow of this source
// carries in its extensions, or "".
func KernelDropReason(f *flowpb.Flow) string {
	if f.GetExtensions() == nil {
		return ""
	}
	var st structpb.Struct
	if err := f.Extensions.UnmarshalTo(&st); err != nil {
		return ""
	}
	return st.Fields[KernelDropReasonKey].GetStringValue()
}
