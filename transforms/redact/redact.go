// Package redact implements the `redact` transform: Hubble's L7 redaction
// (HUBBLE_REDACTED), IP address pseudonymisation that keeps joins
// possible, and removal of fields.
//
// Its keys: `flowbus components redact`, or docs/components.md.
//
// HTTP and Kafka follow Hubble (pkg/hubble/parser/seven) with
// hubble-redact-enabled set: an `http` key turns HTTP redaction on with
// Hubble's defaults, so `http: {}` (or `http:` alone) replaces URL
// passwords and, having no header lists, every header value (keys are
// kept). A header in `allow`
// keeps its value and every other header is redacted; a header in `deny`
// is redacted and every other one kept; names compare case-insensitively;
// setting both lists is an error. The redacted URL also replaces the
// original in the flow's Summary, as in Hubble. `kafka.api_key` replaces
// the API key of every Kafka flow, set or not, as Hubble does.
//
// `ip` rewrites IP addresses in place (see ipMapper for the exact
// constructions). hmac needs `key_file`: at least 16 bytes once trailing
// newlines are trimmed (for example `head -c 32 /dev/urandom`), the same on
// every node whose output is joined. truncate takes `ipv4_prefix` (default
// 24) and `ipv6_prefix` (default 48). `fields` are field paths to string
// fields or lists of strings; the default is every address of a flow:
// IP.source, IP.source_xlated, IP.destination, the tunnel's outer
// tunnel.IP.source, tunnel.IP.source_xlated and tunnel.IP.destination, and
// the DNS answers l7.dns.ips. Addresses in text fields (the Summary, URLs,
// headers, DNS queries, names, MACs) are pseudonymised too: see text.go.
//
// `remove` clears fields by path before the other rules run.
//
// Everything happens in place on the event's flow; nothing is copied.
// LostEvents pass unchanged.
package redact

import (
	"bytes"
	"fmt"
	"reflect"
	"strings"

	"google.golang.org/protobuf/reflect/protoreflect"
	"gopkg.in/yaml.v3"

	flowpb "github.com/flowbus/flowbus/flow"
	"github.com/flowbus/flowbus/flow/fieldpath"
	"github.com/flowbus/flowbus/internal/sinkutil"
	"github.com/flowbus/flowbus/pipeline"
	"github.com/flowbus/flowbus/pipeline/config"
)

func init() {
	pipeline.RegisterTransform(pipeline.Spec{
		Type:        "redact",
		Summary:     "Hubble's L7 redaction (HUBBLE_REDACTED), IP address pseudonymisation that keeps joins possible, and removal of fields",
		Description: `An http key turns Hubble's HTTP redaction on with its defaults: http: {} (or http: alone) replaces URL passwords and every header value. A header in allow keeps its value and every other one is redacted; a header in deny is redacted and every other one kept; names compare case-insensitively. kafka.api_key replaces the API key of every Kafka flow. ip rewrites addresses in place: hmac with a key of at least 16 bytes (the same on every node whose output is joined), or truncate to a prefix; addresses are also rewritten, in the form they are written in, in the text fields (Summary, URL, header values, DNS query and CNAMEs incl. in-addr.arpa and ip6.arpa names, pod, workload, node and DNS names incl. dashed 10-0-3-17, 0a:58 MACs); labels, extensions, policies and service names are not searched, so remove them where they may hold addresses. remove clears fields before the other rules run. LostEvents pass unchanged.`,
		Example: `type: redact
inputs: [flows]
http:
  url_query: true
  headers:
    deny: [authorization, cookie]
kafka:
  api_key: true
ip:
  mode: hmac
  key_file: /etc/flowbus/ip.key
  fields: [IP.source, IP.destination]
remove: [source.labels, destination.labels]
`,
	}, pipeline.DropsNone, FromOptions)
}

// DefaultIPFields are the fields the ip rules rewrite when `fields` is not
// given.
var DefaultIPFields = []string{
	"IP.source", "IP.source_xlated", "IP.destination",
	"tunnel.IP.source", "tunnel.IP.source_xlated", "tunnel.IP.destination",
	"l7.dns.ips",
}

