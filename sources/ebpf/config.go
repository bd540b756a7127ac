package ebpf

import (
	"fmt"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/flowbus/flowbus/bpf"
	"github.com/flowbus/flowbus/pipeline"
	"github.com/flowbus/flowbus/pipeline/config"
)

// Defaults of the keys.
const (
	DefaultCaptureLength       = 128 // Cilium's trace payload length
	DefaultPerfBufferPages     = 64  // per CPU, as Cilium's monitor
	DefaultAggregationInterval = 5 * time.Second
)

// Options are the source's YAML keys.
type Options struct {
	Interfaces          interfaceList   `yaml:"interfaces" default:"all" type:"all or list of strings" doc:"the interfaces to attach to; all: every up, non-loopback interface, including those that come up later (seen from the kernel's link events); a named interface that does not exist yet is waited for (the source is not ready meanwhile)"`
	Direction           string          `yaml:"direction" default:"both" doc:"ingress, egress or both"`
	Aggregation         string          `yaml:"aggregation" default:"connection" doc:"connection (report a connection again only after aggregation_interval or a TCP flag change) or none"`
	AggregationInterval config.Duration `yaml:"aggregation_interval" default:"5s" doc:"how often an aggregated connection is reported again while packets keep flowing (at least 1ms)"`
	CaptureLength       *int            `yaml:"capture_length" default:"128" doc:"packet bytes captured after each sample header (Cilium's trace payload length); at least 114, so that every header of a TCP handshake packet fits"`
	PerfBufferPages     int             `yaml:"perf_buffer_pages" default:"64" doc:"perf ring size per CPU, in pages (1 to 65536); the BPF ring buffer, shared by all CPUs, gets as many pages as the perf rings of all CPUs together, rounded up to a power of two (at least 4 MiB at the default)"`
	EventBuffer         string          `yaml:"event_buffer" default:"auto" doc:"where the programs write their samples: ring (one BPF ring buffer for all CPUs, Linux 5.8 and later), perf (a perf ring per CPU), or auto (ring where the kernel has it, else perf)"`
	Record              string          `yaml:"record" doc:"a file to write every raw sample to as a cilium-monitor stream, for replay with the cilium-monitor source"`
	Drops               *bool           `yaml:"drops" default:"true" doc:"report the packets the kernel drops (skb:kfree_skb) as DROPPED flows"`
	Attach              string          `yaml:"attach" default:"auto" doc:"how the TC programs attach: tcx (at the head of the chain, Linux 6.6 and later), clsact (a filter ahead of the existing ones), or auto (tcx where the kernel has it, else clsact)"`
}

// interfaceList is `all` or a list of interface names.
type interfaceList struct {
	All   bool
	Names []string
}

// UnmarshalConfig implements config.Unmarshaler.
func (l *interfaceList) UnmarshalConfig(n *yaml.Node) error {
	switch n.Kind {
	case yaml.ScalarNode:
		if n.Value == "all" {
			*l = interfaceList{All: true}
			return nil
		}
		*l = interfaceList{Names: []string{n.Value}}
		return nil
	case yaml.SequenceNode:
		var names []string
		for _, c := range n.Content {
			if c.Kind != yaml.ScalarNode || c.Value == "" {
				return config.Errorf(c, "interfaces: expected an interface name")
			}
			if c.Value == "all" {
				if len(n.Content) != 1 {
					return config.Errorf(c, "interfaces: `all` cannot be combined with names")
				}
				*l = interfaceList{All: true}
				return nil
			}
			names = append(names, c.Value)
		}
		if len(names) == 0 {
			return config.Errorf(n, "interfaces: empty list (use `all` or name interfaces)")
		}
		*l = interfaceList{Names: names}
		return nil
	}
	return config.Errorf(n, "interfaces: expected `all` or a list of interface names")
}

// settings are the validated options.
type settings struct {
	interfaces      interfaceList
	ingress, egress bool
	load            bpf.Config
	perfPages       int
	record          string
	attach          bpf.AttachMode
	buffer          string // auto, ring or perf
}

// check validates the decoded options.
func check(b *pipeline.Build, o *Options) (settings, error) {
	s := settings{interfaces: o.Interfaces, perfPages: o.PerfBufferPages, record: o.Record}
	var errs config.Errors
	bad := func(key, format string, args ...any) {
		errs = append(errs, b.Errorf(key, format, args...))
	}
	switch o.Direction {
	case "ingress":
		s.ingress = true
	case "egress":
		s.egress = true
	case "both":
		s.ingress, s.egress = true, true
	default:
		bad("direction", "direction: %q is not ingress, egress or both", o.Direction)
	}
	switch o.Aggregation {
	case "connection":
		s.load.Aggregate = true
	case "none":
	default:
		bad("aggregation", "aggregation: %q is not none or connection", o.Aggregation)
	}
	if o.AggregationInterval.D() < time.Millisecond {
		bad("aggregation_interval", "aggregation_interval: %s is below the minimum of 1ms", o.AggregationInterval)
	}
	s.load.AggregationInterval = o.AggregationInterval.D()
	capLen := *o.CaptureLength
	switch {
	case capLen > bpf.MaxCaptureLength:
		bad("capture_length", "capture_length: %d is above the maximum of %d", capLen, bpf.MaxCaptureLength)
	case capLen < bpf.MinCaptureLength:
		bad("capture_length", "capture_length: %d is below the minimum of %d, the bytes of an Ethernet, an IPv6 and a TCP header with the most options (14+40+60): a shorter capture cuts the headers of TCP handshake packets, whose flows would be lost", capLen, bpf.MinCaptureLength)
	}
	s.load.CaptureLength = uint32(max(capLen, 0))
	if o.PerfBufferPages < 1 || o.PerfBufferPages > 1<<16 {
		bad("perf_buffer_pages", "perf_buffer_pages: %d is outside 1..65536", o.PerfBufferPages)
	}
	s.load.Drops = o.Drops == nil || *o.Drops
	switch o.EventBuffer {
	case "auto", "ring", "perf":
		s.buffer = o.EventBuffer
	default:
		bad("event_buffer", "event_buffer: %q is not auto, ring or perf", o.EventBuffer)
	}
	switch o.Attach {
	case "auto":
		s.attach = bpf.AttachAuto
	case "tcx":
		s.attach = bpf.AttachTCX
	case "clsact":
		s.attach = bpf.AttachClsact
	default:
		bad("attach", "attach: %q is not auto, tcx or clsact", o.Attach)
	}
	if len(errs) > 0 {
		return settings{}, errs
	}
	return s, nil
}

func (s settings) String() string {
	dir := "both"
	if !s.egress {
		dir = "ingress"
	} else if !s.ingress {
		dir = "egress"
	}
	return fmt.Sprintf("direction=%s aggregate=%v capture_length=%d perf_buffer_pages=%d event_buffer=%s drops=%v attach=%s",
		dir, s.load.Aggregate, s.load.CaptureLength, s.perfPages, s.buffer, s.load.Drops, s.attach)
}
