package codec

import (
	"errors"
	"fmt"
	"strings"
	"unsafe"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/flowbus/flowbus/flow/flowjson"
	"github.com/flowbus/flowbus/flow/observer"
	"github.com/flowbus/flowbus/pipeline"
)

// Kind is what one decoded message held.
type Kind uint8

const (
	// KindFlow: the event holds a flow.
	KindFlow Kind = iota
	// KindLost: the event holds a LostEvent.
	KindLost
	// KindOther: a valid envelope with neither (a node status, or only
	// node_name and time); the event is left empty.
	KindOther
)

// ErrContentType is returned for a content type that is neither JSON nor
// protobuf.
var ErrContentType = errors.New("unknown content type")

// Decoder turns messages written by flowbus's broker sinks (or any producer
// of Hubble's envelope) back into events: one observer.GetFlowsResponse per
// message, as export JSON (application/json) or binary protobuf
// (application/x-protobuf). A Decoder is used by one goroutine at a time.
type Decoder struct {
	spares  Spares
	json    observer.ExportEvent
	jsonFl  observer.ExportEvent_Flow
	lenient protojson.UnmarshalOptions
}

// NewDecoder returns a Decoder.
func NewDecoder() *Decoder {
	return &Decoder{
		lenient: protojson.UnmarshalOptions{DiscardUnknown: true},
	}
}

// Decode decodes data, one message with the given content type, into ev,
// an empty event slot (pipeline.Batch.Next). Its content type is matched
// without parameters (`application/json; charset=utf-8` is JSON); an empty
// one is taken from the data: JSON when it starts with '{', protobuf
// otherwise. The flow is decoded into the slot's reused storage; ev.NodeName
// and ev.Time are the envelope's (Time aliases Flow.Time when they are
// equal). On an error, or for KindOther, the slot holds nothing to pass on:
// the caller drops it (Batch.Truncate).
// JSON fields or enum names that this schema does not know are discarded,
// as a reader of a newer Hubble's output must.
func (d *Decoder) Decode(contentType string, data []byte, ev *pipeline.Event) (Kind, error) {
	return d.decode(contentType, data, false, ev)
}

// DecodeOwned is Decode for data the caller hands over: a message buffer
// of its own that nothing writes again (a broker client's fresh copy of a
// record). A protobuf flow's strings then alias data itself, which saves
// Decode's one copy of each message; data lives as long as the event's
// strings do.
func (d *Decoder) DecodeOwned(contentType string, data []byte, ev *pipeline.Event) (Kind, error) {
	return d.decode(contentType, data, true, ev)
}

func (d *Decoder) decode(contentType string, data []byte, owned bool, ev *pipeline.Event) (Kind, error) {
	ct, _, _ := strings.Cut(contentType, ";")
	ct = strings.TrimSpace(ct)
	if ct == "" {
		ct = ContentTypeProtobuf
		for _, c := range data {
			if c == ' ' || c == '\t' || c == '\r' || c == '\n' {
				continue
			}
			if c == '{' {
				ct = ContentTypeJSON
			}
			break
		}
	}
	var (
		kind Kind
		err  error
	)
	switch {
	case strings.EqualFold(ct, ContentTypeJSON):
		kind, err = d.decodeJSON(data, ev)
	case strings.EqualFold(ct, ContentTypeProtobuf):
		// One copy of the message, unless it is handed over: the decoded
		// flow's strings share it.
		msg := unsafe.String(unsafe.SliceData(data), len(data))
		if !owned {
			msg = string(data)
		}
		kind, err = d.decodeProtobuf(msg, ev)
	default:
		return KindOther, fmt.Errorf("%w %q: want %s or %s", ErrContentType, contentType, ContentTypeJSON, ContentTypeProtobuf)
	}
	return kind, err
}

func (d *Decoder) decodeJSON(data []byte, ev *pipeline.Event) (Kind, error) {
	d.jsonFl.Flow = ev.FlowStorage()
	ee := &d.json
	ee.ResponseTypes = &d.jsonFl
	defer func() { ee.ResponseTypes, ee.Time, d.jsonFl.Flow = nil, nil, nil }()
	if err := flowjson.Unmarshal(data, ee); err != nil {
		if err2 := d.lenient.Unmarshal(data, ee); err2 != nil {
			return KindOther, fmt.Errorf("json: %w", err2)
		}
	}
	switch r := ee.ResponseTypes.(type) {
	case *observer.ExportEvent_Flow:
		ev.Flow = r.Flow
		setEnvelope(ev, ee.NodeName, ee.Time)
		return KindFlow, nil
	case *observer.ExportEvent_LostEvents:
		ev.Flow, ev.Lost = nil, r.LostEvents
		setEnvelope(ev, ee.NodeName, ee.Time)
		return KindLost, nil
	}
	return KindOther, nil
}

func (d *Decoder) decodeProtobuf(msg string, ev *pipeline.Event) (Kind, error) {
	r, err := d.spares.UnmarshalGetFlowsResponse(msg, ev.FlowStorage())
	if err != nil {
		return KindOther, fmt.Errorf("protobuf: %w", err)
	}
	if r.Flow != nil {
		ev.Flow, ev.NodeName, ev.Time = r.Flow, r.NodeName, r.Time
		return KindFlow, nil
	}
	if l := r.Other.GetLostEvents(); l != nil {
		ev.Flow, ev.Lost = nil, l
		setEnvelope(ev, r.Other.GetNodeName(), r.Other.GetTime())
		return KindLost, nil
	}
	return KindOther, nil
}

// setEnvelope sets ev's envelope fields; the time aliases the flow's when
// they are equal, as the kernel sources make them.
func setEnvelope(ev *pipeline.Event, node string, t *timestamppb.Timestamp) {
	ev.NodeName, ev.Time = node, t
	if ft := ev.Flow.GetTime(); t != nil && ft != nil && t.Seconds == ft.Seconds && t.Nanos == ft.Nanos {
		ev.Time = ft
	}
}