// Options is the YAML configuration of a redact transform.
type Options struct {
	HTTP   *HTTPOptions  `yaml:"http" doc:"Hubble's HTTP redaction, on when the key is present (http: {} for its defaults)"`
	Kafka  *KafkaOptions `yaml:"kafka" doc:"Hubble's Kafka redaction"`
	IP     *IPOptions    `yaml:"ip" doc:"IP address pseudonymisation"`
	Remove []Path        `yaml:"remove" type:"list of field paths" doc:"flow fields cleared before the other rules run"`
}

// HTTPOptions are Hubble's hubble-redact-http-* settings.
type HTTPOptions struct {
	URLQuery *bool          `yaml:"url_query" default:"false" doc:"drop the URL's ?query and #fragment"`
	UserInfo *bool          `yaml:"user_info" default:"true" doc:"replace URL passwords"`
	Headers  *HeaderOptions `yaml:"headers" doc:"which header values to redact (at most one of allow and deny); default: every value"`
}

// HeaderOptions are the header allow and deny lists.
type HeaderOptions struct {
	Allow *[]string `yaml:"allow" doc:"headers that keep their values; every other one is redacted"`
	Deny  *[]string `yaml:"deny" doc:"headers whose values are redacted; every other one is kept"`
}

// KafkaOptions is hubble-redact-kafka-apikey.
type KafkaOptions struct {
	APIKey bool `yaml:"api_key" default:"false" doc:"replace l7.kafka.api_key of every Kafka flow"`
}

// IPOptions configure IP pseudonymisation.
type IPOptions struct {
	Mode       string `yaml:"mode" required:"true" doc:"hmac (a keyed pseudonym per address) or truncate (keep a prefix)"`
	KeyFile    string `yaml:"key_file" doc:"mode hmac: the file holding the key, at least 16 bytes once trailing newlines are trimmed"`
	IPv4Prefix *int   `yaml:"ipv4_prefix" doc:"mode truncate: the IPv4 prefix length kept (default 24)"`
	IPv6Prefix *int   `yaml:"ipv6_prefix" doc:"mode truncate: the IPv6 prefix length kept (default 48)"`
	Fields     []Path `yaml:"fields" type:"list of field paths" doc:"the string fields holding addresses to rewrite; default: IP.source, IP.source_xlated, IP.destination, their tunnel.IP counterparts and l7.dns.ips"`
}

// Path is a field path read from the configuration, checked against
// flow.Flow when decoded.
type Path struct {
	fieldpath.Path
	Node *yaml.Node
}

// UnmarshalConfig implements config.Unmarshaler.
func (p *Path) UnmarshalConfig(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode || n.ShortTag() != "!!str" {
		return config.Errorf(n, "expected a field path like source.pod_name")
	}
	fp, err := fieldpath.Parse(n.Value)
	if err != nil {
		return config.Errorf(n, "%v", err)
	}
	p.Path, p.Node = fp, n
	return nil
}

// minKeyLen is the shortest HMAC key accepted, in bytes.
const minKeyLen = 16

// FromOptions builds a redact transform from its decoded options;
// relative key files are read from the config file's directory.
func FromOptions(b *pipeline.Build, o *Options) (*Redactor, error) {
	node := b.At("")
	var errs config.Errors
	r := &Redactor{}
	// A key written without a value (`http:`) turns its rules on with
	// their defaults, like an empty mapping.
	if o.HTTP == nil && hasKey(node, "http") {
		o.HTTP = &HTTPOptions{}
	}
	if o.IP == nil && hasKey(node, "ip") {
		o.IP = &IPOptions{}
	}
	for _, p := range o.Remove {
		if p.Leaf() != nil {
			r.remove = append(r.remove, newRemoveField(p.Path))
		}
	}
	if o.HTTP != nil {
		h := &httpRules{userInfo: true}
		if o.HTTP.URLQuery != nil {
			h.urlQuery = *o.HTTP.URLQuery
		}
		if o.HTTP.UserInfo != nil {
			h.userInfo = *o.HTTP.UserInfo
		}
		if hd := o.HTTP.Headers; hd != nil {
			if hd.Allow != nil && hd.Deny != nil {
				errs = append(errs, b.Errorf("http.headers", "set http.headers.allow or http.headers.deny, not both"))
			}
			if hd.Allow != nil {
				h.allow = lower(*hd.Allow)
			}
			if hd.Deny != nil {
				h.deny = lower(*hd.Deny)
			}
		}
		r.http = h
	}
	if o.Kafka != nil {
		r.kafkaAPIKey = o.Kafka.APIKey
	}
	if o.IP != nil {
		m, fields, ipErrs := buildIP(b, o.IP)
		errs = append(errs, ipErrs...)
		r.ip, r.ipFields = m, fields
	}
	if len(errs) > 0 {
		return nil, errs
	}
	return r, nil
}

