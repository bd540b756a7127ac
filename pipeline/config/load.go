package config

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// Defaults of the top-level keys.
//
// The metrics port is not Hubble's 9965: flowbus runs next to Cilium, whose
// agent serves Hubble's metrics there (and its own on 9962-9964), often on
// the host network too.
const (
	DefaultLostEventInterval = time.Second
	DefaultShutdownTimeout   = 30 * time.Second
	DefaultMetricsListen     = "127.0.0.1:9470"
	DefaultBufferEvents      = 8192
	DefaultBufferBytes       = 64 << 20
	// DefaultDiskBufferBytes is max_bytes of a disk buffer that names none.
	DefaultDiskBufferBytes = 1 << 30
	// DefaultDiskSyncInterval is sync_interval of a disk buffer.
	DefaultDiskSyncInterval = time.Second
)

// WhenFull says what a full buffer does with a new batch.
type WhenFull string

const (
	// Block holds the producer back until there is room (backpressure).
	Block WhenFull = "block"
	// DropNewest drops the new batch and reports the loss.
	DropNewest WhenFull = "drop_newest"
	// DropOldest (disk buffers) drops the oldest batches waiting on disk
	// to make room, and reports the loss.
	DropOldest WhenFull = "drop_oldest"
)

// UnmarshalConfig implements Unmarshaler.
func (w *WhenFull) UnmarshalConfig(n *yaml.Node) error {
	if n.Kind == yaml.ScalarNode {
		switch v := WhenFull(n.Value); v {
		case Block, DropNewest, DropOldest:
			*w = v
			return nil
		}
	}
	return Errorf(n, "when_full must be block, drop_newest or drop_oldest (disk buffers), got %s", describe(n))
}

// BufferType is where a buffer keeps its batches.
type BufferType string

const (
	// Memory buffers hold batches in memory.
	Memory BufferType = "memory"
	// Disk buffers (sinks only) append batches to files and keep them
	// until the sink delivered them, across restarts.
	Disk BufferType = "disk"
)

// UnmarshalConfig implements Unmarshaler.
func (t *BufferType) UnmarshalConfig(n *yaml.Node) error {
	if n.Kind == yaml.ScalarNode {
		switch v := BufferType(n.Value); v {
		case Memory, Disk:
			*t = v
			return nil
		}
	}
	return Errorf(n, "buffer type must be memory or disk, got %s", describe(n))
}

// SyncPolicy says when a disk buffer fsyncs what it appended.
type SyncPolicy string

const (
	// SyncInterval fsyncs every sync_interval (the default).
	SyncInterval SyncPolicy = "interval"
	// SyncAlways fsyncs every batch before taking the next.
	SyncAlways SyncPolicy = "always"
	// SyncNever leaves writing back to the kernel.
	SyncNever SyncPolicy = "never"
)

// UnmarshalConfig implements Unmarshaler.
func (p *SyncPolicy) UnmarshalConfig(n *yaml.Node) error {
	if n.Kind == yaml.ScalarNode {
		switch v := SyncPolicy(n.Value); v {
		case SyncInterval, SyncAlways, SyncNever:
			*p = v
			return nil
		}
	}
	return Errorf(n, "sync must be interval, always or never, got %s", describe(n))
}

// Buffer configures the bounded buffer in front of a transform or sink.
// It is full when it holds Events events or MaxBytes bytes, whichever comes
// first; a batch is taken into an empty buffer whatever its size.
type Buffer struct {
	// Events is the capacity, counted in events (not batches).
	Events int `yaml:"events"`
	// MaxBytes is the capacity in bytes, as the runtime estimates them: an
	// event counts the length of the raw input it was decoded from (a JSON
	// line, a monitor record) plus a fixed overhead for the decoded flow.
	MaxBytes ByteSize `yaml:"max_bytes"`
	WhenFull WhenFull `yaml:"when_full"`

	// Type is memory (the default) or disk (sinks only). A disk buffer
	// keeps its batches in files under Path, at most MaxBytes of them
	// (default 1 GiB); Events is then the capacity of the memory buffer in
	// front of it.
	Type BufferType `yaml:"type"`
	// Path is a disk buffer's directory, one per sink.
	Path string `yaml:"path"`
	// Sync is a disk buffer's fsync policy; SyncInterval its period.
	Sync         SyncPolicy `yaml:"sync"`
	SyncInterval Duration   `yaml:"sync_interval"`
}

