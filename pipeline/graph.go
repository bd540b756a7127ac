package pipeline

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"reflect"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"gopkg.in/yaml.v3"

	"github.com/flowbus/flowbus/pipeline/config"
)

type nodeKind int

const (
	kindSource nodeKind = iota
	kindTransform
	kindSink
)

func (k nodeKind) String() string {
	return [...]string{"source", "transform", "sink"}[k]
}

// node is one component in the graph.
type node struct {
	kind      nodeKind
	name, typ string
	key       *yaml.Node // the component's name in the file
	log       *slog.Logger

	source    Source
	transform Transform
	sink      Sink
	drops     DropKind
	encoding  string
	rawData   bool // the encoding's raw_data option

	inputs  []*node // producers feeding this node (transforms, sinks)
	outputs []*node // consumers of this node's output
	// down lists the sinks this node's events reach, with the number of
	// distinct paths to each (more than 1 below a fan-out that joins again).
	down []sinkPath

	queue *queue // input buffer of a transform or sink

	stats stats
	loss  *lossBox // sinks: losses to report in this sink's stream

	// Sinks: the sink's flowbus-seq counter (the last number given), the
	// view of a batch lent to Write (see sinkWriteSeq), and the disk
	// buffer when the sink has one.
	seq  atomic.Uint64
	view Batch
	disk *diskBuffer
}

type sinkPath struct {
	sink  *node
	paths uint64
}

// Options configure a pipeline.
type Options struct {
	// Log receives the pipeline's and the components' logs; nil discards.
	Log *slog.Logger
	// Registry receives the metrics; nil makes a new one.
	Registry *prometheus.Registry
	// RequireHealthy (`run --require-healthy`) makes a sink whose broker
	// cannot be reached at start fail Start, so the run exits 1. Without
	// it such a sink starts anyway, unready, and keeps retrying.
	RequireHealthy bool
}

// Pipeline is a built pipeline, ready to run once.
type Pipeline struct {
	cfg   *config.Config
	log   *slog.Logger
	reg   *prometheus.Registry
	nodes []*node // sources, then transforms, then sinks, in file order

	sources, transforms, sinks []*node

	requireHealthy bool

	state runState
	abort context.Context // see Run
	addr  atomic.Value    // string: the HTTP endpoint's address
	// finishers mark each source done for its consumers' buffers.
	finishers   []func()
	collectOnce sync.Once
	// noServe: the HTTP endpoint is served by a Reloader, not by Run.
	noServe bool
	// launched is closed once Run has started every component and runs
	// the sources.
	launched chan struct{}
	// epoch is the flowbus-seq epoch of this pipeline's run (see
	// Batch.Seq): the Unix time in microseconds when it was built.
	epoch int64
}

// Load reads the config file at path and builds its pipeline. Errors are
// config.Errors with the file set, all of them at once.
func Load(path string, opts Options) (*Pipeline, error) {
	cfg, err := config.Load(path)
	if err != nil {
		if cfg == nil {
			return nil, err
		}
		// Report the components' errors too, in one go.
		errs := config.Positioned(err, nil)
		if _, berr := New(cfg, opts); berr != nil {
			errs = append(errs, config.Positioned(config.SetFile(berr, path), nil)...)
		}
		sortErrors(errs)
		return nil, errs
	}
	p, err := New(cfg, opts)
	return p, config.SetFile(err, path)
}

