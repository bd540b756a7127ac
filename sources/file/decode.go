package file

import (
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/flowbus/flowbus/flow/flowjson"
	"github.com/flowbus/flowbus/flow/observer"
	"github.com/flowbus/flowbus/pipeline"
)

// lineKind is what one line of a Hubble JSON file holds.
type lineKind uint8

const (
	kindFlow lineKind = iota
	kindLost
	kindAgentEvent
	kindDebugEvent
	kindNodeStatus
	// kindOther is a valid object with none of the known event keys
	// (e.g. only node_name and time).
	kindOther
)

var kindNames = [...]string{
	kindFlow:       "flow",
	kindLost:       "lost_events",
	kindAgentEvent: "agent_event",
	kindDebugEvent: "debug_event",
	kindNodeStatus: "node_status",
	kindOther:      "other",
}

func (k lineKind) String() string { return kindNames[k] }

// lineDecoder turns one line into an event. All line decoding goes through
// it, so a faster decoder can replace the protojson one. A decoder is used
// by one goroutine at a time.
type lineDecoder interface {
	// decode parses line, an observer.ExportEvent (which includes
	// observer.GetFlowsResponse) in protojson form without its newline.
	// For kindFlow and kindLost it fills ev: ev.Flow (a decoder that can
	// reuse storage takes it from ev.FlowStorage()) or ev.Lost, and the
	// envelope's ev.NodeName and ev.Time exactly as read (Time nil when
	// absent). For the other kinds ev is left as it was. lossy reports that
	// the line decoded only after discarding fields or enum names this
	// schema does not know (a newer Hubble).
	decode(line []byte, ev *pipeline.Event) (kind lineKind, lossy bool, err error)
}

// protojsonDecoder decodes lines with protojson, as Hubble's generated
// UnmarshalJSON does: proto and lowerCamel names, enums by name or number.
// Unlike Hubble it does not reject a line for fields or enum names it does
// not know: it retries such a line with DiscardUnknown and reports it as
// lossy, so that files from newer Hubble versions still load.
type protojsonDecoder struct {
	strict, lenient protojson.UnmarshalOptions
	ee              observer.ExportEvent
}

func newProtojsonDecoder() *protojsonDecoder {
	return &protojsonDecoder{lenient: protojson.UnmarshalOptions{DiscardUnknown: true}}
}

func (d *protojsonDecoder) decode(line []byte, ev *pipeline.Event) (lineKind, bool, error) {
	lossy := false
	if err := d.strict.Unmarshal(line, &d.ee); err != nil {
		// protojson has no typed errors: a second, lenient pass tells an
		// unknown field or enum name apart from a malformed line.
		if err2 := d.lenient.Unmarshal(line, &d.ee); err2 != nil {
			return kindOther, false, err2
		}
		lossy = true
	}
	ee := &d.ee
	kind := kindOther
	switch r := ee.ResponseTypes.(type) {
	case *observer.ExportEvent_Flow:
		// protojson resets and reallocates the message tree on every call,
		// so the decoded Flow is handed over as is.
		ev.Flow = r.Flow
		kind = kindFlow
	case *observer.ExportEvent_LostEvents:
		ev.Lost = r.LostEvents
		kind = kindLost
	case *observer.ExportEvent_AgentEvent:
		kind = kindAgentEvent
	case *observer.ExportEvent_DebugEvent:
		kind = kindDebugEvent
	case *observer.ExportEvent_NodeStatus:
		kind = kindNodeStatus
	}
	if kind == kindFlow || kind == kindLost {
		ev.NodeName = ee.NodeName
		ev.Time = ee.Time
	}
	// Drop the references so the scratch envelope does not keep the
	// event's messages alive.
	ee.ResponseTypes, ee.Time = nil, nil
	return kind, lossy, nil
}

// flowjsonDecoder decodes lines with flow/flowjson: protojson's results
// (flowjson falls back to protojson itself for rare forms) without
// reflection, into the event slot's reused Flow storage, with the strings
// of consecutive lines sharing blocks (flowjson.Decoder). Lines with fields
// or enum names this schema does not know get the same lenient retry as
// protojsonDecoder.
type flowjsonDecoder struct {
	dec     flowjson.Decoder
	lenient protojson.UnmarshalOptions
	ee      observer.ExportEvent
	wrap    observer.ExportEvent_Flow
	// time is spare storage for the envelope time when the last one was
	// not handed over (it equalled the flow's time, which ev.Time aliases).
	time *timestamppb.Timestamp
}

func newFlowjsonDecoder() *flowjsonDecoder {
	return &flowjsonDecoder{lenient: protojson.UnmarshalOptions{DiscardUnknown: true}}
}

func (d *flowjsonDecoder) decode(line []byte, ev *pipeline.Event) (lineKind, bool, error) {
	prev := ev.Flow
	d.wrap.Flow = ev.FlowStorage()
	d.ee.ResponseTypes = &d.wrap
	d.ee.Time = d.time
	ee := &d.ee
	defer func() {
		// Drop the references so the scratch envelope does not keep the
		// event's messages alive, nor reuse them for the next line.
		ee.ResponseTypes, ee.Time, d.wrap.Flow = nil, nil, nil
	}()
	lossy := false
	if err := d.dec.Unmarshal(line, ee); err != nil {
		if err2 := d.lenient.Unmarshal(line, ee); err2 != nil {
			ev.Flow = prev
			return kindOther, false, err2
		}
		lossy = true
	}
	kind := kindOther
	ev.Flow = prev
	switch r := ee.ResponseTypes.(type) {
	case *observer.ExportEvent_Flow:
		ev.Flow = r.Flow
		kind = kindFlow
	case *observer.ExportEvent_LostEvents:
		ev.Lost = r.LostEvents
		kind = kindLost
	case *observer.ExportEvent_AgentEvent:
		kind = kindAgentEvent
	case *observer.ExportEvent_DebugEvent:
		kind = kindDebugEvent
	case *observer.ExportEvent_NodeStatus:
		kind = kindNodeStatus
	}
	d.time = ee.Time
	if kind == kindFlow || kind == kindLost {
		ev.NodeName = ee.NodeName
		ev.Time = ee.Time
		if t, ft := ee.Time, ev.Flow.GetTime(); t != nil && ft != nil && t.Seconds == ft.Seconds && t.Nanos == ft.Nanos {
			// The usual case: the envelope time is the flow's. Alias it,
			// as the kernel sources do, and keep the decoded copy.
			ev.Time = ft
		} else {
			d.time = nil // handed over
		}
	}
	return kind, lossy, nil
}
