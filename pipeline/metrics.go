package pipeline

import (
	"fmt"
	"net/http"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

var (
	labels = []string{"component", "type", "kind"}

	descEventsIn = prometheus.NewDesc("flowbus_component_events_in_total",
		"Events a transform or sink took from its input buffer.", labels, nil)
	descEventsOut = prometheus.NewDesc("flowbus_component_events_out_total",
		"Events a source emitted, a transform passed on, or a sink delivered (accepted; a sink's late losses are counted apart, in events_lost_total{reason=\"sink_late\"}).", labels, nil)
	descRemoved = prometheus.NewDesc("flowbus_component_events_removed_total",
		"Events a transform removed on purpose, by reason (filtered, sampled, rate_limited).", append(labels, "reason"), nil)
	descLost = prometheus.NewDesc("flowbus_component_events_lost_total",
		"Events lost at a component, by reason: buffer_full (input buffer refused them), sink_failed (a sink gave up on them), sink_late (a sink accepted them and lost them afterwards: a file it could not complete), source (the source reported them lost), panic.", append(labels, "reason"), nil)
	descBatches = prometheus.NewDesc("flowbus_component_batches_total",
		"Batches a component handled.", labels, nil)
	descBuffer = prometheus.NewDesc("flowbus_buffer_events",
		"Events waiting in the input buffer of a transform or sink.", labels, nil)
	descBufferCap = prometheus.NewDesc("flowbus_buffer_capacity_events",
		"Capacity of the input buffer of a transform or sink, in events.", labels, nil)
	descLostEvents = prometheus.NewDesc("flowbus_lost_events_reported_total",
		"LostEvents flowbus put in a sink's stream.", labels, nil)
	descSinkLost = prometheus.NewDesc("flowbus_sink_events_lost_total",
		"Events reported lost in a sink's stream (the summary's lost for that sink).", labels, nil)
	descDiskBytes = prometheus.NewDesc("flowbus_disk_buffer_bytes",
		"Bytes of a sink's disk buffer files.", labels, nil)
	descDiskBatches = prometheus.NewDesc("flowbus_disk_buffer_batches",
		"Batches in a sink's disk buffer not yet delivered.", labels, nil)
	descDiskWritten = prometheus.NewDesc("flowbus_disk_buffer_written_bytes_total",
		"Bytes a sink's disk buffer appended (records with their framing).", labels, nil)
)

// collector exposes the components' counters at scrape time, so the hot
// path only does atomic adds per batch.
type collector struct{ p *Pipeline }

func (c collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descEventsIn, descEventsOut, descRemoved, descLost, descBatches, descBuffer, descBufferCap, descLostEvents, descSinkLost, descDiskBytes, descDiskBatches, descDiskWritten} {
		ch <- d
	}
}

func (c collector) Collect(ch chan<- prometheus.Metric) {
	counter := func(d *prometheus.Desc, v uint64, lv ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), lv...)
	}
	for _, n := range c.p.nodes {
		kind := n.kind.String()
		lv := []string{n.name, n.typ, kind}
		counter(descEventsOut, n.stats.out.Load(), lv...)
		counter(descBatches, n.stats.batches.Load(), lv...)
		counter(descLost, n.stats.panicked.Load(), append(lv, "panic")...)
		switch n.kind {
		case kindSource:
			counter(descLost, n.stats.srcLost.Load(), append(lv, "source")...)
		case kindTransform:
			counter(descEventsIn, n.stats.in.Load(), lv...)
			reason := map[DropKind]string{DropsNone: "filtered", DropsFiltered: "filtered", DropsSampled: "sampled", DropsRateLimited: "rate_limited"}[n.drops]
			counter(descRemoved, n.stats.removed.Load(), append(lv, reason)...)
			counter(descLost, n.stats.dropped.Load(), append(lv, "buffer_full")...)
		case kindSink:
			counter(descEventsIn, n.stats.in.Load(), lv...)
			counter(descLost, n.stats.dropped.Load(), append(lv, "buffer_full")...)
			counter(descLost, n.stats.failed.Load(), append(lv, "sink_failed")...)
			counter(descLost, n.stats.lateLost.Load(), append(lv, "sink_late")...)
			counter(descLostEvents, n.loss.reported.Load(), lv...)
			counter(descSinkLost, n.loss.total.Load(), lv...)
			if d := n.disk; d != nil {
				counter(descDiskWritten, d.written.Load(), lv...)
				if d.log != nil {
					recs, size := d.log.Pending()
					ch <- prometheus.MustNewConstMetric(descDiskBytes, prometheus.GaugeValue, float64(size), lv...)
					ch <- prometheus.MustNewConstMetric(descDiskBatches, prometheus.GaugeValue, float64(recs), lv...)
				}
			}
		}
		if n.queue != nil {
			ch <- prometheus.MustNewConstMetric(descBuffer, prometheus.GaugeValue, float64(n.queue.length()), lv...)
			ch <- prometheus.MustNewConstMetric(descBufferCap, prometheus.GaugeValue, float64(n.queue.capacity), lv...)
		}
	}
}

// Registry returns the registry holding the pipeline's metrics, for the
// caller to add its own (build info, Go runtime).
func (p *Pipeline) Registry() *prometheus.Registry { return p.reg }

// Handler serves /metrics (Prometheus), /healthz (200 while the pipeline
// runs or drains) and /readyz (200 while it runs and every component that
// can be unready is ready; 503 with the reasons otherwise).
func (p *Pipeline) Handler() http.Handler {
	p.registerCollector()
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(p.reg, promhttp.HandlerOpts{Registry: p.reg}))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) {
		if p.state.ran.Load() {
			http.Error(w, "stopped", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, r *http.Request) {
		if reasons := p.notReady(); len(reasons) > 0 {
			http.Error(w, strings.Join(reasons, "\n"), http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ready")
	})
	return mux
}

func (p *Pipeline) registerCollector() {
	p.collectOnce.Do(func() { p.reg.MustRegister(collector{p}) })
}

// notReady lists why the pipeline is not ready; empty means ready.
func (p *Pipeline) notReady() []string {
	switch {
	case p.state.draining.Load():
		return []string{"shutting down"}
	case !p.state.running.Load():
		return []string{"not running"}
	}
	var reasons []string
	for _, n := range p.nodes {
		r, ok := n.component().(Readier)
		if !ok {
			continue
		}
		if err := r.Ready(); err != nil {
			reasons = append(reasons, fmt.Sprintf("%s %q: %v", n.kind, n.name, err))
		}
	}
	return reasons
}