// New resolves and builds the components of cfg: types are looked up,
// inputs resolved, cycles rejected, and each constructor called with its
// component's own keys. All errors found are returned as config.Errors.
func New(cfg *config.Config, opts Options) (*Pipeline, error) {
	if opts.Log == nil {
		opts.Log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if opts.Registry == nil {
		opts.Registry = prometheus.NewRegistry()
	}
	p := &Pipeline{cfg: cfg, log: opts.Log, reg: opts.Registry, launched: make(chan struct{}), requireHealthy: opts.RequireHealthy, epoch: time.Now().UnixMicro()}
	b := builder{p: p, byName: map[string]*node{}}
	b.declare(cfg.Sources, kindSource)
	b.declare(cfg.Transforms, kindTransform)
	b.declare(cfg.Sinks, kindSink)
	b.resolveInputs()
	b.checkCycles()
	b.build()
	if len(b.errs) > 0 {
		for _, e := range b.errs {
			if e.File == "" {
				e.File = cfg.File
			}
		}
		sortErrors(b.errs)
		return nil, b.errs
	}
	p.link()
	p.registerCollector()
	return p, nil
}

type builder struct {
	p      *Pipeline
	byName map[string]*node
	errs   config.Errors
	// per node: the component's mapping and its `inputs` items
	comps  map[*node]config.Component
	inputs map[*node][]*yaml.Node
	rest   map[*node]*yaml.Node
	bufs   map[*node]config.Buffer
	bad    map[*node]bool // type unknown or invalid: not built
	// diskPaths: the directory of each disk buffer, to keep them apart.
	diskPaths map[string]*node
}

func (b *builder) errorf(n *yaml.Node, format string, args ...any) {
	b.errs = append(b.errs, config.Errorf(n, format, args...))
}

// declare checks the common keys of each component of one section.
func (b *builder) declare(cs config.Components, kind nodeKind) {
	if b.comps == nil {
		b.comps = map[*node]config.Component{}
		b.inputs = map[*node][]*yaml.Node{}
		b.rest = map[*node]*yaml.Node{}
		b.bufs = map[*node]config.Buffer{}
		b.bad = map[*node]bool{}
	}
	section := kind.String() + "s"
	known := Types(section)
	for _, c := range cs {
		n := &node{kind: kind, name: c.Name, key: c.Key}
		if prev := b.byName[c.Name]; prev != nil {
			b.errorf(c.Key, "%s name %q is already used by a %s (line %d); names must be unique across sources, transforms and sinks", kind, c.Name, prev.kind, prev.key.Line)
			continue
		}
		b.byName[c.Name] = n
		b.comps[n] = c
		rest := &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map", Line: c.Node.Line, Column: c.Node.Column, Style: c.Node.Style}
		var typeNode *yaml.Node
		buf := b.p.cfg.Buffer
		for i := 0; i+1 < len(c.Node.Content); i += 2 {
			k, v := c.Node.Content[i], c.Node.Content[i+1]
			switch {
			case k.Value == "type":
				typeNode = v
			case k.Value == "inputs" && kind != kindSource:
				b.inputs[n] = b.inputList(n, v)
			case k.Value == "buffer" && kind != kindSource:
				bb, errs := config.DecodeBuffer(v, b.p.cfg.Buffer)
				b.errs = append(b.errs, errs...)
				buf = bb
			case k.Value == "encoding" && kind == kindSink:
				n.encoding, n.rawData = b.encoding(c.Name, n, v)
			default:
				rest.Content = append(rest.Content, k, v)
			}
		}
		if kind == kindSink && n.encoding == "" {
			n.encoding = "json"
		}
		b.rest[n], b.bufs[n] = rest, buf
		switch {
		case typeNode == nil:
			b.errorf(c.Key, "%s %q has no type (known %s types: %s)", kind, c.Name, kind, list(known))
			b.bad[n] = true
		case typeNode.Kind != yaml.ScalarNode || typeNode.Value == "":
			b.errorf(typeNode, "%s %q: type must be a name (known %s types: %s)", kind, c.Name, kind, list(known))
			b.bad[n] = true
		case !contains(known, typeNode.Value):
			b.errorf(typeNode, "unknown %s type %q (known %s types: %s)", kind, typeNode.Value, kind, list(known))
			b.bad[n] = true
		default:
			n.typ = typeNode.Value
		}
		if kind != kindSource {
			if _, ok := b.inputs[n]; !ok {
				b.errorf(c.Key, "%s %q has no inputs: list the sources or transforms it reads, e.g. inputs: [NAME]", kind, c.Name)
			}
		}
		switch kind {
		case kindSource:
			b.p.sources = append(b.p.sources, n)
		case kindTransform:
			b.p.transforms = append(b.p.transforms, n)
		case kindSink:
			b.p.sinks = append(b.p.sinks, n)
		}
		b.p.nodes = append(b.p.nodes, n)
	}
}

func (b *builder) inputList(n *node, v *yaml.Node) []*yaml.Node {
	if v.Kind != yaml.SequenceNode {
		b.errorf(v, "%s %q: inputs must be a list of names, got %s", n.kind, n.name, v.Value)
		return nil
	}
	if len(v.Content) == 0 {
		b.errorf(v, "%s %q: inputs is empty: list the sources or transforms it reads", n.kind, n.name)
	}
	var items []*yaml.Node
	seen := map[string]bool{}
	for _, it := range v.Content {
		if it.Kind != yaml.ScalarNode || it.Value == "" {
			b.errorf(it, "%s %q: an input must be a component name", n.kind, n.name)
			continue
		}
		if seen[it.Value] {
			b.errorf(it, "%s %q: input %q is listed twice", n.kind, n.name, it.Value)
			continue
		}
		seen[it.Value] = true
		items = append(items, it)
	}
	return items
}

// resolveInputs links every input name to its node.
func (b *builder) resolveInputs() {
	var names []string
	for _, n := range b.p.nodes {
		if n.kind != kindSink {
			names = append(names, n.name)
		}
	}
	for _, n := range b.p.nodes {
		for _, it := range b.inputs[n] {
			in := b.byName[it.Value]
			switch {
			case in == nil:
				b.errorf(it, "%s %q: unknown input %q (sources and transforms: %s)", n.kind, n.name, it.Value, list(names))
			case in.kind == kindSink:
				b.errorf(it, "%s %q: input %q is a sink; inputs must be sources or transforms", n.kind, n.name, it.Value)
			case in == n:
				b.errorf(it, "%s %q reads its own output", n.kind, n.name)
			default:
				n.inputs = append(n.inputs, in)
			}
		}
	}
	used := map[string]bool{}
	for _, n := range b.p.nodes {
		for _, it := range b.inputs[n] {
			used[it.Value] = true
		}
	}
	for _, n := range b.p.nodes {
		if n.kind != kindSink && !used[n.name] {
			b.errorf(n.key, "%s %q is not an input of any transform or sink", n.kind, n.name)
		}
	}
}

// checkCycles reports each cycle among transforms once, at the input that
// closes it.
func (b *builder) checkCycles() {
	const (
		white = iota
		grey
		black
	)
	color := map[*node]int{}
	cyclic := map[*node]bool{}
	var stack []*node
	var visit func(n *node)
	visit = func(n *node) {
		color[n] = grey
		stack = append(stack, n)
		for i, in := range n.inputs {
			switch color[in] {
			case white:
				visit(in)
			case grey:
				// in → … → n → in: report at n's input item naming in.
				var path []string
				for j := len(stack) - 1; j >= 0; j-- {
					path = append(path, stack[j].name)
					if stack[j] == in {
						break
					}
				}
				path = append([]string{in.name}, path...)
				at := b.inputItem(n, i)
				b.errorf(at, "%s %q: input %q closes a cycle: %s", n.kind, n.name, in.name, strings.Join(path, " -> "))
				cyclic[n] = true
			}
		}
		stack = stack[:len(stack)-1]
		color[n] = black
	}
	for _, n := range b.p.nodes {
		if color[n] == white {
			visit(n)
		}
	}
	// Drop the edges that close cycles so later passes terminate.
	for n := range cyclic {
		n.inputs = nil
	}
}

// inputItem returns the YAML item of n's i-th resolved input.
func (b *builder) inputItem(n *node, i int) *yaml.Node {
	k := 0
	for _, it := range b.inputs[n] {
		if in := b.byName[it.Value]; in != nil && in.kind != kindSink && in != n {
			if k == i {
				return it
			}
			k++
		}
	}
	return n.key
}

// build calls the factories.
func (b *builder) build() {
	for _, n := range b.p.nodes {
		if b.bad[n] {
			continue
		}
		n.log = b.p.log.With("component", n.name, "type", n.typ)
		bld := &Build{
			Name: n.name, Type: n.typ,
			NodeName:       b.p.cfg.NodeName,
			Dir:            b.p.cfg.Dir,
			Encoding:       n.encoding,
			RawData:        n.rawData,
			Log:            n.log,
			RequireHealthy: b.p.requireHealthy,
			Metrics:        prometheus.WrapRegistererWith(prometheus.Labels{"component": n.name, "type": n.typ}, b.p.reg),
		}
		if n.kind != kindSource {
			buf := b.bufs[n]
			switch {
			case buf.Type == config.Disk && n.kind != kindSink:
				b.errorf(config.Find(b.comps[n].Node, "buffer"), "%s %q: a disk buffer belongs in front of a sink; a transform's buffer is in memory", n.kind, n.name)
			case buf.Type == config.Disk:
				n.disk = b.diskBuffer(n, buf)
				// The memory buffer in front of the disk only hands
				// batches to the disk, which decides when_full.
				n.queue = newQueue(buf.Events, config.DefaultBufferBytes, false)
			default:
				n.queue = newQueue(buf.Events, int(buf.MaxBytes), buf.WhenFull == config.DropNewest)
			}
		}
		err := b.call(n, bld, b.rest[n])
		if err != nil {
			for _, e := range config.Positioned(err, b.comps[n].Key) {
				e.Msg = fmt.Sprintf("%s %q (%s): %s", n.kind, n.name, n.typ, e.Msg)
				b.errs = append(b.errs, e)
			}
		}
	}
}

// call runs n's constructor, turning a panic into an error.
func (b *builder) call(n *node, bld *Build, rest *yaml.Node) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("building the component failed: %v", r)
		}
	}()
	c := lookup(n.kind, n.typ)
	n.drops = c.Drops
	v, err := c.build(bld, rest)
	if err != nil {
		return err
	}
	if rv := reflect.ValueOf(v); !rv.IsValid() || rv.Kind() == reflect.Pointer && rv.IsNil() {
		return fmt.Errorf("the constructor returned no %s", n.kind)
	}
	switch n.kind {
	case kindSource:
		n.source = v.(Source)
	case kindTransform:
		n.transform = v.(Transform)
	case kindSink:
		n.sink = v.(Sink)
	}
	return nil
}

