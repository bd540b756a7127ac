package sinkutil

import (
	"log/slog"
	"time"
)

// ErrorLog logs a sink's write errors without flooding the log: the first
// at once, then at most one line per period (Every) for the errors since,
// with their count and the last one. The caller serialises its calls.
type ErrorLog struct {
	Log   *slog.Logger
	Every time.Duration
	// Sink names the sink in the messages ("file sink"); Key is the
	// attribute that says where an error happened ("file", "directory").
	Sink, Key string

	last time.Time
	n    int
	err  error
}

// Add records err, which happened at where.
func (l *ErrorLog) Add(where string, err error) {
	now := time.Now()
	if l.last.IsZero() || now.Sub(l.last) >= l.Every {
		l.Flush()
		l.Log.Error(l.Sink+": cannot write events", l.Key, where, "error", err)
		l.last = now
		return
	}
	l.n++
	l.err = err
}

// Flush logs the count of the errors not logged yet, if any.
func (l *ErrorLog) Flush() {
	if l.n > 0 {
		l.Log.Error(l.Sink+": more write errors", "count", l.n, "last_error", l.err)
		l.n = 0
	}
}
