package codec

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// TestGeneratedUpToDate regenerates zz_protobuf.go from the compiled
// schema and compares it with the committed file.
func TestGeneratedUpToDate(t *testing.T) {
	out := filepath.Join(t.TempDir(), "zz_protobuf.go")
	cmd := exec.Command("go", "run", "../flow/flowjson/internal/gen", "-protobuf", out)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go run ./internal/gen: %v\n%s", err, b)
	}
	want, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile("zz_protobuf.go")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatal("zz_protobuf.go is stale: run go generate ./codec")
	}
}