func lower(names []string) []string {
	out := make([]string, len(names))
	for i, n := range names {
		out[i] = strings.ToLower(n)
	}
	return out
}

func buildIP(b *pipeline.Build, o *IPOptions) (*ipMapper, []ipField, config.Errors) {
	node, dir := b.At("ip"), b.Dir
	var errs config.Errors
	var m *ipMapper
	switch o.Mode {
	case "hmac":
		if o.IPv4Prefix != nil || o.IPv6Prefix != nil {
			errs = append(errs, b.Errorf("ip", "ipv4_prefix and ipv6_prefix apply to mode truncate, not hmac"))
		}
		if o.KeyFile == "" {
			if !hasKey(node, "key_file") {
				errs = append(errs, b.Errorf("ip", "ip mode hmac needs key_file"))
			}
			break
		}
		key, err := readKey(o.KeyFile, dir)
		if err != nil {
			errs = append(errs, b.Errorf("ip.key_file", "%v", err))
			break
		}
		m = newHMACMapper(key)
	case "truncate":
		if o.KeyFile != "" {
			errs = append(errs, b.Errorf("ip.key_file", "key_file applies to mode hmac, not truncate"))
		}
		v4, v6 := 24, 48
		if o.IPv4Prefix != nil {
			v4 = *o.IPv4Prefix
			if v4 < 0 || v4 > 32 {
				errs = append(errs, b.Errorf("ip.ipv4_prefix", "ipv4_prefix %d is out of range 0-32", v4))
			}
		}
		if o.IPv6Prefix != nil {
			v6 = *o.IPv6Prefix
			if v6 < 0 || v6 > 128 {
				errs = append(errs, b.Errorf("ip.ipv6_prefix", "ipv6_prefix %d is out of range 0-128", v6))
			}
		}
		m = newTruncateMapper(v4, v6)
	case "":
		if !hasKey(node, "mode") { // else it did not decode, and that is reported
			errs = append(errs, b.Errorf("ip", "ip needs mode: hmac or truncate"))
		}
	default:
		errs = append(errs, b.Errorf("ip.mode", "unknown ip mode %q (want hmac or truncate)", o.Mode))
	}

	var fields []ipField
	if o.Fields == nil {
		for _, s := range DefaultIPFields {
			fields = append(fields, newIPField(fieldpath.MustParse(s)))
		}
	} else if len(o.Fields) == 0 {
		errs = append(errs, b.Errorf("ip.fields", "ip.fields is empty; leave it out for the default fields"))
	}
	for _, p := range o.Fields {
		if p.Leaf() == nil {
			continue // did not decode; reported
		}
		if leaf := p.Leaf(); leaf.Kind() != protoreflect.StringKind || leaf.IsMap() {
			errs = append(errs, config.Errorf(p.Node, "ip.fields: %s is not a string field holding addresses", p.String()))
			continue
		}
		fields = append(fields, newIPField(p.Path))
	}
	return m, fields, errs
}

// readKey reads the HMAC key file that ip.key_file names; trailing CR and
// LF bytes are dropped. Neither the key nor the path is put in an error: a
// key pasted in place of its path must not be echoed.
func readKey(name, dir string) ([]byte, error) {
	key, err := sinkutil.ReadSecretFile("ip.key_file", dir, name)
	if err != nil {
		return nil, err
	}
	key = bytes.TrimRight(key, "\r\n")
	if len(key) < minKeyLen {
		return nil, fmt.Errorf("ip.key_file: the key is %d bytes, want at least %d (e.g. head -c 32 /dev/urandom > hmac.key)", len(key), minKeyLen)
	}
	return key, nil
}

