package kafka

import "github.com/prometheus/client_golang/prometheus"

// metrics are the source's Prometheus counters.
type metrics struct {
	records, malformed, skipped prometheus.Counter
	commits, commitErrors       prometheus.Counter
	nacked, rejoins             prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	c := func(name, help string) prometheus.Counter {
		return prometheus.NewCounter(prometheus.CounterOpts{Name: "flowbus_kafka_source_" + name, Help: help})
	}
	m := &metrics{
		records:      c("records_total", "Records fetched."),
		malformed:    c("malformed_records_total", "Records that did not decode, skipped (their offsets are committed)."),
		skipped:      c("skipped_records_total", "Valid envelopes holding neither a flow nor a LostEvent (node status), skipped."),
		commits:      c("commits_total", "Offset commits made after acknowledgement."),
		commitErrors: c("commit_errors_total", "Offset commits that failed (retried at the next commit)."),
		nacked:       c("nacked_batches_total", "Batches a sink gave up on: not committed, read again."),
		rejoins:      c("rejoins_total", "Times the consumer left and rejoined its group to read nacked records again."),
	}
	if reg == nil {
		return m, nil
	}
	for _, col := range []prometheus.Collector{m.records, m.malformed, m.skipped, m.commits, m.commitErrors, m.nacked, m.rejoins} {
		if err := reg.Register(col); err != nil {
			return nil, err
		}
	}
	return m, nil
}