// ByteSize is a size in bytes, written as an integer or with a unit: 512,
// 64KiB, 64MiB, 1GiB (also KB, MB, GB = powers of 1000, and B).
type ByteSize int64

var byteUnits = []struct {
	suffix string
	mult   int64
}{{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"KB", 1e3}, {"MB", 1e6}, {"GB", 1e9}, {"B", 1}}

// UnmarshalConfig implements Unmarshaler.
func (b *ByteSize) UnmarshalConfig(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return Errorf(n, "expected a size in bytes like 67108864 or 64MiB, got %s", describe(n))
	}
	v, mult := strings.TrimSpace(n.Value), int64(1)
	for _, u := range byteUnits {
		if num, ok := strings.CutSuffix(v, u.suffix); ok {
			v, mult = strings.TrimSpace(num), u.mult
			break
		}
	}
	i, err := strconv.ParseInt(v, 10, 64)
	if err != nil || i < 0 || i > math.MaxInt64/mult {
		return Errorf(n, "invalid size %q: want a non-negative integer of bytes, optionally with a unit (KiB, MiB, GiB, KB, MB, GB)", n.Value)
	}
	*b = ByteSize(i * mult)
	return nil
}

// Metrics configures the HTTP endpoint.
type Metrics struct {
	// Listen is the address of /metrics, /healthz and /readyz; "" turns
	// the endpoint off.
	Listen string `yaml:"listen"`
}

// Config is a loaded pipeline file. Components keep their YAML for the
// pipeline package to resolve and build.
type Config struct {
	// File is the path the config was read from; Dir its directory.
	File string `yaml:"-"`
	Dir  string `yaml:"-"`

	NodeName          string   `yaml:"node_name"`
	LostEventInterval Duration `yaml:"lost_event_interval"`
	ShutdownTimeout   Duration `yaml:"shutdown_timeout"`
	Metrics           Metrics  `yaml:"metrics"`
	Buffer            Buffer   `yaml:"buffer"`

	Sources    Components `yaml:"sources"`
	Transforms Components `yaml:"transforms"`
	Sinks      Components `yaml:"sinks"`

	// Root is the document's top-level mapping, for errors about the file
	// as a whole.
	Root *yaml.Node `yaml:"-"`
}

// Component is one entry of sources, transforms or sinks, in file order.
type Component struct {
	Name string
	// Key is the node of the component's name; Node its mapping.
	Key, Node *yaml.Node
}

// Components is a mapping of named components, kept in file order.
type Components []Component

// UnmarshalConfig implements Unmarshaler.
func (cs *Components) UnmarshalConfig(n *yaml.Node) error {
	if n.Kind != yaml.MappingNode {
		return Errorf(n, "expected a mapping of component names to components, got %s", describe(n))
	}
	var errs Errors
	seen := map[string]bool{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], resolve(n.Content[i+1])
		switch {
		case k.Kind != yaml.ScalarNode || k.Value == "":
			errs = append(errs, Errorf(k, "a component name must be a non-empty string"))
			continue
		case seen[k.Value]:
			errs = append(errs, Errorf(k, "duplicate component name %q", k.Value))
			continue
		case isNull(v):
			errs = append(errs, Errorf(k, "component %q is empty: it needs at least a type", k.Value))
			continue
		case v.Kind != yaml.MappingNode:
			errs = append(errs, Errorf(v, "component %q must be a mapping, got %s", k.Value, describe(v)))
			continue
		}
		seen[k.Value] = true
		*cs = append(*cs, Component{Name: k.Value, Key: k, Node: v})
	}
	return errs.Err()
}

