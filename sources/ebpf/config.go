//go:build linux

package ebpf

import (
	"fmt"
	"time"

	"github.com/flowbus/flowbus/bpf"
	"github.com/flowbus/flowbus/pipeline"
	"github.com/flowbus/flowbus/pipeline/config"
)

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
	switch o.Hook {
	case "tc":
		s.load.Hook = bpf.HookTC
	case "tracepoint":
		s.load.Hook = bpf.HookTracepoint
		if o.Attach != "auto" {
			bad("attach", "attach: %q applies to hook: tc only (hook is tracepoint)", o.Attach)
		}
	default:
		bad("hook", "hook: %q is not tc or tracepoint", o.Hook)
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
	return fmt.Sprintf("direction=%s aggregate=%v capture_length=%d perf_buffer_pages=%d event_buffer=%s drops=%v hook=%s attach=%s",
		dir, s.load.Aggregate, s.load.CaptureLength, s.perfPages, s.buffer, s.load.Drops, s.load.Hook, s.attach)
}
