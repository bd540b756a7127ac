package sinkutil

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	flowpb "github.com/flowbus/flowbus/flow"
	"github.com/flowbus/flowbus/pipeline"
)

func tcpFlow(src, dst string, sp, dp uint32) *flowpb.Flow {
	return &flowpb.Flow{
		IP: &flowpb.IP{Source: src, Destination: dst},
		L4: &flowpb.Layer4{Protocol: &flowpb.Layer4_TCP{TCP: &flowpb.TCP{SourcePort: sp, DestinationPort: dp}}},
	}
}

func TestConnectionKey(t *testing.T) {
	tests := []struct {
		f    *flowpb.Flow
		want string
	}{
		{tcpFlow("10.0.0.2", "10.0.0.1", 43122, 80), "TCP 10.0.0.1:80 10.0.0.2:43122"},
		{tcpFlow("fd00::2", "fd00::1", 5000, 443), "TCP [fd00::1]:443 [fd00::2]:5000"},
		{tcpFlow("10.0.0.1", "10.0.0.1", 9000, 80), "TCP 10.0.0.1:80 10.0.0.1:9000"},
		{&flowpb.Flow{IP: &flowpb.IP{Source: "10.0.0.1", Destination: "10.0.0.9"}, L4: &flowpb.Layer4{Protocol: &flowpb.Layer4_ICMPv4{ICMPv4: &flowpb.ICMPv4{Type: 8}}}}, "ICMPv4 10.0.0.1:0 10.0.0.9:0"},
	}
	for _, tt := range tests {
		got, ok := AppendConnectionKey(nil, tt.f)
		if !ok || string(got) != tt.want {
			t.Errorf("got %q %v, want %q", got, ok, tt.want)
		}
		// The reply direction has the same key.
		r := &flowpb.Flow{IP: &flowpb.IP{Source: tt.f.IP.Destination, Destination: tt.f.IP.Source}, L4: tt.f.L4}
		if tcp := tt.f.L4.GetTCP(); tcp != nil {
			r.L4 = &flowpb.Layer4{Protocol: &flowpb.Layer4_TCP{TCP: &flowpb.TCP{SourcePort: tcp.DestinationPort, DestinationPort: tcp.SourcePort}}}
		}
		if back, _ := AppendConnectionKey(nil, r); string(back) != tt.want {
			t.Errorf("reply key %q, want %q", back, tt.want)
		}
	}
	if _, ok := AppendConnectionKey(nil, &flowpb.Flow{}); ok {
		t.Error("key for a flow without IP")
	}
	if _, ok := AppendConnectionKey(nil, nil); ok {
		t.Error("key for a LostEvent")
	}
}

func TestSourcePod(t *testing.T) {
	f := &flowpb.Flow{Source: &flowpb.Endpoint{Namespace: "ns", PodName: "p"}, IP: &flowpb.IP{Source: "10.0.0.1"}}
	if got, _ := AppendSourcePod(nil, f); string(got) != "ns/p" {
		t.Error(string(got))
	}
	f.Source = nil
	if got, _ := AppendSourcePod(nil, f); string(got) != "10.0.0.1" {
		t.Error(string(got))
	}
}

func TestSampleRateAndNode(t *testing.T) {
	e := &pipeline.Event{SampleRate: 1}
	if _, ok := AppendSampleRate(nil, e); ok {
		t.Error("rate 1 has a header")
	}
	e.SampleRate = 25
	if got, ok := AppendSampleRate(nil, e); !ok || string(got) != "25" {
		t.Error(string(got))
	}
	if NodeOf(e, "me") != "me" {
		t.Error("default node")
	}
	e.NodeName = "n1"
	if NodeOf(e, "me") != "n1" {
		t.Error("event node")
	}
}

func TestBackoff(t *testing.T) {
	b := Backoff{Min: 100 * time.Millisecond, Max: time.Second}
	for attempt := 1; attempt < 20; attempt++ {
		d := b.Delay(attempt)
		base := b.Min << (attempt - 1)
		if attempt > 5 || base > b.Max {
			base = b.Max
		}
		if d < base*8/10 || d > base*12/10 {
			t.Errorf("attempt %d: %v, want %v ±20%%", attempt, d, base)
		}
	}
}

