package flowfilter

// Predicates on the event as a whole: UUID, verdict, drop reason,
// traffic direction, interface, event type, reply, trace IDs, encryption.

import (
	"slices"

	flowpb "github.com/flowbus/flowbus/flow"
)

// uuid: exact string equality with flow.uuid.
func uuidFilter(ids []string) (predicate, error) {
	if len(ids) == 0 {
		return nil, nil
	}
	return func(f *flowpb.Flow) bool {
		return slices.Contains(ids, f.GetUuid())
	}, nil
}

// traffic_direction: membership of flow.traffic_direction.
func trafficDirectionFilter(dirs []flowpb.TrafficDirection) (predicate, error) {
	if len(dirs) == 0 {
		return nil, nil
	}
	return func(f *flowpb.Flow) bool { return slices.Contains(dirs, f.GetTrafficDirection()) }, nil
}

// verdict: membership of flow.verdict.
func verdictFilter(vs []flowpb.Verdict) (predicate, error) {
	if len(vs) == 0 {
		return nil, nil
	}
	return func(f *flowpb.Flow) bool { return slices.Contains(vs, f.GetVerdict()) }, nil
}

// drop_reason_desc: the flow must be DROPPED and its drop_reason_desc in
// the list.
func dropReasonFilter(rs []flowpb.DropReason) (predicate, error) {
	if len(rs) == 0 {
		return nil, nil
	}
	return func(f *flowpb.Flow) bool {
		return f.GetVerdict() == flowpb.Verdict_DROPPED && slices.Contains(rs, f.GetDropReasonDesc())
	}, nil
}

// interface: flow.interface must be set, and some entry must have (index 0
// or equal) and (name empty or equal).
func interfaceFilter(ifs []*flowpb.NetworkInterface) (predicate, error) {
	if len(ifs) == 0 {
		return nil, nil
	}
	type iface struct {
		index uint32
		name  string
	}
	list := make([]iface, len(ifs))
	for i, e := range ifs {
		list[i] = iface{e.GetIndex(), e.GetName()}
	}
	return func(f *flowpb.Flow) bool {
		fi := f.GetInterface()
		if fi == nil {
			return false
		}
		for _, e := range list {
			if (e.index == 0 || e.index == fi.GetIndex()) && (e.name == "" || e.name == fi.GetName()) {
				return true
			}
		}
		return false
	}, nil
}

// event_type: flow.event_type must be set, and some entry must have (type 0
// or equal type) and (not match_sub_type, or equal sub_type). Type 0 is a
// wildcard. (Agent and debug events do not reach this transform, and
// LostEvents always pass.)
func eventTypeFilter(ets []*flowpb.EventTypeFilter) (predicate, error) {
	if len(ets) == 0 {
		return nil, nil
	}
	type et struct {
		typ, sub int32
		matchSub bool
	}
	list := make([]et, len(ets))
	for i, e := range ets {
		list[i] = et{e.GetType(), e.GetSubType(), e.GetMatchSubType()}
	}
	return func(f *flowpb.Flow) bool {
		fe := f.GetEventType()
		if fe == nil {
			return false
		}
		for _, e := range list {
			if (e.typ == 0 || e.typ == fe.GetType()) && (!e.matchSub || e.sub == fe.GetSubType()) {
				return true
			}
		}
		return false
	}, nil
}

// reply: if is_reply is unset and the verdict is not DROPPED, no match;
// otherwise is_reply's value (unset counts as false) must be in the list.
func replyFilter(rs []bool) (predicate, error) {
	if len(rs) == 0 {
		return nil, nil
	}
	return func(f *flowpb.Flow) bool {
		if f.GetIsReply() == nil && f.GetVerdict() != flowpb.Verdict_DROPPED {
			return false
		}
		return slices.Contains(rs, f.GetIsReply().GetValue())
	}, nil
}

// trace_id: exact equality with trace_context.parent.trace_id ("" matches
// flows without one).
func traceIDFilter(ids []string) (predicate, error) {
	if len(ids) == 0 {
		return nil, nil
	}
	return func(f *flowpb.Flow) bool {
		return slices.Contains(ids, f.GetTraceContext().GetParent().GetTraceId())
	}, nil
}

// ip_trace_id: ip_trace_id.trace_id in the list (0 matches flows without
// one).
func ipTraceIDFilter(ids []uint64) (predicate, error) {
	if len(ids) == 0 {
		return nil, nil
	}
	return func(f *flowpb.Flow) bool {
		return slices.Contains(ids, f.GetIpTraceId().GetTraceId())
	}, nil
}

// encrypted: IP.encrypted (false without IP) in the list.
func encryptedFilter(vs []bool) (predicate, error) {
	if len(vs) == 0 {
		return nil, nil
	}
	return func(f *flowpb.Flow) bool {
		return slices.Contains(vs, f.GetIP().GetEncrypted())
	}, nil
}