// valueNode follows keys through nested mappings from n and returns the
// value found, or the deepest node reached.
func valueNode(n *yaml.Node, keys ...string) *yaml.Node {
	for _, key := range keys {
		if n == nil || n.Kind != yaml.MappingNode {
			return n
		}
		found := false
		for i := 0; i+1 < len(n.Content); i += 2 {
			if n.Content[i].Value == key {
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

// hasKey reports whether the mapping n has key.
func hasKey(n *yaml.Node, key string) bool {
	return n != nil && valueNode(n, key) != n
}

// Redactor is a redact transform. It is used by one goroutine at a time.
type Redactor struct {
	remove      []removeField
	http        *httpRules // nil: no HTTP redaction
	kafkaAPIKey bool
	ip          *ipMapper // nil: no IP rules
	ipFields    []ipField

	// buf is the scratch buffer of text.
	buf []byte
}

// ipField is a string or repeated string field holding addresses.
type ipField struct {
	path fieldpath.Path
	// gp is the path through the generated structs, used when fast is
	// set: writing with reflect.Value.SetString does not allocate, where
	// protoreflect's Set boxes the string.
	gp   goPath
	fast bool
}

func newIPField(p fieldpath.Path) ipField {
	gp, ok := compileGoPath(p)
	if ok && gp.leaf.wrapper != nil {
		ok = false // a oneof string member: none in flow.Flow
	}
	return ipField{path: p, gp: gp, fast: ok}
}

// removeField is a field path to clear.
type removeField struct {
	path fieldpath.Path
	gp   goPath
	fast bool
}

func newRemoveField(p fieldpath.Path) removeField {
	gp, ok := compileGoPath(p)
	return removeField{path: p, gp: gp, fast: ok}
}

// Process redacts every flow of b in place.
func (r *Redactor) Process(b *pipeline.Batch) {
	for i := range b.Events {
		if f := b.Events[i].Flow; f != nil && b.Events[i].Lost == nil {
			r.Redact(f)
		}
	}
}

// Redact applies the rules to f in place.
func (r *Redactor) Redact(f *flowpb.Flow) {
	for i := range r.remove {
		if p := &r.remove[i]; p.fast {
			p.gp.clear(f)
		} else {
			p.path.Clear(f)
		}
	}
	if l7 := f.GetL7(); l7 != nil {
		if h := l7.GetHttp(); h != nil && r.http != nil {
			if old, new := r.http.apply(h); old != new && old != "" && f.Summary != "" {
				f.Summary = strings.ReplaceAll(f.Summary, old, new)
			}
		}
		if k := l7.GetKafka(); k != nil && r.kafkaAPIKey {
			k.ApiKey = Redacted
		}
	}
	if r.ip != nil {
		for i := range r.ipFields {
			r.rewrite(f, &r.ipFields[i])
		}
		r.redactText(f)
	}
}

// rewrite maps the addresses in the field fl of f, if it is set.
func (r *Redactor) rewrite(f *flowpb.Flow, fl *ipField) {
	if fl.fast {
		v, ok := fl.gp.parent(f)
		if !ok {
			return
		}
		v = v.Field(fl.gp.leaf.field)
		if v.Kind() == reflect.String {
			if old := v.String(); old != "" {
				v.SetString(r.mapAddr(old))
			}
			return
		}
		for i := range v.Len() {
			if e := v.Index(i); e.String() != "" {
				e.SetString(r.mapAddr(e.String()))
			}
		}
		return
	}
	m := f.ProtoReflect()
	fds := fl.path.Fields()
	for _, fd := range fds[:len(fds)-1] {
		if !m.Has(fd) {
			return
		}
		m = m.Get(fd).Message()
	}
	leaf := fds[len(fds)-1]
	if !m.Has(leaf) {
		return
	}
	if leaf.IsList() {
		l := m.Mutable(leaf).List()
		for i := range l.Len() {
			if old := l.Get(i).String(); old != "" {
				l.Set(i, protoreflect.ValueOfString(r.mapAddr(old)))
			}
		}
		return
	}
	m.Set(leaf, protoreflect.ValueOfString(r.mapAddr(m.Get(leaf).String())))
}

func (r *Redactor) mapAddr(old string) string { return r.ip.Map(old) }
