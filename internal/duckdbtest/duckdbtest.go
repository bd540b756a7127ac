// Package duckdbtest runs SQL in DuckDB for tests that check the Parquet
// files flowbus writes: DuckDB's Node.js client (@duckdb/node-api, which
// ships DuckDB itself), installed by .ci/tools/duckdb into the tools cache,
// runs each query in a fresh in-memory database.
package duckdbtest

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sync"
	"testing"
)

// duckDBScript runs one SQL statement with DuckDB's Node.js client and
// prints the result rows as a JSON array of objects (BigInts as strings).
const duckDBScript = `
const { DuckDBInstance } = require('@duckdb/node-api');
(async () => {
  const db = await DuckDBInstance.create(':memory:');
  const con = await db.connect();
  const r = await con.runAndReadAll(process.argv[2]);
  process.stdout.write(JSON.stringify(r.getRowObjectsJson()));
})().catch((e) => { process.stderr.write(String(e && e.message || e)); process.exit(1); });
`

var (
	duckOnce sync.Once
	duckDir  string
	duckErr  error
)

// duckDB returns the folder holding DuckDB's Node.js client, installed by
// .ci/tools/duckdb (cached after the first call).
func duckDB(t testing.TB) string {
	t.Helper()
	duckOnce.Do(func() {
		_, file, _, _ := runtime.Caller(0)
		root := filepath.Join(filepath.Dir(file), "..", "..")
		var stderr bytes.Buffer
		cmd := exec.Command(filepath.Join(root, ".ci/tools/duckdb"))
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			duckErr = err
			duckDir = stderr.String()
			return
		}
		duckDir = string(bytes.TrimSpace(out))
	})
	if duckErr != nil {
		t.Fatalf(".ci/tools/duckdb (installs @duckdb/node-api with npm): %v\n%s", duckErr, duckDir)
	}
	return duckDir
}

// Query runs sql in DuckDB and returns the rows (numbers that JSON cannot
// hold exactly, such as counts, as strings); a DuckDB error fails the test.
func Query(t testing.TB, sql string) []map[string]any {
	t.Helper()
	rows, err := TryQuery(t, sql)
	if err != nil {
		t.Fatalf("DuckDB: %s: %v", sql, err)
	}
	return rows
}

// TryQuery runs sql in DuckDB and returns the rows or DuckDB's error.
func TryQuery(t testing.TB, sql string) ([]map[string]any, error) {
	t.Helper()
	dir := duckDB(t)
	script := filepath.Join(t.TempDir(), "q.js")
	if err := os.WriteFile(script, []byte(duckDBScript), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("node", script, sql)
	cmd.Env = append(os.Environ(), "NODE_PATH="+filepath.Join(dir, "node_modules"))
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return nil, &duckError{err: err, msg: stderr.String()}
	}
	var rows []map[string]any
	if err := json.Unmarshal(stdout.Bytes(), &rows); err != nil {
		t.Fatalf("DuckDB output: %v\n%.500s", err, stdout.String())
	}
	return rows, nil
}

type duckError struct {
	err error
	msg string
}

func (e *duckError) Error() string { return e.err.Error() + ": " + e.msg }