// Load reads and checks the top level of the config file at path:
// environment references are substituted, then the file is decoded
// strictly. Components are checked and built by the pipeline package.
// Errors are Errors with File set.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	c, err := Parse(data, os.LookupEnv)
	if c != nil {
		c.File = path
		c.Dir = filepath.Dir(path)
	}
	return c, SetFile(err, path)
}

// SetFile sets File on every *Error in err (Errors or *Error) that has
// none, and returns err.
func SetFile(err error, file string) error {
	var es Errors
	var e *Error
	switch {
	case errors.As(err, &es):
		for _, e := range es {
			if e.File == "" {
				e.File = file
			}
		}
	case errors.As(err, &e):
		if e.File == "" {
			e.File = file
		}
	}
	return err
}

var yamlLine = regexp.MustCompile(`^yaml: line (\d+): (.*)$`)

// Parse decodes a config document; lookup reads environment variables.
func Parse(data []byte, lookup func(string) (string, bool)) (*Config, error) {
	data, refs, err := hide(data)
	if err != nil {
		return nil, Positioned(err, nil)
	}
	var doc yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&doc); err != nil {
		if err.Error() == "EOF" {
			return nil, Errors{{Line: 1, Col: 1, Msg: "the config is empty"}}
		}
		return nil, syntaxError(err)
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); err == nil {
		return nil, Errors{Errorf(&extra, "the config must be a single YAML document")}
	}
	if err := checkExpansion(&doc); err != nil {
		return nil, Errors{err}
	}
	errs := refs.substitute(&doc, lookup)
	root := resolve(&doc)
	c := &Config{
		LostEventInterval: Duration(DefaultLostEventInterval),
		ShutdownTimeout:   Duration(DefaultShutdownTimeout),
		Metrics:           Metrics{Listen: DefaultMetricsListen},
		Buffer:            Buffer{Events: DefaultBufferEvents, MaxBytes: DefaultBufferBytes, WhenFull: Block, Type: Memory, Sync: SyncInterval, SyncInterval: Duration(DefaultDiskSyncInterval)},
		Root:              root,
	}
	if isNull(root) {
		return nil, Errors{Errorf(root, "the config is empty")}
	}
	if err := Decode(root, c); err != nil {
		errs = append(errs, Positioned(err, root)...)
	}
	errs = append(errs, c.Buffer.check(root)...)
	if c.Buffer.Type == Disk {
		errs = append(errs, Errorf(orNode(find(find(root, "buffer"), "type"), root), "the top-level buffer cannot be a disk buffer: set buffer: {type: disk, path: DIR} on each sink that needs one"))
	}
	if c.LostEventInterval == 0 {
		errs = append(errs, Errorf(find(root, "lost_event_interval"), "lost_event_interval must be positive"))
	}
	if len(c.Sources) == 0 {
		errs = append(errs, Errorf(orNode(find(root, "sources"), root), "the pipeline needs at least one source"))
	}
	if len(c.Sinks) == 0 {
		errs = append(errs, Errorf(orNode(find(root, "sinks"), root), "the pipeline needs at least one sink"))
	}
	if c.NodeName == "" {
		c.NodeName, _ = os.Hostname()
	}
	return c, errs.Err()
}

// DecodeBuffer decodes a component's buffer override on top of def. A
// disk buffer without max_bytes gets DefaultDiskBufferBytes.
func DecodeBuffer(n *yaml.Node, def Buffer) (Buffer, Errors) {
	b := def
	if err := Decode(n, &b); err != nil {
		return b, Positioned(err, n)
	}
	if b.Type == Disk && find(n, "max_bytes") == nil {
		b.MaxBytes = DefaultDiskBufferBytes
	}
	return b, b.check(n)
}

