package hubble_test

import (
	"strings"
	"testing"

	"github.com/flowbus/flowbus/internal/sinktest"
	"github.com/flowbus/flowbus/pipeline"
	"github.com/flowbus/flowbus/sources/hubble"
)

// TestConfig: every bad key is an error naming it at load time.
func TestConfig(t *testing.T) {
	for _, tc := range []struct {
		name, yaml, want string
	}{
		{"defaults", "{}", ""},
		{"relay", "address: hubble-relay.kube-system.svc:443\nsince: 5m", ""},
		{"rfc3339 since", "since: 2026-01-02T15:04:05Z", ""},
		{"json filter", "allow: ['{\"verdict\":[\"DROPPED\"]}']", ""},
		{"empty address", "address: ''", "address is empty"},
		{"scheme", "address: http://relay:80", "want unix:///PATH or HOST:PORT"},
		{"no port", "address: relay", "want unix:///PATH or HOST:PORT"},
		{"no socket path", "address: unix://", "no socket path"},
		{"since", "since: yesterday", `since "yesterday": want a duration`},
		{"negative since", "since: -5m", "must not be negative"},
		{"backoff", "reconnect: {min: 2s, max: 1s}", "reconnect.max (1s) is below reconnect.min (2s)"},
		{"zero backoff", "reconnect: {min: 0s}", "reconnect.min must be positive"},
		{"filter field", "allow: [{no_such_field: [x]}]", "no_such_field"},
		{"filter value", "deny: [{source_ip: [not-an-ip]}]", "not-an-ip"},
		{"field mask", "field_mask: [source.no_such]", "no_such"},
		{"tls files", "tls: {cert_file: /nonexistent.pem}", "cert_file and key_file must be set together"},
		{"unknown key", "adress: x:1", "adress"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := pipeline.Make(sinktest.Build("hubble", ""), sinktest.Node(t, tc.yaml), hubble.New)
			if tc.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				if s.Ready() == nil {
					t.Fatal("ready before connecting")
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want one containing %q", err, tc.want)
			}
		})
	}
}
