package codec

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// TestGeneratedUpToDate regenerates zz_protobuf.go (the encoder) and
// zz_pbdecode.go (the decoder) from the compiled schema and compares them
// with the committed files.
func TestGeneratedUpToDate(t *testing.T) {
	for _, c := range []struct{ flag, file string }{{"-protobuf", "zz_protobuf.go"}, {"-pbdecode", "zz_pbdecode.go"}} {
		out := filepath.Join(t.TempDir(), c.file)
		cmd := exec.Command("go", "run", "../flow/flowjson/internal/gen", c.flag, out)
		if b, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("go run ./internal/gen %s: %v\n%s", c.flag, err, b)
		}
		want, err := os.ReadFile(out)
		if err != nil {
			t.Fatal(err)
		}
		got, err := os.ReadFile(c.file)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("%s is stale: run go generate ./codec", c.file)
		}
	}
}
