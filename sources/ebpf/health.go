//go:build linux

package ebpf

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/flowbus/flowbus/bpf"
)

// healthInterval is how often the source compares, per interface and
// direction, the packets the kernel counted with those its programs saw.
var healthInterval = 5 * time.Second

// kernelPackets reads an interface's packet counter for direction d
// (rx_packets for ingress, tx_packets for egress).
func kernelPackets(name string, d bpf.Direction) (uint64, error) {
	file := "rx_packets"
	if d == bpf.Egress {
		file = "tx_packets"
	}
	b, err := os.ReadFile("/sys/class/net/" + name + "/statistics/" + file)
	if err != nil {
		return 0, err
	}
	return strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
}

// checkHealthLocked updates every attachment's view of whether flowbus's
// programs see its traffic: an interface direction is blind when the
// kernel passed packets through it since the last check and the programs
// saw none (another program ahead of flowbus's ended the chain). It logs
// each change, and Ready reports the blind ones.
func (s *Source) checkHealthLocked() {
	if s.objs == nil || s.detached {
		return
	}
	for _, a := range s.attached {
		ours, err := s.objs.InterfacePackets(a.index)
		if err != nil {
			continue
		}
		for i, d := range a.dirs {
			kernel, err := kernelPackets(a.name, d)
			if err != nil {
				continue
			}
			if a.checked {
				dOurs, dKernel := ours[d]-a.lastOurs[d], kernel-a.lastKernel[d]
				blind := dKernel > 0 && dOurs == 0
				if dKernel == 0 {
					blind = a.blind[d] // no traffic: nothing learned
				}
				if blind != a.blind[d] {
					a.links[i].Refresh()
					if blind {
						s.log.Warn("ebpf source: packets pass the interface but flowbus's program sees none: another program ahead of it ends the chain (hook: tracepoint sees the packets whatever TC runs)",
							"interface", a.name, "direction", d.String(), "packets", dKernel, "mode", a.links[i].Mode, "others", a.links[i].Others)
					} else {
						s.log.Info("ebpf source: sees traffic again", "interface", a.name, "direction", d.String())
					}
				}
				a.blind[d] = blind
			}
			a.lastKernel[d] = kernel
		}
		a.seen = ours
		a.lastOurs = ours
		a.checked = true
	}
	s.blindErr.Store(s.blindLocked())
}

// blindLocked describes the blind interface directions, or returns nil.
func (s *Source) blindLocked() *error {
	var parts []string
	for _, a := range s.attached {
		for i, d := range a.dirs {
			if a.blind[d] {
				parts = append(parts, fmt.Sprintf("interface %s %s: packets pass but flowbus sees none (%s; other programs: %s; hook: tracepoint would see them)",
					a.name, d, a.links[i].Mode, strings.Join(a.links[i].Others, ", ")))
			}
		}
	}
	if len(parts) == 0 {
		return nil
	}
	err := errors.New(strings.Join(parts, "; "))
	return &err
}

var (
	ifacePacketsDesc = prometheus.NewDesc("flowbus_ebpf_interface_packets_total",
		"Packets flowbus's programs saw, per interface and direction.",
		[]string{"interface", "direction"}, nil)
	ifaceSeesDesc = prometheus.NewDesc("flowbus_ebpf_interface_sees_traffic",
		"1 when flowbus's program sees the traffic of the interface direction, 0 when the kernel passed packets that it did not see (another program ahead of it ended the chain).",
		[]string{"interface", "direction"}, nil)
)

// interfaceMetrics exports the per-interface counters at scrape time.
type interfaceMetrics struct{ s *Source }

func (c interfaceMetrics) Describe(ch chan<- *prometheus.Desc) {
	ch <- ifacePacketsDesc
	ch <- ifaceSeesDesc
}

func (c interfaceMetrics) Collect(ch chan<- prometheus.Metric) {
	c.s.mu.Lock()
	defer c.s.mu.Unlock()
	for _, a := range c.s.attached {
		var ours [2]uint64
		if c.s.objs != nil {
			ours, _ = c.s.objs.InterfacePackets(a.index)
		}
		for _, d := range a.dirs {
			ch <- prometheus.MustNewConstMetric(ifacePacketsDesc, prometheus.CounterValue, float64(ours[d]), a.name, d.String())
			sees := 1.0
			if a.blind[d] {
				sees = 0
			}
			ch <- prometheus.MustNewConstMetric(ifaceSeesDesc, prometheus.GaugeValue, sees, a.name, d.String())
		}
	}
}
