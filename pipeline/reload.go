package pipeline

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	dto "github.com/prometheus/client_model/go"

	"github.com/flowbus/flowbus/pipeline/config"
)

// Reloader runs successive generations of a pipeline: the first one, then,
// at each reload request, a new one built from the configuration read
// again. A new pipeline replaces the running one only when it builds: the
// running one's sources stop, it drains completely (every accepted event is
// delivered or counted lost, as at shutdown), its sinks close, and then the
// new one starts. A configuration that does not build is rejected and the
// running pipeline continues.
//
// The HTTP endpoint (/metrics, /healthz, /readyz) and the process-wide
// metrics belong to the Reloader and stay up across reloads; each
// generation has its own registry for the components' metrics, so those
// counters start from zero in a new generation, as after a restart.
type Reloader struct {
	// Load builds a generation from the configuration, read again at each
	// call, with the given options. Its errors are config.Errors when the
	// configuration is invalid.
	Load func(Options) (*Pipeline, error)
	// Log receives the Reloader's and the pipelines' logs; nil discards.
	Log *slog.Logger
	// Registry holds the process-wide metrics (build information, the Go
	// runtime) and flowbus_reloads_total; nil makes a new one.
	Registry *prometheus.Registry

	initOnce sync.Once
	reloads  *prometheus.CounterVec

	cur       atomic.Pointer[Pipeline] // the running generation
	reloading atomic.Bool              // between the old generation's drain and the new one's start
	done      atomic.Bool              // Run returned

	srvMu sync.Mutex
	srv   *http.Server
	addr  string       // configured listen address of srv
	bound atomic.Value // string: the address srv listens on
}

func (r *Reloader) init() {
	r.initOnce.Do(func() {
		if r.Log == nil {
			r.Log = slog.New(slog.DiscardHandler)
		}
		if r.Registry == nil {
			r.Registry = prometheus.NewRegistry()
		}
		r.reloads = prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "flowbus_reloads_total",
			Help: "Configuration reloads (SIGHUP), by result: ok (the new pipeline runs) or failed (rejected, or it could not start; the previous configuration runs).",
		}, []string{"result"})
		r.reloads.WithLabelValues("ok")
		r.reloads.WithLabelValues("failed")
		r.Registry.MustRegister(r.reloads)
	})
}

// Build builds one generation with Load, with its own metrics registry and
// without an HTTP endpoint of its own (the Reloader serves it).
func (r *Reloader) Build() (*Pipeline, error) {
	r.init()
	p, err := r.Load(Options{Log: r.Log, Registry: prometheus.NewRegistry()})
	if err != nil {
		return nil, err
	}
	p.noServe = true
	return p, nil
}

// rebuild builds a new generation from the configuration p was built from.
func (r *Reloader) rebuild(p *Pipeline) (*Pipeline, error) {
	q, err := New(p.cfg, Options{Log: r.Log, Registry: prometheus.NewRegistry(), RequireHealthy: p.requireHealthy})
	if err != nil {
		return nil, err
	}
	q.noServe = true
	return q, nil
}

// generation is the outcome of one generation's Run.
type generation struct {
	s   *Summary
	err error
}

// Run runs first (made by Build) until ctx is cancelled or every source of
// the running generation is exhausted, reloading at each value received on
// reload. It returns the summary summed over the generations, with the
// number of reloads, and the errors of every generation. A first
// generation that cannot start is Run's error; a later one that cannot
// start is a failed reload, and the configuration before it runs again.
func (r *Reloader) Run(ctx context.Context, first *Pipeline, reload <-chan struct{}) (*Summary, error) {
	r.init()
	defer r.done.Store(true)
	first.noServe = true
	r.cur.Store(first)
	if err := r.listen(first.cfg.Metrics.Listen); err != nil {
		return nil, err
	}
	defer r.closeServer()

	total := &Summary{}
	var errs []error
	p := first
	var replaced *Pipeline // the generation p replaces, until p has started
	for {
		genCtx, stop := context.WithCancel(ctx)
		done := make(chan generation, 1)
		go func(p *Pipeline) {
			s, err := p.Run(genCtx)
			done <- generation{s, err}
		}(p)
		if replaced != nil {
			if err := r.started(p, done); err != nil {
				stop()
				if ctx.Err() != nil { // stopped before the new pipeline ran
					r.reloading.Store(false)
					return total, errors.Join(errs...)
				}
				r.reloads.WithLabelValues("failed").Inc()
				total.ReloadsFailed++
				r.Log.Error("reload failed: the new pipeline could not start; starting the previous configuration again", "error", err)
				q, berr := r.rebuild(replaced)
				if berr != nil {
					r.reloading.Store(false)
					return total, errors.Join(append(errs, err, berr)...)
				}
				p, replaced = q, nil
				r.cur.Store(p)
				continue
			}
			r.reloads.WithLabelValues("ok").Inc()
			total.Reloads++
			r.reloading.Store(false)
			r.Log.Info("reload done: the new pipeline runs")
			replaced = nil
		}

		next, ended := r.waitReload(total, done, reload)
		if next == nil {
			stop()
			r.reloading.Store(false)
			if ended.s == nil && p == first {
				return nil, ended.err // the first generation could not start
			}
			total.add(ended.s)
			return total, errors.Join(append(errs, ended.err)...)
		}
		r.reloading.Store(true)
		r.Log.Info("reloading: stopping the sources and draining the running pipeline")
		stop()
		g := <-done
		total.add(g.s)
		if g.err != nil {
			r.Log.Error("the pipeline replaced by the reload failed", "error", g.err)
			errs = append(errs, g.err)
		}
		if ctx.Err() != nil {
			// Stopped while draining: the new generation never starts.
			r.reloading.Store(false)
			return total, errors.Join(errs...)
		}
		r.cur.Store(next)
		p, replaced = next, p
	}
}

