package pipeline

import (
	"context"
	"fmt"
	"log/slog"
	"reflect"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"gopkg.in/yaml.v3"

	flowpb "github.com/flowbus/flowbus/flow"
	"github.com/flowbus/flowbus/pipeline/config"
)

// Source produces events.
type Source interface {
	// Run emits batches to out until ctx is cancelled (then it returns nil)
	// or, for a finite source, until its input is exhausted (it returns nil).
	// Any other error stops the pipeline.
	Run(ctx context.Context, out Output) error
}

// Output is where a source emits.
type Output interface {
	// Emit passes ownership of b downstream. It blocks while a downstream
	// buffer with when_full: block is full, and returns ctx.Err() once ctx
	// is done (b is then released by the runtime).
	Emit(ctx context.Context, b *Batch) error
	// Lost reports n events that the source lost before it could emit them
	// (a perf ring overflow, a Cilium monitor LOST payload). The runtime
	// turns them into LostEvents with the given source; cpu < 0 means
	// unknown and leaves LostEvent.cpu unset.
	Lost(source flowpb.LostEventSource, cpu int32, n uint64)
}

// Transform changes batches in place.
type Transform interface {
	// Process transforms b, which it owns for the call. It removes the
	// events it drops with b.Keep (so LostEvents always pass) and may modify
	// the rest. Process runs on a single goroutine.
	Process(b *Batch)
}

// Sink delivers events to their destination.
type Sink interface {
	// Write delivers the events of b, which it borrows read-only until it
	// returns. It returns once every event is acknowledged or given up
	// (a LateLoser may return earlier when b.LateDelivery() is true);
	// failed is the number of events of b that it gave up on after its
	// retries, flowbus's own LostEvents (Event.Reported) included. err is
	// non-nil only when ctx ended first; the events not yet acknowledged
	// are then included in failed.
	//
	// The runtime gives the sink reported LostEvents only in batches of
	// their own: it reports failed events of other batches as lost, and
	// reports the losses of failed LostEvents again at the next flush.
	Write(ctx context.Context, b *Batch) (failed int, err error)
	// Close flushes what is pending and releases the sink's resources,
	// bounded by ctx.
	Close(ctx context.Context) error
}

// LateLoser is implemented by sinks that accept events before they are
// durable: a Parquet sink's rows become visible only when the file holding
// them is complete, and a broker sink may return from Write while the
// broker's acknowledgements of a batch are still to come (see
// Batch.LateDelivery). Before the pipeline starts, the runtime gives such a
// sink a function to call, from any goroutine and at the latest in Close,
// when n counted events (not Event.Reported) that earlier Writes accepted
// are lost after all (the file could not be completed): the summary moves
// them from delivered to lost, and they are reported in a LostEvent like a
// failed Write's. Counters never go down: the sink's
// flowbus_component_events_out_total keeps counting them as accepted, and
// flowbus_component_events_lost_total{reason="sink_late"} counts them.
type LateLoser interface {
	SetLateLoss(lose func(n int))
}

// Starter is implemented by components that connect or attach before the
// pipeline runs (a broker client, BPF programs). Start failing stops the
// pipeline before any source runs; the components started before it are
// stopped (sinks closed) in reverse order. A sink whose broker cannot be
// reached fails Start only when Build.RequireHealthy is set; otherwise it
// starts, stays unready (Readier) and keeps connecting in the background,
// its Write waiting for the connection so that the buffer's when_full
// decides what happens to the events meanwhile.
type Starter interface {
	Start(ctx context.Context) error
}

// Stopper is implemented by sources and transforms that hold something
// until they are stopped (attached BPF programs, an informer, a stream).
// The runtime calls Stop once: after the drain, in the reverse of the
// start order (sources, then transforms, before the sinks are closed), or
// when a later component failed to start. Stop must also work when Start
// was never called or Run never ran. Sinks release what they hold in
// Close.
type Stopper interface {
	Stop(ctx context.Context) error
}

// Readier is implemented by components that can be unready while running
// (a sink that cannot reach its broker). /readyz reports the errors.
type Readier interface {
	Ready() error
}

// ReadyState keeps a component's readiness for its Ready method: the error
// last set, nil while ready. Gauge, when set, shows the same as 1 (ready)
// or 0. The zero value is ready; it is safe for concurrent use.
type ReadyState struct {
	Gauge prometheus.Gauge

	mu  sync.Mutex
	err error
}

