package kafka

import (
	"context"
	"crypto/tls"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/segmentio/kafka-go/sasl/plain"
	"github.com/segmentio/kafka-go/sasl/scram"
	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/flowbus/flowbus/internal/sinktest"
	"github.com/flowbus/flowbus/internal/sinkutil"
	"github.com/flowbus/flowbus/pipeline"
)

type sinkutilTLS = sinkutil.TLS

func TestSASL(t *testing.T) {
	dir := t.TempDir()
	pw := filepath.Join(dir, "password")
	if err := os.WriteFile(pw, []byte("s3cret-pass\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	c := newCluster(t, kfake.EnableSASL(), kfake.SeedTopics(1, "sasl"),
		kfake.Superuser("PLAIN", "plainuser", "s3cret-pass"),
		kfake.Superuser("SCRAM-SHA-256", "scram256", "s3cret-pass"),
		kfake.Superuser("SCRAM-SHA-512", "scram512", "s3cret-pass"))
	broker := c.ListenAddrs()[0]
	total := 0
	for _, tt := range []struct{ mech, user string }{
		{"plain", "plainuser"}, {"scram-sha-256", "scram256"}, {"scram-sha-512", "scram512"},
	} {
		t.Run(tt.mech, func(t *testing.T) {
			s := newSink(t, "json", fmt.Sprintf("brokers: [%s]\ntopic: sasl\nsasl: {mechanism: %s, username: %s, password_file: %s}\n", broker, tt.mech, tt.user, pw))
			b := sinktest.Batch(0, 25)
			defer b.Release()
			if failed, err := s.Write(context.Background(), b); failed != 0 || err != nil {
				t.Fatal(failed, err)
			}
			total += 25
		})
	}
	mech, err := scram.Mechanism(scram.SHA512, "scram512", "s3cret-pass")
	if err != nil {
		t.Fatal(err)
	}
	dialer := &kafka.Dialer{Timeout: 5 * time.Second, SASLMechanism: mech}
	if n := len(readAll(t, broker, "sasl", dialer)[0]); n != total {
		t.Errorf("%d records, want %d", n, total)
	}

	// A wrong password fails at Start, and the error does not carry it.
	bad := filepath.Join(dir, "bad")
	os.WriteFile(bad, []byte("wrong-pass-xyz"), 0o600)
	s, err := pipeline.Make(sinktest.Build("kafka", "json"), sinktest.Node(t, fmt.Sprintf("brokers: [%s]\ntopic: sasl\nbatch_timeout: 2s\nsasl: {mechanism: plain, username: plainuser, password_file: %s}\n", broker, bad)), New)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close(context.Background())
	err = s.Start(context.Background())
	if err == nil {
		t.Fatal("Start with a wrong password succeeded")
	}
	if strings.Contains(err.Error(), "wrong-pass-xyz") {
		t.Errorf("error leaks the password: %v", err)
	}
	_ = plain.Mechanism{}
}

func TestTLS(t *testing.T) {
	pki := sinktest.NewPKI(t)
	c := newCluster(t, kfake.TLS(pki.Server), kfake.SeedTopics(1, "tls"))
	broker := c.ListenAddrs()[0]
	s := newSink(t, "protobuf", fmt.Sprintf("brokers: [%s]\ntopic: tls\ntls: {ca_file: %s, cert_file: %s, key_file: %s}\n", broker, pki.CAFile, pki.ClientCert, pki.ClientKey))
	b := sinktest.Batch(0, 40)
	defer b.Release()
	if failed, err := s.Write(context.Background(), b); failed != 0 || err != nil {
		t.Fatal(failed, err)
	}
	cert, err := tls.LoadX509KeyPair(pki.ClientCert, pki.ClientKey)
	if err != nil {
		t.Fatal(err)
	}
	tc, err := (&sinkutilTLS{CAFile: pki.CAFile}).Config("")
	if err != nil {
		t.Fatal(err)
	}
	tc.Certificates = []tls.Certificate{cert}
	dialer := &kafka.Dialer{Timeout: 5 * time.Second, TLS: tc}
	if n := len(readAll(t, broker, "tls", dialer)[0]); n != 40 {
		t.Errorf("%d records, want 40", n)
	}

	// Without the client certificate the broker refuses the connection.
	s2, err := pipeline.Make(sinktest.Build("kafka", "json"), sinktest.Node(t, fmt.Sprintf("brokers: [%s]\ntopic: tls\nbatch_timeout: 2s\ntls: {ca_file: %s}\n", broker, pki.CAFile)), New)
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close(context.Background())
	if err := s2.Start(context.Background()); err == nil {
		t.Error("Start without a client certificate succeeded")
	}
}