// link sets the outputs and the downstream sinks of every node.
func (p *Pipeline) link() {
	for _, n := range p.nodes {
		for _, in := range n.inputs {
			in.outputs = append(in.outputs, n)
		}
		if n.kind == kindSink {
			n.loss = newLossBox()
		}
	}
	// Paths to sinks, memoised; the graph is acyclic.
	memo := map[*node][]sinkPath{}
	var down func(n *node) []sinkPath
	down = func(n *node) []sinkPath {
		if d, ok := memo[n]; ok {
			return d
		}
		var d []sinkPath
		if n.kind == kindSink {
			d = []sinkPath{{sink: n, paths: 1}}
		}
		for _, out := range n.outputs {
		next:
			for _, sp := range down(out) {
				for i := range d {
					if d[i].sink == sp.sink {
						d[i].paths += sp.paths
						continue next
					}
				}
				d = append(d, sp)
			}
		}
		memo[n] = d
		return d
	}
	for _, n := range p.nodes {
		n.down = down(n)
	}
}

func list(names []string) string {
	if len(names) == 0 {
		return "none"
	}
	return strings.Join(names, ", ")
}

func contains(names []string, s string) bool {
	for _, n := range names {
		if n == s {
			return true
		}
	}
	return false
}

// Components returns the names of the sources, transforms and sinks.
func (p *Pipeline) Components() (sources, transforms, sinks []string) {
	for _, n := range p.sources {
		sources = append(sources, n.name)
	}
	for _, n := range p.transforms {
		transforms = append(transforms, n.name)
	}
	for _, n := range p.sinks {
		sinks = append(sinks, n.name)
	}
	return sources, transforms, sinks
}