// Set records err (nil: ready).
func (r *ReadyState) Set(err error) {
	r.mu.Lock()
	r.err = err
	r.mu.Unlock()
	if r.Gauge != nil {
		if err == nil {
			r.Gauge.Set(1)
		} else {
			r.Gauge.Set(0)
		}
	}
}

// Err returns the error last set, nil while ready.
func (r *ReadyState) Err() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.err
}

// DropKind says how the summary counts the events a transform removes.
type DropKind int

const (
	// DropsNone: the transform never removes events.
	DropsNone DropKind = iota
	// DropsFiltered counts removed events as filtered.
	DropsFiltered
	// DropsSampled counts removed events as sampled.
	DropsSampled
	// DropsRateLimited counts removed events as rate_limited.
	DropsRateLimited
)

// Build is what a constructor gets to build one component, with its
// decoded options.
type Build struct {
	// Name is the component's name in the config; Type its type.
	Name, Type string
	// NodeName is flowbus's node name (config node_name, or the host name).
	NodeName string
	// Dir is the directory of the config file, for relative paths.
	Dir string
	// Encoding is a sink's `encoding` (json, protobuf or ocsf); empty
	// elsewhere.
	Encoding string
	// RawData is the encoding's raw_data option (`encoding: {type: ocsf,
	// raw_data: true}`): the ocsf encoding adds the Hubble export JSON.
	RawData bool
	// Log is the component's logger.
	Log *slog.Logger
	// Metrics registers the component's collectors; it adds the labels
	// component=Name and type=Type.
	Metrics prometheus.Registerer
	// RequireHealthy is set by `run --require-healthy`: a sink that cannot
	// reach its broker fails Start instead of retrying in the background.
	RequireHealthy bool

	// node is the component's mapping, for positions.
	node *yaml.Node
}

// At returns the YAML node of the value at the dotted key path (`tls`,
// `tls.ca_file`) in the component's mapping; when a key of the path is
// absent it returns the deepest node found, and the component's mapping
// for an empty path. It is nil only when the component has no mapping
// (a constructor called without one, in a test).
func (b *Build) At(path string) *yaml.Node {
	n := b.node
	if path == "" {
		return n
	}
	for _, k := range strings.Split(path, ".") {
		for n != nil && n.Kind == yaml.AliasNode {
			n = n.Alias
		}
		if n == nil || n.Kind != yaml.MappingNode {
			return n
		}
		found := false
		for i := 0; i+1 < len(n.Content); i += 2 {
			if n.Content[i].Value == k {
				n, found = n.Content[i+1], true
				break
			}
		}
		if !found {
			return n
		}
	}
	return n
}

// Errorf returns a configuration error at the value of the dotted key path
// (see At), so that a constructor's errors carry the file, line and column
// like the decoder's.
func (b *Build) Errorf(path, format string, args ...any) *config.Error {
	return config.Errorf(b.At(path), format, args...)
}

// Spec describes a component type: the reference (`flowbus components`,
// docs/components.md, README) is generated from it and from the `yaml`,
// `doc`, `default`, `required`, `example` and `type` tags of its options
// struct (see config.Keys).
type Spec struct {
	// Type is the name used in `type:`.
	Type string
	// Summary is one line: what the component does.
	Summary string
	// Description is the rest of what a user must know (delivery, losses,
	// readiness), as one paragraph of plain text; optional.
	Description string
	// Example is a YAML mapping of one component of this type, as it is
	// written under its name (type and inputs included). A test decodes it.
	Example string
}

// Component is a registered component type, for the reference.
type Component struct {
	// Kind is "source", "transform" or "sink".
	Kind string
	Spec
	// Drops is how a transform's removed events are counted.
	Drops DropKind
	// Keys are the component's own keys (the common ones, type, inputs,
	// buffer and encoding, are not listed).
	Keys []config.Key

	options any // a pointer to a zero options struct
	build   func(b *Build, n *yaml.Node) (any, error)
}

// Make decodes n, a component's mapping, into a new options struct O
// (unknown keys, types, required keys and defaults from its tags) and calls
// the constructor f with it. The runtime builds every component with it;
// tests use it to build one component from YAML.
func Make[O, T any](b *Build, n *yaml.Node, f func(*Build, *O) (T, error)) (T, error) {
	var o O
	var zero T
	if err := config.Decode(n, &o); err != nil {
		return zero, err
	}
	if b == nil {
		b = &Build{}
	}
	b.node = n
	t, err := f(b, &o)
	if err != nil {
		return zero, err
	}
	return t, nil
}

