package kafka

import (
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/flowbus/flowbus/internal/sinktest"
	"github.com/flowbus/flowbus/internal/sinkutil"
)

// TestKcatReadsRecords checks that a librdkafka consumer (kcat) reads the
// records with every compression codec: keys, headers and JSON values.
func TestKcatReadsRecords(t *testing.T) {
	kcat, err := exec.LookPath("kcat")
	if err != nil {
		t.Skip("kcat is not installed")
	}
	codecs := []string{"none", "gzip", "snappy", "lz4", "zstd"}
	c := newCluster(t, kfake.SeedTopics(2, codecs...))
	broker := c.ListenAddrs()[0]
	for _, codec := range codecs {
		t.Run(codec, func(t *testing.T) { kcatRead(t, kcat, broker, codec) })
	}
}

func kcatRead(t *testing.T, kcat, broker, codec string) {
	s := newSink(t, "json", fmt.Sprintf("brokers: [%s]\ntopic: %s\nkey: connection\ncompression: %s\n", broker, codec, codec))
	b := sinktest.Batch(0, 20)
	defer b.Release()
	if failed, err := s.Write(context.Background(), b); failed != 0 || err != nil {
		t.Fatal(failed, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, kcat, "-b", broker, "-C", "-t", codec, "-e", "-q",
		"-f", "%k\t%h\t%s").CombinedOutput()
	if err != nil {
		t.Fatalf("kcat: %v\n%s", err, out)
	}
	lines := strings.Split(strings.TrimRight(string(out), "\n"), "\n")
	if len(lines) != 20 {
		t.Fatalf("kcat read %d records, want 20:\n%s", len(lines), out)
	}
	for _, l := range lines {
		parts := strings.SplitN(l, "\t", 3)
		if len(parts) != 3 {
			t.Fatalf("line %q", l)
		}
		var env struct {
			Flow struct {
				UUID string `json:"uuid"`
			} `json:"flow"`
		}
		if err := json.Unmarshal([]byte(parts[2]), &env); err != nil || env.Flow.UUID == "" {
			t.Fatalf("value %q: %v", parts[2], err)
		}
		var n int
		fmt.Sscanf(env.Flow.UUID[len(env.Flow.UUID)-12:], "%d", &n)
		want, _ := sinkutil.AppendConnectionKey(nil, b.Events[n].Flow)
		if parts[0] != string(want) {
			t.Errorf("kcat key %q, want %q", parts[0], want)
		}
		for _, h := range []string{"content-type=application/json", "flowbus-schema=observer.GetFlowsResponse", "flowbus-node=node-1"} {
			if !strings.Contains(parts[1], h) {
				t.Errorf("kcat headers %q lack %q", parts[1], h)
			}
		}
		if rate := strings.Contains(parts[1], "flowbus-sample-rate=4"); rate != (n%10 == 9) {
			t.Errorf("flow %d headers %q", n, parts[1])
		}
	}
}