func (b Buffer) check(n *yaml.Node) Errors {
	var errs Errors
	switch {
	case b.Type == Disk && b.Path == "":
		errs = append(errs, Errorf(orNode(find(n, "type"), n), "a disk buffer needs a path: the directory its files go in, one per sink"))
	case b.Type != Disk && b.Path != "":
		errs = append(errs, Errorf(find(n, "path"), "path is a key of disk buffers: add type: disk"))
	case b.Type != Disk && b.WhenFull == DropOldest:
		errs = append(errs, Errorf(orNode(find(n, "when_full"), orNode(find(find(n, "buffer"), "when_full"), n)), "when_full: drop_oldest needs a disk buffer (type: disk); a memory buffer can block or drop_newest"))
	}
	if b.Type == Disk && b.SyncInterval <= 0 {
		errs = append(errs, Errorf(orNode(find(n, "sync_interval"), n), "sync_interval must be positive"))
	}
	if b.Events < 1 {
		at := orNode(find(find(n, "buffer"), "events"), find(n, "events"))
		errs = append(errs, Errorf(orNode(at, n), "buffer events must be at least 1, got %d", b.Events))
	}
	if b.MaxBytes < 1 {
		at := orNode(find(find(n, "buffer"), "max_bytes"), find(n, "max_bytes"))
		errs = append(errs, Errorf(orNode(at, n), "buffer max_bytes must be at least 1, got %d", b.MaxBytes))
	}
	return errs
}

// find returns the value node of key in mapping n, or nil.
func find(n *yaml.Node, key string) *yaml.Node {
	n = resolve(n)
	if n == nil || n.Kind != yaml.MappingNode {
		return nil
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		if n.Content[i].Value == key {
			return n.Content[i+1]
		}
	}
	return nil
}

// Find returns the value node of key in mapping n, or nil.
func Find(n *yaml.Node, key string) *yaml.Node { return find(n, key) }

func orNode(a, b *yaml.Node) *yaml.Node {
	if a != nil {
		return a
	}
	return b
}

func syntaxError(err error) error {
	var te *yaml.TypeError
	if errors.As(err, &te) {
		return Errors{{Line: 1, Col: 1, Msg: strings.Join(te.Errors, "; ")}}
	}
	msg := err.Error()
	if m := yamlLine.FindStringSubmatch(msg); m != nil {
		line, _ := strconv.Atoi(m[1])
		return Errors{{Line: line, Col: 1, Msg: "invalid YAML: " + m[2]}}
	}
	return Errors{{Line: 1, Col: 1, Msg: "invalid YAML: " + strings.TrimPrefix(msg, "yaml: ")}}
}

var envRef = regexp.MustCompile(`\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(:-([^}\n]*))?\}|\$\{[^}\n]*\}?`)

// envRefs holds the environment references of a config file while it is
// parsed. Before parsing, each ${...} is replaced by a placeholder of the
// same length that YAML reads as plain text anywhere (even in flow style,
// where braces are not allowed in plain values), so every position in the
// parsed tree is the file's own; after parsing, the placeholders in scalars
// are replaced by the variables' values.
type envRefs struct {
	prefix string   // two letters that occur nowhere in the file
	refs   []string // the references, by placeholder index
}