// RegisterSource makes a source type known; its package calls it from
// init. f builds one source from its decoded options.
func RegisterSource[O any, T Source](s Spec, f func(b *Build, o *O) (T, error)) {
	register(kindSource, s, DropsNone, new(O), func(b *Build, n *yaml.Node) (any, error) { return Make(b, n, f) })
}

// RegisterTransform makes a transform type known, with how the summary
// counts the events it removes.
func RegisterTransform[O any, T Transform](s Spec, drops DropKind, f func(b *Build, o *O) (T, error)) {
	register(kindTransform, s, drops, new(O), func(b *Build, n *yaml.Node) (any, error) { return Make(b, n, f) })
}

// RegisterSink makes a sink type known.
func RegisterSink[O any, T Sink](s Spec, f func(b *Build, o *O) (T, error)) {
	register(kindSink, s, DropsNone, new(O), func(b *Build, n *yaml.Node) (any, error) { return Make(b, n, f) })
}

var registry = struct {
	sync.Mutex
	types [3]map[string]*Component // by nodeKind
}{types: [3]map[string]*Component{{}, {}, {}}}

func register(kind nodeKind, s Spec, drops DropKind, options any, build func(*Build, *yaml.Node) (any, error)) {
	if s.Type == "" || strings.TrimSpace(s.Summary) == "" {
		panic(fmt.Sprintf("pipeline: a %s type needs a Spec with a Type and a Summary (type %q)", kind, s.Type))
	}
	registry.Lock()
	defer registry.Unlock()
	if registry.types[kind][s.Type] != nil {
		panic(fmt.Sprintf("pipeline: component type %q registered twice", s.Type))
	}
	registry.types[kind][s.Type] = &Component{
		Kind: kind.String(), Spec: s, Drops: drops,
		Keys:    config.Keys(options),
		options: options, build: build,
	}
}

func lookup(kind nodeKind, typ string) *Component {
	registry.Lock()
	defer registry.Unlock()
	return registry.types[kind][typ]
}

// Components lists the registered component types: sources, then
// transforms, then sinks, each sorted by type.
func Components() []Component {
	registry.Lock()
	defer registry.Unlock()
	var out []Component
	for _, m := range registry.types {
		start := len(out)
		for _, c := range m {
			out = append(out, *c)
		}
		sort.Slice(out[start:], func(i, j int) bool { return out[start+i].Type < out[start+j].Type })
	}
	return out
}

// CheckExample decodes the component's Example as the runtime would (its
// common keys removed), without building the component; a test runs it
// for every registered type.
func (c Component) CheckExample() error {
	var doc yaml.Node
	if err := yaml.Unmarshal([]byte(c.Example), &doc); err != nil {
		return err
	}
	if len(doc.Content) != 1 || doc.Content[0].Kind != yaml.MappingNode {
		return fmt.Errorf("the example is not a mapping")
	}
	m := doc.Content[0]
	rest := &yaml.Node{Kind: yaml.MappingNode, Line: m.Line, Column: m.Column}
	for i := 0; i+1 < len(m.Content); i += 2 {
		switch k := m.Content[i].Value; k {
		case "type":
			if m.Content[i+1].Value != c.Type {
				return config.Errorf(m.Content[i+1], "type is %q, want %q", m.Content[i+1].Value, c.Type)
			}
		case "inputs", "buffer", "encoding":
		default:
			rest.Content = append(rest.Content, m.Content[i], m.Content[i+1])
		}
	}
	o := reflect.New(reflect.TypeOf(c.options).Elem()).Interface()
	return config.Decode(rest, o)
}

// Types lists the registered type names of one kind ("sources",
// "transforms" or "sinks"), sorted, for error messages.
func Types(kind string) []string {
	registry.Lock()
	defer registry.Unlock()
	var names []string
	for k, m := range registry.types {
		if nodeKind(k).String()+"s" != kind {
			continue
		}
		for n := range m {
			names = append(names, n)
		}
	}
	sort.Strings(names)
	return names
}

// Sleep waits for d, or until ctx ends; it reports whether d passed. For
// the backoffs of components that reconnect.
func Sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
