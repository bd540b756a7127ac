package file

import (
	"log/slog"
	"time"
	"unicode/utf8"
)

// excerptBytes is how much of a bad line a log message quotes.
const excerptBytes = 200

// malformedLog logs bad lines without flooding: the first one with its
// line number, error and an excerpt, then a summary at most once per
// period (and when the source stops).
type malformedLog struct {
	log   *slog.Logger
	every time.Duration

	logged    bool
	lossySeen bool
	last      time.Time // time of the last message

	// Since the last message:
	n                   int64
	file                string
	firstLine, lastLine int64
	lastErr             error
}

// add records a malformed line (lineText may be nil).
func (m *malformedLog) add(file string, line int64, err error, lineText []byte) {
	now := time.Now()
	if !m.logged {
		m.logged, m.last = true, now
		m.log.Warn("skipping malformed line", "file", file, "line", line, "error", err, "text", excerpt(lineText))
		return
	}
	if m.n == 0 {
		m.firstLine = line
	}
	m.n++
	m.file, m.lastLine, m.lastErr = file, line, err
	if now.Sub(m.last) >= m.every {
		m.flush()
	}
}

// lossy logs, once, that a line held fields this schema does not know.
func (m *malformedLog) lossy(file string, line int64, lineText []byte) {
	if m.lossySeen {
		return
	}
	m.lossySeen = true
	m.log.Warn("line has fields or enum values unknown to this schema (newer Hubble?); they are dropped (further lines are only counted)",
		"file", file, "line", line, "text", excerpt(lineText))
}

// tick logs the summary if one is due, for a source waiting for input.
func (m *malformedLog) tick() {
	if m.n > 0 && time.Since(m.last) >= m.every {
		m.flush()
	}
}

// flush logs the summary of the malformed lines not yet reported.
func (m *malformedLog) flush() {
	if m.n == 0 {
		return
	}
	m.log.Warn("skipped more malformed lines", "count", m.n, "file", m.file,
		"first_line", m.firstLine, "last_line", m.lastLine, "last_error", m.lastErr)
	m.n, m.last = 0, time.Now()
}

// excerpt quotes the start of a line, cut at a rune boundary.
func excerpt(b []byte) string {
	if len(b) <= excerptBytes {
		return string(b)
	}
	n := excerptBytes
	for n > 0 && !utf8.RuneStart(b[n]) {
		n--
	}
	return string(b[:n]) + "…"
}