// started waits until p, a new generation whose Run is under way, has
// started its sources (nil), or its Run ended before (its error, or
// ctx's). A Run that ended after starting is put back on done.
func (r *Reloader) started(p *Pipeline, done chan generation) error {
	select {
	case <-p.launched:
		return nil
	case g := <-done:
		if g.s != nil { // it started, and ended at once
			done <- g
			return nil
		}
		if g.err == nil {
			return errors.New("the pipeline ended before it started")
		}
		return g.err
	}
}

// waitReload waits until p's Run ends (it returns nil and the outcome) or
// a reload request brings a configuration that builds (it returns the new
// generation). Rejected configurations are logged and counted.
func (r *Reloader) waitReload(total *Summary, done <-chan generation, reload <-chan struct{}) (*Pipeline, generation) {
	for {
		select {
		case g := <-done:
			return nil, g
		case <-reload:
		}
		r.Log.Info("reload requested: loading the configuration")
		next, err := r.Build()
		if err == nil {
			if lerr := r.listen(next.cfg.Metrics.Listen); lerr != nil {
				err = lerr
			}
		}
		if err != nil {
			r.reloads.WithLabelValues("failed").Inc()
			total.ReloadsFailed++
			r.logRejected(err)
			continue
		}
		return next, generation{}
	}
}

// logRejected logs why a configuration was rejected: one record per
// positioned error, FILE:LINE:COL: message.
func (r *Reloader) logRejected(err error) {
	var es config.Errors
	if !errors.As(err, &es) || len(es) == 0 {
		r.Log.Error("reload rejected: the running pipeline continues", "error", err)
		return
	}
	r.Log.Error("reload rejected: the configuration is invalid; the running pipeline continues", "errors", len(es))
	for _, e := range es {
		r.Log.Error("invalid configuration", "error", e.Error())
	}
}

// listen makes the HTTP endpoint serve on addr ("" turns it off). An
// unchanged address keeps the running server; a new one is bound before
// the old server closes, so a failure leaves the old one serving.
func (r *Reloader) listen(addr string) error {
	r.srvMu.Lock()
	defer r.srvMu.Unlock()
	if r.srv != nil && addr == r.addr {
		return nil
	}
	var srv *http.Server
	if addr != "" {
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			return fmt.Errorf("metrics: listen on %s: %w", addr, err)
		}
		r.bound.Store(ln.Addr().String())
		srv = &http.Server{Handler: r.handler(), ReadHeaderTimeout: 5 * time.Second}
		go srv.Serve(ln)
	} else {
		r.bound.Store("")
	}
	if r.srv != nil {
		r.srv.Close()
	}
	r.srv, r.addr = srv, addr
	return nil
}

func (r *Reloader) closeServer() {
	r.srvMu.Lock()
	defer r.srvMu.Unlock()
	if r.srv != nil {
		r.srv.Close()
		r.srv = nil
	}
}

// Addr is the address the HTTP endpoint listens on, once Run started it.
func (r *Reloader) Addr() string {
	s, _ := r.bound.Load().(string)
	return s
}

// handler serves /metrics (the process-wide registry and the running
// generation's), /healthz (200 until Run returns) and /readyz (503 while a
// reload drains the old generation, else the running generation's
// readiness).
func (r *Reloader) handler() http.Handler {
	current := prometheus.GathererFunc(func() ([]*dto.MetricFamily, error) {
		return r.cur.Load().reg.Gather()
	})
	g := prometheus.Gatherers{r.Registry, current}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(g, promhttp.HandlerOpts{}))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		if r.done.Load() {
			http.Error(w, "stopped", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		reasons := []string{"reloading the configuration"}
		if !r.reloading.Load() {
			reasons = r.cur.Load().notReady()
		}
		if len(reasons) > 0 {
			http.Error(w, strings.Join(reasons, "\n"), http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ready")
	})
	return mux
}
