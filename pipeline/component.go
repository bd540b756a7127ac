package pipeline

import (
	"context"
	"fmt"
	"log/slog"
	"sort"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"gopkg.in/yaml.v3"

	flowpb "github.com/flowbus/flowbus/flow"
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
	// returns. It returns once every event is acknowledged or given up;
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

// Starter is implemented by components that connect or attach before the
// pipeline runs (a broker client, BPF programs). Start failing stops the
// pipeline before any source runs.
type Starter interface {
	Start(ctx context.Context) error
}

// Readier is implemented by components that can be unready while running
// (a sink that cannot reach its broker). /readyz reports the errors.
type Readier interface {
	Ready() error
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

// Build is what a factory gets to build one component.
type Build struct {
	// Name is the component's name in the config; Type its type.
	Name, Type string
	// NodeName is flowbus's node name (config node_name, or the host name).
	NodeName string
	// Dir is the directory of the config file, for relative paths.
	Dir string
	// Encoding is a sink's `encoding` (json or protobuf); empty elsewhere.
	Encoding string
	// Log is the component's logger.
	Log *slog.Logger
	// Metrics registers the component's collectors; it adds the labels
	// component=Name and type=Type.
	Metrics prometheus.Registerer
}

// Factories build components from their YAML mapping. The node holds the
// component-specific keys only: the runtime removes `type`, `inputs`,
// `buffer` and `encoding` first. Decode it with config.Decode, and return
// errors made with config.Errorf (or wrapping a *config.Error) so that they
// carry the line and column.
type (
	SourceFactory    func(b *Build, node *yaml.Node) (Source, error)
	TransformFactory func(b *Build, node *yaml.Node) (Transform, error)
	SinkFactory      func(b *Build, node *yaml.Node) (Sink, error)
)

type transformEntry struct {
	factory TransformFactory
	drops   DropKind
}

var registry = struct {
	sync.Mutex
	sources    map[string]SourceFactory
	transforms map[string]transformEntry
	sinks      map[string]SinkFactory
}{
	sources:    map[string]SourceFactory{},
	transforms: map[string]transformEntry{},
	sinks:      map[string]SinkFactory{},
}

// RegisterSource makes a source type known; packages call it from init.
func RegisterSource(typ string, f SourceFactory) {
	registry.Lock()
	defer registry.Unlock()
	mustBeNew(typ, registry.sources[typ] != nil)
	registry.sources[typ] = f
}

// RegisterTransform makes a transform type known, with how the summary
// counts the events it removes.
func RegisterTransform(typ string, drops DropKind, f TransformFactory) {
	registry.Lock()
	defer registry.Unlock()
	mustBeNew(typ, registry.transforms[typ].factory != nil)
	registry.transforms[typ] = transformEntry{factory: f, drops: drops}
}

// RegisterSink makes a sink type known.
func RegisterSink(typ string, f SinkFactory) {
	registry.Lock()
	defer registry.Unlock()
	mustBeNew(typ, registry.sinks[typ] != nil)
	registry.sinks[typ] = f
}

func mustBeNew(typ string, exists bool) {
	if exists {
		panic(fmt.Sprintf("pipeline: component type %q registered twice", typ))
	}
}

// Types lists the registered type names of one kind ("sources",
// "transforms" or "sinks"), sorted, for error messages.
func Types(kind string) []string {
	registry.Lock()
	defer registry.Unlock()
	var names []string
	switch kind {
	case "sources":
		for n := range registry.sources {
			names = append(names, n)
		}
	case "transforms":
		for n := range registry.transforms {
			names = append(names, n)
		}
	case "sinks":
		for n := range registry.sinks {
			names = append(names, n)
		}
	}
	sort.Strings(names)
	return names
}
