package faults

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

// `flowbus run | head -1`: stdout closes while a file sink also writes.
// The process does not die of SIGPIPE; the events the stdout sink could
// not write are counted lost, the file sink has every event, and the
// summary reconciles.
func TestSIGPIPEStdoutClosed(t *testing.T) {
	dir := t.TempDir()
	out := filepath.Join(dir, "out.json")
	const count = 20000
	cfg := writeConfig(t, dir, fmt.Sprintf(`
metrics: {listen: ""}
sources:
  gen: {type: generate, count: %d, seed: 5}
sinks:
  stdout: {type: file, inputs: [gen], path: "-"}
  keep: {type: file, inputs: [gen], path: %s}
`, count, out))
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	p := start(t, cfg, w)
	w.Close()
	line, err := bufio.NewReader(r).ReadString('\n')
	if err != nil {
		t.Fatalf("first line: %v", err)
	}
	r.Close() // as head -1 does
	<-p.done
	notKilledBySignal(t, p.err)
	stderr := p.wait()
	if len(line) < 10 || line[:9] != `{"flow":{` {
		t.Errorf("first line %q", line)
	}
	s := parseSummary(t, stderr)
	t.Logf("summary %+v", s)
	std, keep := s.Sinks["stdout"], s.Sinks["keep"]
	if std.Received != count || std.Lost == 0 || std.Delivered+std.Lost != count {
		t.Errorf("sink stdout: %v", std)
	}
	ex := readExport(t, out)
	if keep.Received != count || keep.Delivered != count || keep.Lost != 0 || ex.flows != count || ex.lost != 0 || ex.torn {
		t.Errorf("sink keep: %v; its file holds %d flows", keep, ex.flows)
	}
}
