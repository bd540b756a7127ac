package sinkutil

import (
	"bytes"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"
)

func TestErrorLog(t *testing.T) {
	for _, tc := range []struct {
		name  string
		every time.Duration
		adds  int
		want  []string // the messages logged, in order, after a Flush
	}{
		{"one error", time.Hour, 1, []string{"x sink: cannot write events"}},
		{"a burst is counted", time.Hour, 5, []string{"x sink: cannot write events", "x sink: more write errors count=4"}},
		{"every error once the period passed", 0, 3, []string{"x sink: cannot write events", "x sink: cannot write events", "x sink: cannot write events"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var buf bytes.Buffer
			l := ErrorLog{Log: slog.New(slog.NewTextHandler(&buf, nil)), Every: tc.every, Sink: "x sink", Key: "file"}
			for i := range tc.adds {
				l.Add("out.json", errors.New("disk full "+string(rune('a'+i))))
			}
			l.Flush()
			lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
			if len(lines) != len(tc.want) {
				t.Fatalf("logged %d lines, want %d:\n%s", len(lines), len(tc.want), buf.String())
			}
			for i, w := range tc.want {
				msg, attrs, _ := strings.Cut(w, " count=")
				if !strings.Contains(lines[i], `msg="`+msg+`"`) || (attrs != "" && !strings.Contains(lines[i], "count="+attrs)) {
					t.Errorf("line %d: %s, want %q", i, lines[i], w)
				}
			}
		})
	}
}
