package kubernetes

import (
	"context"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/go-logr/logr"
	"k8s.io/klog/v2"
)

// client-go logs through klog, which writes to stderr in its own format
// unless it is given a logger. The first transform to start routes klog,
// for the whole process, into a slog handler that forwards each record to
// the logger of the transform started last, tagged from=client-go.
// klog's own verbosity still applies (only V(0) records pass), and
// client-go's "Warning: " records (an API server's warning headers) are
// raised to the warning level.

var (
	klogOnce   sync.Once
	klogTarget atomic.Pointer[slog.Logger]
)

// routeKlog makes log the destination of klog's records.
func routeKlog(log *slog.Logger) {
	klogTarget.Store(log)
	klogOnce.Do(func() {
		klog.SetLogger(logr.FromSlogHandler(klogHandler{}))
	})
}

// klogHandler forwards to the current target's handler, with the
// attributes klog's loggers added.
type klogHandler struct {
	attrs []slog.Attr
}

func (h klogHandler) target() slog.Handler {
	log := klogTarget.Load()
	if log == nil {
		log = slog.Default()
	}
	return log.Handler().WithAttrs(append([]slog.Attr{slog.String("from", "client-go")}, h.attrs...))
}

func (h klogHandler) Enabled(ctx context.Context, l slog.Level) bool {
	return h.target().Enabled(ctx, l)
}

func (h klogHandler) Handle(ctx context.Context, r slog.Record) error {
	if r.Level < slog.LevelWarn && strings.HasPrefix(r.Message, "Warning: ") {
		r.Level = slog.LevelWarn
	}
	th := h.target()
	if !th.Enabled(ctx, r.Level) {
		return nil
	}
	return th.Handle(ctx, r)
}

func (h klogHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return klogHandler{attrs: append(h.attrs[:len(h.attrs):len(h.attrs)], as...)}
}

// WithGroup is never called by klog's logr bridge; it fixes the target of
// the moment.
func (h klogHandler) WithGroup(name string) slog.Handler {
	return h.target().WithGroup(name)
}