// hide replaces the references in data by placeholders.
func hide(data []byte) ([]byte, *envRefs, error) {
	matches := envRef.FindAllIndex(data, -1)
	r := &envRefs{}
	if len(matches) == 0 {
		return data, r, nil
	}
	const letters = "QZXJKVWqzxjkvw"
	for _, a := range letters {
		for _, b := range letters {
			if p := string(a) + string(b); !bytes.Contains(data, []byte(p)) {
				r.prefix = p
				break
			}
		}
		if r.prefix != "" {
			break
		}
	}
	if r.prefix == "" {
		return nil, nil, fmt.Errorf("cannot substitute environment references in this file")
	}
	out := append([]byte(nil), data...)
	for _, m := range matches {
		ref := string(data[m[0]:m[1]])
		if ref == "$$" {
			continue
		}
		tok := r.prefix + strconv.Itoa(len(r.refs))
		if len(tok) > len(ref) {
			line := 1 + bytes.Count(data[:m[0]], []byte("\n"))
			return nil, nil, Errors{{Line: line, Col: 1, Msg: "too many short environment references; write ${NAME} with longer names"}}
		}
		tok += strings.Repeat("_", len(ref)-len(tok))
		copy(out[m[0]:], tok)
		r.refs = append(r.refs, ref)
	}
	return out, r, nil
}

// Substitution rules, applied to every scalar (values and keys):
// ${VAR} is VAR's value, and an error when VAR is not set;
// ${VAR:-default} is VAR's value, or default when VAR is unset or empty;
// $$ is a literal $. Values are substituted into scalars after parsing, so
// they cannot inject YAML structure, and positions are those of the file.
// A scalar that held a reference is typed by its substituted text, quoted
// or not: `count: ${COUNT:-10}` and `count: "${COUNT}"` are integers. A
// plain value that becomes empty is null (the default applies); a quoted one
// stays the empty string (`listen: "${LISTEN:-}"` turns metrics off).
func (r *envRefs) substitute(n *yaml.Node, lookup func(string) (string, bool)) Errors {
	var errs Errors
	var walk func(n *yaml.Node)
	walk = func(n *yaml.Node) {
		if n.Kind != yaml.ScalarNode {
			for _, c := range n.Content {
				walk(c)
			}
			return
		}
		if !strings.Contains(n.Value, "$") && (r.prefix == "" || !strings.Contains(n.Value, r.prefix)) {
			return
		}
		var out strings.Builder
		v := n.Value
		for i := 0; i < len(v); {
			switch {
			case strings.HasPrefix(v[i:], "$$"):
				out.WriteByte('$')
				i += 2
			case r.prefix != "" && strings.HasPrefix(v[i:], r.prefix):
				j := i + len(r.prefix)
				k := j
				for k < len(v) && v[k] >= '0' && v[k] <= '9' {
					k++
				}
				idx, err := strconv.Atoi(v[j:k])
				if err != nil || idx >= len(r.refs) {
					out.WriteString(v[i:k])
					i = k
					continue
				}
				ref := r.refs[idx]
				i += len(ref)
				out.WriteString(r.expand(ref, n, lookup, &errs))
			default:
				out.WriteByte(v[i])
				i++
			}
		}
		if res := out.String(); res != n.Value {
			n.Value = res
			const quoted = yaml.SingleQuotedStyle | yaml.DoubleQuotedStyle
			switch {
			case n.Style&yaml.TaggedStyle != 0 || n.Style&(yaml.LiteralStyle|yaml.FoldedStyle) != 0:
				// An explicit tag or a block scalar keeps its type.
			case n.Style&quoted != 0 && res == "":
				n.Tag = "!!str" // "" stays the empty string
			default:
				// Re-resolve: the value may now be an int, a bool or null.
				n.Style &^= quoted
				n.Tag = ""
			}
		}
	}
	walk(n)
	return errs
}

func (r *envRefs) expand(ref string, n *yaml.Node, lookup func(string) (string, bool), errs *Errors) string {
	m := envRef.FindStringSubmatch(ref)
	if m == nil || m[1] == "" {
		*errs = append(*errs, Errorf(n, "invalid environment reference %q: want ${NAME} or ${NAME:-default}", ref))
		return ref
	}
	v, ok := lookup(m[1])
	if m[2] != "" {
		if !ok || v == "" {
			return m[3]
		}
		return v
	}
	if !ok {
		*errs = append(*errs, Errorf(n, "environment variable %s is not set (write ${%s:-default} for a default)", m[1], m[1]))
	}
	return v
}
