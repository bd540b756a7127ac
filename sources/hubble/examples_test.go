package hubble_test

import (
	"os"
	"path/filepath"
	"runtime"
	"testing"

	"github.com/flowbus/flowbus/internal/sinktest"
	"github.com/flowbus/flowbus/pipeline"
	"github.com/flowbus/flowbus/pipeline/config"
	_ "github.com/flowbus/flowbus/sinks/kafka"
	_ "github.com/flowbus/flowbus/sinks/nats"
	_ "github.com/flowbus/flowbus/transforms/filter"
	_ "github.com/flowbus/flowbus/transforms/redact"
)

// TestExamples: the documented hubble pipelines load and build (with
// Relay's client certificate files in place).
func TestExamples(t *testing.T) {
	_, file, _, _ := runtime.Caller(0)
	dir := filepath.Join(filepath.Dir(file), "..", "..", "docs", "examples")
	pki := sinktest.NewPKI(t)
	tlsDir := t.TempDir()
	for src, dst := range map[string]string{pki.CAFile: "ca.crt", pki.ClientCert: "client.crt", pki.ClientKey: "client.key"} {
		b, err := os.ReadFile(src)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(tlsDir, dst), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	t.Setenv("RELAY_TLS_DIR", tlsDir)
	for _, name := range []string{"hubble-relay-kafka.yaml", "cilium-node.yaml"} {
		t.Run(name, func(t *testing.T) {
			c, err := config.Load(filepath.Join(dir, name))
			if err != nil {
				t.Fatal(err)
			}
			if _, err := pipeline.New(c, pipeline.Options{}); err != nil {
				t.Fatal(err)
			}
		})
	}
}
