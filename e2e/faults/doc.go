// Package faults is flowbus's fault-injection suite: its tests run the real
// binary (built once by TestMain) and inject the faults an agent meets in
// production — SIGHUP with a valid or an invalid configuration, a closed
// stdout (SIGPIPE), SIGKILL while the file sink rotates, a full disk, a
// broker down at start (the agent starts unready and does not crash-loop),
// a broker outage in the middle of the stream, a Kafka lost_topic that
// does not exist (the sink keeps delivering flows), and the parquet sink
// under SIGTERM, SIGKILL, a full disk and paths it must refuse (DuckDB
// reads every file it leaves visible). Each test checks that
// the exit summary reconciles (received = delivered + filtered + sampled +
// rate_limited + lost, per sink and in total) and that the output stays
// parseable: every flow the summary calls delivered is in the output, and
// the LostEvents in the stream count exactly what the summary calls lost (at
// most what it calls lost when the destination itself is what fails, as
// with a full disk).
package faults
