package codec

import (
	"errors"
	"fmt"
	"strings"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
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
	json    observer.ExportEvent
	jsonFl  observer.ExportEvent_Flow
	pb      observer.GetFlowsResponse
	pbFl    observer.GetFlowsResponse_Flow
	lenient protojson.UnmarshalOptions
	merge   proto.UnmarshalOptions
}

// NewDecoder returns a Decoder.
func NewDecoder() *Decoder {
	return &Decoder{
		lenient: protojson.UnmarshalOptions{DiscardUnknown: true},
		merge:   proto.UnmarshalOptions{Merge: true},
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
		kind, err = d.decodeProtobuf(data, ev)
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

func (d *Decoder) decodeProtobuf(data []byte, ev *pipeline.Event) (Kind, error) {
	oneof, err := lastOneof(data)
	if err != nil {
		return KindOther, fmt.Errorf("protobuf: %w", err)
	}
	env := &d.pb
	if oneof == fieldFlow {
		// Decode into the slot's storage: the flow member is set before
		// the merge, and the message is the last member in the data.
		f := ev.FlowStorage()
		proto.Reset(f)
		d.pbFl.Flow = f
		env.ResponseTypes = &d.pbFl
	}
	defer func() { env.ResponseTypes, env.Time, env.NodeName, d.pbFl.Flow = nil, nil, "", nil }()
	if err := d.merge.Unmarshal(data, env); err != nil {
		return KindOther, fmt.Errorf("protobuf: %w", err)
	}
	switch r := env.ResponseTypes.(type) {
	case *observer.GetFlowsResponse_Flow:
		ev.Flow = r.Flow
		setEnvelope(ev, env.NodeName, env.Time)
		return KindFlow, nil
	case *observer.GetFlowsResponse_LostEvents:
		ev.Flow, ev.Lost = nil, r.LostEvents
		setEnvelope(ev, env.NodeName, env.Time)
		return KindLost, nil
	}
	return KindOther, nil
}

// lastOneof returns the field number of the last member of the envelope's
// oneof (flow, node_status, lost_events) in data, which is the one a
// decoder keeps, or 0 when there is none. It checks only the framing of
// the top-level fields; the decoder checks the rest.
func lastOneof(data []byte) (protowire.Number, error) {
	var last protowire.Number
	for len(data) > 0 {
		num, typ, n := protowire.ConsumeTag(data)
		if n < 0 {
			return 0, protowire.ParseError(n)
		}
		data = data[n:]
		m := protowire.ConsumeFieldValue(num, typ, data)
		if m < 0 {
			return 0, protowire.ParseError(m)
		}
		data = data[m:]
		if num >= fieldFlow && num <= fieldLostEvents && typ == protowire.BytesType {
			last = num
		}
	}
	return last, nil
}

// setEnvelope sets ev's envelope fields; the time aliases the flow's when
// they are equal, as the kernel sources make them.
func setEnvelope(ev *pipeline.Event, node string, t *timestamppb.Timestamp) {
	ev.NodeName, ev.Time = node, t
	if ft := ev.Flow.GetTime(); t != nil && ft != nil && t.Seconds == ft.Seconds && t.Nanos == ft.Nanos {
		ev.Time = ft
	}
}