// sortErrors orders errors by position, so they read top to bottom.
func sortErrors(es config.Errors) {
	sort.SliceStable(es, func(i, j int) bool {
		if es[i].Line != es[j].Line {
			return es[i].Line < es[j].Line
		}
		return es[i].Col < es[j].Col
	})
}

// Encodings are the values of a sink's `encoding`.
var Encodings = []string{"json", "protobuf", "ocsf"}

// encoding checks a sink's `encoding`: a name, or a mapping with `type`
// (the name) and `raw_data` (ocsf only).
func (b *builder) encoding(sink string, n *node, v *yaml.Node) (name string, rawData bool) {
	bad := func(at *yaml.Node, format string, args ...any) (string, bool) {
		b.errorf(at, format, args...)
		b.bad[n] = true
		return "", false
	}
	typ := v
	if v.Kind == yaml.MappingNode {
		typ = nil
		for i := 0; i+1 < len(v.Content); i += 2 {
			k, val := v.Content[i], v.Content[i+1]
			switch k.Value {
			case "type":
				typ = val
			case "raw_data":
				if val.Kind != yaml.ScalarNode || (val.Value != "true" && val.Value != "false") {
					return bad(val, "sink %q: encoding.raw_data must be true or false, got %q", sink, val.Value)
				}
				rawData = val.Value == "true"
			default:
				return bad(k, "sink %q: unknown key encoding.%s (known: type, raw_data)", sink, k.Value)
			}
		}
		if typ == nil {
			return bad(v, "sink %q: encoding has no type (%s)", sink, strings.Join(Encodings, ", "))
		}
	}
	if typ.Kind != yaml.ScalarNode || !contains(Encodings, typ.Value) {
		return bad(typ, "sink %q: encoding must be json, protobuf or ocsf, got %q", sink, typ.Value)
	}
	if rawData && typ.Value != "ocsf" {
		return bad(v, "sink %q: encoding.raw_data applies to the ocsf encoding only", sink)
	}
	return typ.Value, rawData
}
