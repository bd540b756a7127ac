package flowjson

import flowpb "github.com/flowbus/flowbus/flow"

// prefetch loads a word of each message the encoder is about to read:
// those f points to, the endpoints' lists and workloads, the TCP or UDP
// header and its flags. It returns the words' sum, for the caller to keep,
// so that the loads stay in the code.
//
// A flow usually reaches the encoder cold: a source built it on another
// core, and it then waited in a sink's buffer while thousands of others
// went through the caches. The encoder reads its messages one at a time,
// each read deciding the next, so each message costs a full memory
// latency. These loads depend on nothing but f and its pointers, so the
// processor runs them side by side and the messages arrive together. On
// the generator's flows going to Parquet, the JSON took about a fifth
// less time with it.
func prefetch(f *flowpb.Flow) uintptr {
	var s uintptr
	if m := f.Time; m != nil {
		s += uintptr(m.Nanos)
	}
	if len(f.Uuid) > 0 {
		s += uintptr(f.Uuid[0])
	}
	if m := f.Emitter; m != nil {
		s += uintptr(len(m.Name))
	}
	if m := f.Ethernet; m != nil {
		s += uintptr(len(m.Source))
	}
	if m := f.IP; m != nil {
		s += uintptr(len(m.Source))
	}
	l4 := f.L4
	if l4 != nil && l4.Protocol != nil {
		s++
	}
	src, dst := f.Source, f.Destination
	if src != nil {
		s += uintptr(src.Identity)
	}
	if dst != nil {
		s += uintptr(dst.Identity)
	}
	if len(f.NodeLabels) > 0 {
		s += uintptr(len(f.NodeLabels[0]))
	}
	if m := f.L7; m != nil {
		s += uintptr(m.Type)
	}
	if m := f.EventType; m != nil {
		s += uintptr(m.Type)
	}
	if m := f.SourceService; m != nil {
		s += uintptr(len(m.Name))
	}
	if m := f.DestinationService; m != nil {
		s += uintptr(len(m.Name))
	}
	if m := f.IsReply; m != nil && m.Value {
		s++
	}
	if m := f.Interface; m != nil {
		s += uintptr(m.Index)
	}
	// The next levels: these wait for the loads above, all at once.
	if l4 != nil {
		// A oneof's wrapper may be a nil pointer.
		switch p := l4.Protocol.(type) {
		case *flowpb.Layer4_TCP:
			if p != nil && p.TCP != nil {
				s += uintptr(p.TCP.SourcePort)
				if fl := p.TCP.Flags; fl != nil && fl.SYN {
					s++
				}
			}
		case *flowpb.Layer4_UDP:
			if p != nil && p.UDP != nil {
				s += uintptr(p.UDP.SourcePort)
			}
		}
	}
	s += prefetchEndpoint(src) + prefetchEndpoint(dst)
	return s
}

// prefetchEndpoint is prefetch's second level for an endpoint: its first
// label and its first workload.
func prefetchEndpoint(e *flowpb.Endpoint) uintptr {
	var s uintptr
	if e != nil {
		if len(e.Labels) > 0 {
			s += uintptr(len(e.Labels[0]))
		}
		if len(e.Workloads) > 0 && e.Workloads[0] != nil {
			s += uintptr(len(e.Workloads[0].Name))
		}
	}
	return s
}
