package ebpf

import (
	"time"

	"gopkg.in/yaml.v3"

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
	Hook                string          `yaml:"hook" default:"tc" doc:"where the programs see packets: tc (programs on each interface's TC hooks, attached ahead of other agents' programs; see attach) or tracepoint (the kernel's net:netif_receive_skb and net:net_dev_start_xmit tracepoints, which no TC program can hide a packet from: for hosts where another agent owns TC; egress packets are seen after TC and the qdisc, so those dropped there are reported only as drops)"`
	Attach              string          `yaml:"attach" default:"auto" doc:"how the TC programs attach (hook: tc): tcx (at the head of the chain, Linux 6.6 and later), clsact (a filter ahead of the existing ones), or auto (tcx where the kernel has it, else clsact)"`
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
