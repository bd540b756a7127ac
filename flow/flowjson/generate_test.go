package flowjson

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// TestGeneratedUpToDate regenerates zz_generated.go from the compiled
// schema and compares it with the committed file.
func TestGeneratedUpToDate(t *testing.T) {
	out := filepath.Join(t.TempDir(), "zz_generated.go")
	cmd := exec.Command("go", "run", "./internal/gen", out)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go run ./internal/gen: %v\n%s", err, b)
	}
	want, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile("zz_generated.go")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatal("zz_generated.go is stale: run go generate ./flow/flowjson")
	}
}
