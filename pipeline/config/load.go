package config

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// Defaults of the top-level keys (SPEC §5).
const (
	DefaultLostEventInterval = time.Second
	DefaultShutdownTimeout   = 30 * time.Second
	DefaultMetricsListen     = "127.0.0.1:9965"
	DefaultBufferEvents      = 8192
)

// WhenFull says what a full buffer does with a new batch.
type WhenFull string

const (
	// Block holds the producer back until there is room (backpressure).
	Block WhenFull = "block"
	// DropNewest drops the new batch and reports the loss.
	DropNewest WhenFull = "drop_newest"
)

// UnmarshalConfig implements Unmarshaler.
func (w *WhenFull) UnmarshalConfig(n *yaml.Node) error {
	if n.Kind == yaml.ScalarNode {
		switch v := WhenFull(n.Value); v {
		case Block, DropNewest:
			*w = v
			return nil
		}
	}
	return Errorf(n, "when_full must be block or drop_newest, got %s", describe(n))
}

// Buffer configures the bounded buffer in front of a transform or sink.
type Buffer struct {
	// Events is the capacity, counted in events (not batches).
	Events   int      `yaml:"events"`
	WhenFull WhenFull `yaml:"when_full"`
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
	File, Dir string

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
	errs := Substitute(&doc, lookup)
	root := resolve(&doc)
	c := &Config{
		LostEventInterval: Duration(DefaultLostEventInterval),
		ShutdownTimeout:   Duration(DefaultShutdownTimeout),
		Metrics:           Metrics{Listen: DefaultMetricsListen},
		Buffer:            Buffer{Events: DefaultBufferEvents, WhenFull: Block},
		Root:              root,
	}
	if isNull(root) {
		return nil, Errors{Errorf(root, "the config is empty")}
	}
	if err := Decode(root, c); err != nil {
		errs = append(errs, Positioned(err, root)...)
	}
	errs = append(errs, c.Buffer.check(root)...)
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

// DecodeBuffer decodes a component's buffer override on top of def.
func DecodeBuffer(n *yaml.Node, def Buffer) (Buffer, Errors) {
	b := def
	if err := Decode(n, &b); err != nil {
		return b, Positioned(err, n)
	}
	return b, b.check(n)
}

func (b Buffer) check(n *yaml.Node) Errors {
	if b.Events < 1 {
		at := orNode(find(find(n, "buffer"), "events"), find(n, "events"))
		return Errors{Errorf(orNode(at, n), "buffer events must be at least 1, got %d", b.Events)}
	}
	return nil
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

var envRef = regexp.MustCompile(`\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(:-([^}]*))?\}|\$\{[^}]*\}?`)

// Substitute replaces environment references in every scalar value of the
// tree (not in keys): ${VAR} is VAR's value and an error when VAR is not
// set; ${VAR:-default} is VAR's value, or default when VAR is unset or
// empty; $$ is a literal $. Substitution happens after parsing, inside
// values, so it cannot inject YAML structure and positions stay those of
// the file. A plain (unquoted) value is re-typed after substitution, so
// `count: ${COUNT:-10}` is an integer.
func Substitute(n *yaml.Node, lookup func(string) (string, bool)) Errors {
	var errs Errors
	var walk func(n *yaml.Node, isKey bool)
	walk = func(n *yaml.Node, isKey bool) {
		switch n.Kind {
		case yaml.ScalarNode:
			if isKey || !strings.Contains(n.Value, "$") {
				return
			}
			out := envRef.ReplaceAllStringFunc(n.Value, func(ref string) string {
				if ref == "$$" {
					return "$"
				}
				m := envRef.FindStringSubmatch(ref)
				if m[1] == "" {
					errs = append(errs, Errorf(n, "invalid environment reference %q: want ${NAME} or ${NAME:-default}", ref))
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
					errs = append(errs, Errorf(n, "environment variable %s is not set (write ${%s:-default} for a default)", m[1], m[1]))
				}
				return v
			})
			if out != n.Value {
				n.Value = out
				if n.Style&(yaml.TaggedStyle|yaml.SingleQuotedStyle|yaml.DoubleQuotedStyle|yaml.LiteralStyle|yaml.FoldedStyle) == 0 {
					n.Tag = "" // re-resolve: the value may now be an int, bool or null
				}
			}
		case yaml.MappingNode:
			for i, c := range n.Content {
				walk(c, i%2 == 0)
			}
		default:
			for _, c := range n.Content {
				walk(c, false)
			}
		}
	}
	walk(n, false)
	return errs
}