func TestReadSecret(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "s"), []byte("pa ss\r\n"), 0o600)
	os.WriteFile(filepath.Join(dir, "nl"), []byte("\n"), 0o600)
	if s, err := ReadSecret("k", dir, "s"); err != nil || s != "pa ss" {
		t.Errorf("%q %v", s, err)
	}
	if _, err := ReadSecret("k", dir, "nl"); err == nil || err.Error() != "k: the file it names holds only a newline" {
		t.Error(err)
	}
}

// TestReadSecretFileNamesTheKey: a secret written where its file belongs
// is never echoed; the error names the key and the cause.
func TestReadSecretFileNamesTheKey(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "empty"), nil, 0o600)
	os.Mkdir(filepath.Join(dir, "hunter2-dir"), 0o700)
	big, _ := os.Create(filepath.Join(dir, "hunter2-big"))
	big.Truncate(MaxSecretFile + 1)
	big.Close()
	for _, tc := range []struct{ path, want string }{
		{"hunter2-secret", "sasl.password_file: cannot read the file it names: no such file or directory"},
		{"/hunter2/secret", "sasl.password_file: cannot read the file it names: no such file or directory"},
		{"hunter2-dir", "sasl.password_file: cannot read the file it names: is a directory"},
		{"hunter2-big", "sasl.password_file: the file it names is over 4194304 bytes"},
		{"empty", "sasl.password_file: the file it names is empty"},
	} {
		_, err := ReadSecretFile("sasl.password_file", dir, tc.path)
		if err == nil || !strings.HasPrefix(err.Error(), tc.want) || strings.Contains(err.Error(), "hunter2") {
			t.Errorf("%s: %v, want %q", tc.path, err, tc.want)
		}
	}
	if _, err := ReadSecret("token_file", dir, "hunter2-secret"); err == nil || strings.Contains(err.Error(), "hunter2") || !strings.HasPrefix(err.Error(), "token_file: ") {
		t.Errorf("ReadSecret: %v", err)
	}
}

func TestTLSConfigErrors(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "junk.pem"), []byte("not pem"), 0o600)
	for _, tc := range []struct {
		t    TLS
		want string
	}{
		{TLS{CAFile: "nope.pem"}, "tls.ca_file: cannot read the file it names: no such file"},
		{TLS{CAFile: "junk.pem"}, "tls.ca_file: the file it names holds no PEM certificate"},
		{TLS{CertFile: "c.pem"}, "set together"},
		{TLS{CertFile: "junk.pem", KeyFile: "junk.pem"}, "client certificate"},
		{TLS{CertFile: "junk.pem", KeyFile: "-----BEGIN PRIVATE KEY-----"}, "tls.key_file: cannot read the file it names"},
		{TLS{CertFile: "hunter2", KeyFile: "junk.pem"}, "tls.cert_file: cannot read the file it names"},
	} {
		_, err := tc.t.Config(dir)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: %v, want %q", tc.t, err, tc.want)
		}
		if err != nil && (strings.Contains(err.Error(), "PRIVATE") || strings.Contains(err.Error(), "hunter2") || strings.Contains(err.Error(), ".pem")) {
			t.Errorf("%+v: error echoes a value: %v", tc.t, err)
		}
	}
}

func TestSeqHeader(t *testing.T) {
	b := pipeline.NewBatch()
	defer b.Release()
	b.Next()
	b.Next()
	if _, ok := AppendSeq(nil, SeqPrefix("n1", "bus"), b, 0); ok {
		t.Error("a batch without numbers got a flowbus-seq")
	}
	b.SetSeq(1764777600123456, 41)
	v, ok := AppendSeq(nil, SeqPrefix("n1", "a/b"), b, 1)
	if !ok || string(v) != "n1/a/b/1764777600123456/42" {
		t.Fatalf("AppendSeq = %q %v", v, ok)
	}
}
