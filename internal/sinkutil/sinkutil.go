// Package sinkutil holds what the broker sinks share: TLS settings, secrets
// read from files, the retry driver and its backoff, message headers, the
// connection key, and per-sink delivery metrics.
package sinkutil

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// TLS is the `tls` mapping of a broker sink.
type TLS struct {
	CAFile             string `yaml:"ca_file" doc:"PEM certificates of the CAs to trust; default: the system's"`
	CertFile           string `yaml:"cert_file" doc:"a PEM client certificate, with key_file"`
	KeyFile            string `yaml:"key_file" doc:"the PEM key of cert_file"`
	ServerName         string `yaml:"server_name" doc:"the name to verify the server's certificate against; default: the host dialed"`
	InsecureSkipVerify bool   `yaml:"insecure_skip_verify" default:"false" doc:"do not verify the server's certificate (tests only)"`
}

// Config builds the client TLS configuration; relative paths are resolved
// against dir (the config file's directory).
func (t *TLS) Config(dir string) (*tls.Config, error) {
	c := &tls.Config{
		MinVersion:         tls.VersionTLS12,
		ServerName:         t.ServerName,
		InsecureSkipVerify: t.InsecureSkipVerify, //nolint:gosec // explicit user choice
	}
	if t.CAFile != "" {
		pem, err := ReadSecretFile("tls.ca_file", dir, t.CAFile)
		if err != nil {
			return nil, err
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("tls.ca_file: the file it names holds no PEM certificate")
		}
		c.RootCAs = pool
	}
	if (t.CertFile == "") != (t.KeyFile == "") {
		return nil, fmt.Errorf("tls: cert_file and key_file must be set together")
	}
	if t.CertFile != "" {
		certPEM, err := ReadSecretFile("tls.cert_file", dir, t.CertFile)
		if err != nil {
			return nil, err
		}
		keyPEM, err := ReadSecretFile("tls.key_file", dir, t.KeyFile)
		if err != nil {
			return nil, err
		}
		cert, err := tls.X509KeyPair(certPEM, keyPEM)
		if err != nil {
			return nil, fmt.Errorf("tls client certificate (cert_file, key_file): %w", err)
		}
		c.Certificates = []tls.Certificate{cert}
	}
	return c, nil
}

// Path resolves p against dir unless it is absolute.
func Path(dir, p string) string {
	if p == "" || filepath.IsAbs(p) || dir == "" {
		return p
	}
	return filepath.Join(dir, p)
}

// ReadSecret reads a secret from the file that config key names (relative
// to dir), without its trailing newline. Its errors are those of
// ReadSecretFile.
func ReadSecret(key, dir, file string) (string, error) {
	b, err := ReadSecretFile(key, dir, file)
	if err != nil {
		return "", err
	}
	s := strings.TrimRight(string(b), "\r\n")
	if s == "" {
		return "", fmt.Errorf("%s: the file it names holds only a newline", key)
	}
	return s, nil
}

// MaxSecretFile bounds the size of a file read by ReadSecretFile.
const MaxSecretFile = 4 << 20

// ReadSecretFile reads the file that config key (e.g. "sasl.password_file")
// names, resolved against dir. Its errors name the key, never the value:
// people paste a secret where its file belongs, and the error must not
// print it (`password_file: hunter2` gives "sasl.password_file: cannot
// read the file it names: no such file or directory"). An empty file, or
// one over MaxSecretFile, is an error too.
func ReadSecretFile(key, dir, path string) ([]byte, error) {
	f, err := os.Open(Path(dir, path))
	if err != nil {
		return nil, fmt.Errorf("%s: cannot read the file it names: %w", key, pathless(err))
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, MaxSecretFile+1))
	switch {
	case err != nil:
		return nil, fmt.Errorf("%s: cannot read the file it names: %w", key, pathless(err))
	case len(b) > MaxSecretFile:
		return nil, fmt.Errorf("%s: the file it names is over %d bytes", key, MaxSecretFile)
	case len(b) == 0:
		return nil, fmt.Errorf("%s: the file it names is empty", key)
	}
	return b, nil
}

// pathless returns the cause of a file error without the path.
func pathless(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

// Backoff computes exponential retry delays with jitter.
type Backoff struct {
	Min, Max time.Duration
}

// Delay returns the wait before retry number attempt (1 for the first
// retry): Min doubled per attempt, capped at Max, with ±20% jitter.
func (b Backoff) Delay(attempt int) time.Duration {
	d := b.Min
	for i := 1; i < attempt && d < b.Max; i++ {
		d *= 2
	}
	if d > b.Max {
		d = b.Max
	}
	if d <= 0 {
		return 0
	}
	j := time.Duration(rand.Int64N(int64(d)/5 + 1))
	if rand.IntN(2) == 0 {
		return d - j
	}
	return d + j
}

// Sleep waits d, or until done or stop (either may be nil) is closed; it
// reports whether d elapsed.
func Sleep(done <-chan struct{}, d time.Duration, stop <-chan struct{}) bool {
	if d <= 0 {
		return true
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-done:
		return false
	case <-stop:
		return false
	}
}

// Metrics are the delivery counters every broker sink exports.
type Metrics struct {
	Sent    prometheus.Counter // messages handed to the broker client (each attempt)
	Acked   prometheus.Counter // messages the broker acknowledged
	Retried prometheus.Counter // messages sent again after a failure
	Failed  prometheus.Counter // messages given up after max_attempts
	// LostFailed counts flowbus's own LostEvents a Write gave up on (their
	// losses are reported again at the next flush).
	LostFailed prometheus.Counter
	Latency    prometheus.Histogram
}

// NewMetrics creates the metrics and registers them with reg (which adds
// the component labels); reg may be nil.
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	m := &Metrics{
		Sent: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "flowbus_sink_messages_sent_total",
			Help: "Messages handed to the broker, counting every attempt.",
		}),
		Acked: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "flowbus_sink_messages_acked_total",
			Help: "Messages the broker acknowledged.",
		}),
		Retried: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "flowbus_sink_messages_retried_total",
			Help: "Messages sent again after a failed attempt.",
		}),
		Failed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "flowbus_sink_messages_failed_total",
			Help: "Messages given up after max_attempts (reported in LostEvents).",
		}),
		LostFailed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "flowbus_sink_lost_events_failed_total",
			Help: "flowbus's own LostEvents the broker did not take; their losses are reported again at the next flush.",
		}),
		Latency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "flowbus_sink_write_latency_seconds",
			Help:    "Time from handing a batch to the broker until every message of it was acknowledged or given up.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16),
		}),
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.Sent, m.Acked, m.Retried, m.Failed, m.LostFailed, m.Latency} {
			if err := reg.Register(c); err != nil {
				return nil, fmt.Errorf("register metrics: %w", err)
			}
		}
	}
	return m, nil
}
