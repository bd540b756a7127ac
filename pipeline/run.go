package pipeline

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	flowpb "github.com/flowbus/flowbus/flow"
)

// stats are one component's counters. Only counted events (every event but
// the LostEvents flowbus makes) are counted.
type stats struct {
	in      atomic.Uint64 // transforms, sinks: events taken from the buffer
	out     atomic.Uint64 // sources: emitted; transforms: passed on; sinks: accepted by Write
	removed atomic.Uint64 // transforms: removed (filtered, sampled, rate-limited)
	dropped atomic.Uint64 // transforms, sinks: lost at the input buffer (full, or shutdown aborted)
	failed  atomic.Uint64 // sinks: given up by Write, or not written at abort
	// lateLost counts, for a sink, events its Write accepted (counted in
	// out) and lost afterwards (see LateLoser). out never goes down: the
	// sink's delivered is out - lateLost.
	lateLost atomic.Uint64
	srcLost  atomic.Uint64 // sources: reported lost by the source (Output.Lost)
	batches  atomic.Uint64 // batches handled
	panicked atomic.Uint64 // batches lost to a panic in the component
}

// delivered is what a sink delivered: what its Write accepted, less what
// it lost afterwards. A late loss may be reported before the runtime
// counts its batch in out, so a count taken in between clamps at zero.
func (st *stats) delivered() uint64 {
	late := st.lateLost.Load()
	out := st.out.Load()
	return out - min(late, out)
}

// runState is the lifecycle shared by the HTTP handlers.
type runState struct {
	started  atomic.Bool // Run called
	running  atomic.Bool // sources started, not yet shutting down
	draining atomic.Bool // shutting down
	ran      atomic.Bool
}

// output is what a source emits into.
type output struct {
	p *Pipeline
	n *node
}

func (o *output) Emit(ctx context.Context, b *Batch) error {
	if err := ctx.Err(); err != nil {
		b.ack.Done(false)
		b.Release()
		return err
	}
	if b.Len() == 0 {
		b.ack.Done(true)
		b.Release()
		return nil
	}
	if poisonEnabled {
		arenaStrings(b)
	}
	counted := b.Counted()
	o.n.stats.out.Add(uint64(counted))
	o.n.stats.batches.Add(1)
	o.p.fanout(o.n, b, counted)
	return nil
}

func (o *output) Lost(source flowpb.LostEventSource, cpu int32, n uint64) {
	if n == 0 {
		return
	}
	o.n.stats.srcLost.Add(n)
	now := time.Now()
	for _, d := range o.n.down {
		d.sink.loss.add(source, o.n.name, cpu, n*d.paths, now)
	}
}

// fanout passes b (with counted counted events) to every consumer of n:
// sinks share it by reference count, transforms get their own copy unless
// a transform is the only consumer.
func (p *Pipeline) fanout(n *node, b *Batch, counted int) {
	outs := n.outputs
	if len(outs) == 1 {
		p.push(outs[0], b, counted)
		return
	}
	// Every consumer's copy holds the batch's Ack.
	b.ack.add(len(outs) - 1)
	var batches [8]*Batch
	bs := batches[:0]
	sinks := 0
	for _, c := range outs {
		if c.kind == kindSink {
			sinks++
		}
	}
	for i, c := range outs {
		switch {
		case c.kind == kindSink:
			bs = append(bs, b)
		case sinks == 0 && i == len(outs)-1:
			bs = append(bs, b) // the last transform takes the original
		default:
			bs = append(bs, b.Clone())
		}
	}
	for i := 1; i < sinks; i++ {
		b.Retain()
	}
	for i, c := range outs {
		p.push(c, bs[i], counted)
	}
}

// push puts b into c's buffer; when the buffer refuses it, the batch's
// counted events are lost for every sink downstream of c.
func (p *Pipeline) push(c *node, b *Batch, counted int) {
	if c.queue.push(p.abort, item{b: b, counted: counted}) {
		return
	}
	b.ack.Done(false)
	b.Release()
	p.lose(c, flowpb.LostEventSource_OBSERVER_EVENTS_QUEUE, uint64(counted), &c.stats.dropped)
}

// lose records n counted events lost at node c.
func (p *Pipeline) lose(c *node, src flowpb.LostEventSource, n uint64, counter *atomic.Uint64) {
	if n == 0 {
		return
	}
	counter.Add(n)
	now := time.Now()
	for _, d := range c.down {
		d.sink.loss.add(src, c.name, -1, n*d.paths, now)
	}
}

// loseLate records that k events the sink n accepted are lost after all
// (see LateLoser). They stay counted in out, whose counter must never go
// down, and are counted in lateLost: the summary's delivered is out -
// lateLost.
func (p *Pipeline) loseLate(n *node, k int) {
	if k <= 0 {
		return
	}
	p.lose(n, flowpb.LostEventSource_OBSERVER_EVENTS_QUEUE, uint64(k), &n.stats.lateLost)
}

// runTransform consumes n's buffer until it is closed and drained.
func (p *Pipeline) runTransform(n *node) {
	defer func() {
		for _, c := range n.outputs {
			c.queue.producerDone()
		}
	}()
	for {
		it, ok := n.queue.pop()
		if !ok {
			return
		}
		if it.b == nil {
			continue
		}
		n.stats.in.Add(uint64(it.counted))
		n.stats.batches.Add(1)
		ack := it.b.ack
		if !p.process(n, it.b) {
			ack.Done(false)
			p.lose(n, flowpb.LostEventSource_OBSERVER_EVENTS_QUEUE, uint64(it.counted), &n.stats.dropped)
			continue
		}
		out := it.b.Counted()
		if out < it.counted {
			n.stats.removed.Add(uint64(it.counted - out))
		}
		n.stats.out.Add(uint64(out))
		if it.b.Len() == 0 {
			// Every event was removed on purpose (or the batch held
			// none): resolved.
			ack.Done(true)
			it.b.Release()
			continue
		}
		p.fanout(n, it.b, out)
	}
}

// process runs the transform on b; a panic loses the batch (false).
func (p *Pipeline) process(n *node, b *Batch) (ok bool) {
	defer func() {
		if r := recover(); r != nil {
			if n.stats.panicked.Add(1) == 1 {
				n.log.Error("transform panicked; its batch is lost", "panic", r)
			}
			b.Release()
			ok = false
		}
	}()
	n.transform.Process(b)
	return true
}

// runSink consumes n's buffer until it is closed and drained, reporting
// losses in the stream when they are due and once more at the end.
func (p *Pipeline) runSink(n *node) {
	for {
		it, ok := n.queue.pop()
		if !ok {
			break
		}
		if it.b == nil { // poked: LostEvents are due
			p.flushLoss(n, false)
			continue
		}
		p.write(n, it.b, it.counted)
	}
	// Nothing comes after the last LostEvents: while the sink does not
	// take them (a broker that is still away), they are retried once per
	// lost_event_interval until the shutdown deadline; not when the sink
	// delivered flows since its LostEvents began failing (their destination
	// refuses them, and waiting would not change that).
	for p.flushLoss(n, false) && !n.loss.refused(n.stats.delivered()) {
		select {
		case <-p.abort.Done():
		case <-time.After(p.cfg.LostEventInterval.D()):
		}
	}
	p.flushLoss(n, true)
}

// flushLoss writes n's pending losses as reported LostEvents, one per
// Write so that a failure is known per LostEvent. A LostEvent the sink
// gives up on goes back to the pending losses for the next flush; at the
// final flush nothing comes after, and the events it would have reported
// are logged as unreported. It reports whether LostEvents went back to
// the pending losses.
func (p *Pipeline) flushLoss(n *node, final bool) (retry bool) {
	if !final && p.abort.Err() != nil {
		return false
	}
	b, keys := n.loss.take(p.cfg.NodeName)
	if b == nil {
		return false
	}
	one := NewBatch()
	var unreported, retried uint64
	var lastErr error
	for i := range b.Events {
		ev := &b.Events[i]
		one.Truncate(0)
		e := one.Next()
		e.Lost, e.NodeName, e.Time, e.Reported = ev.Lost, ev.NodeName, ev.Time, true
		n.stats.batches.Add(1)
		failed := 1
		if p.abort.Err() == nil {
			var err error
			failed, err = p.sinkWrite(n, one, 0)
			if err != nil {
				lastErr = err
			}
		}
		if failed <= 0 {
			n.loss.reported.Add(1)
			n.loss.ok()
			continue
		}
		n.loss.failed(n.stats.delivered())
		if final {
			unreported += ev.Lost.NumEventsLost
			continue
		}
		retried += ev.Lost.NumEventsLost
		n.loss.putBack(ev, keys[i])
	}
	one.Release()
	b.Release()
	switch {
	case unreported > 0:
		n.log.Error("the sink could not deliver the last LostEvents at shutdown: these losses are unreported in its stream",
			"events", unreported, "error", lastErr)
	case retried > 0:
		n.log.Debug("the sink did not deliver LostEvents; they are reported again at the next flush",
			"events", retried, "error", lastErr)
	}
	return retried > 0
}

// write hands b, a batch from n's buffer, to the sink and releases it.
// Such batches hold no reported LostEvents (flushLoss writes those), so
// every event the sink gave up on is a counted one.
func (p *Pipeline) write(n *node, b *Batch, counted int) {
	n.stats.in.Add(uint64(counted))
	n.stats.batches.Add(1)
	ack := b.ack
	if p.abort.Err() != nil {
		// The shutdown deadline has passed: nothing more is written.
		ack.Done(false)
		b.Release()
		p.lose(n, flowpb.LostEventSource_OBSERVER_EVENTS_QUEUE, uint64(counted), &n.stats.failed)
		return
	}
	failed, err := p.sinkWrite(n, b, lendLease|lendLate)
	b.Release() // a sink's Lease keeps it from the pool, not its Ack
	failed = min(max(failed, 0), counted)
	ack.Done(failed == 0 && err == nil)
	if err != nil && p.abort.Err() == nil {
		n.log.Warn("sink write failed", "error", err, "failed", failed)
	}
	n.stats.out.Add(uint64(counted - failed))
	p.lose(n, flowpb.LostEventSource_OBSERVER_EVENTS_QUEUE, uint64(failed), &n.stats.failed)
}

// lendMode says what a sink may do with a batch it is lent.
type lendMode uint8

const (
	// lendLease lets the sink keep the batch past Write with a Lease.
	lendLease lendMode = 1 << iota
	// lendLate lets the sink deliver the batch's events after Write
	// returns (see Batch.LateDelivery).
	lendLate
	// lendAgain tells the sink that the batch is written again if Write
	// fails events (see Batch.WrittenAgain).
	lendAgain
)

// sinkWrite lends b to the sink, numbering its events from the sink's
// sequence (see Batch.Seq); how says what the sink may do with it (see
// lendMode).
func (p *Pipeline) sinkWrite(n *node, b *Batch, how lendMode) (failed int, err error) {
	c := uint64(len(b.Events))
	base := n.seq.Add(c) - c + 1
	failed, err = p.sinkWriteSeq(n, b, p.epoch, base, b.ack, how)
	if failed > 0 && c == 1 && b.Events[0].Reported {
		// A LostEvent of flowbus's own that failed is reported again
		// later, under a new number: give this one back when no other
		// took one since, so that it leaves no gap.
		n.seq.CompareAndSwap(base, base-1)
	}
	return failed, err
}

// sinkWriteSeq lends b to the sink as a view whose first event has the
// flowbus-seq (epoch, base) and whose Ack is ack (nil when the caller
// resolves the source's acknowledgement itself, as a disk buffer does).
// The view is the sink's own, so sinks that share a batch see their own
// numbers. With lendLease, the sink may take a Lease on b, which b's
// holders must then leave unchanged until it is released (see Lease);
// without, b is reused after Write and cannot be leased. lendLate is what
// the view's LateDelivery reports, lendAgain what its WrittenAgain does.
func (p *Pipeline) sinkWriteSeq(n *node, b *Batch, epoch int64, base uint64, ack *Ack, how lendMode) (failed int, err error) {
	v := &n.view
	v.Events, v.inputBytes, v.seqEpoch, v.seqBase, v.ack = b.Events, b.inputBytes, epoch, base, ack
	v.view, v.lent, v.mode = true, nil, how
	if how&lendLease != 0 {
		v.lent = b
	}
	defer func() { v.Events, v.ack, v.lent, v.mode = nil, nil, nil, 0 }()
	b = v
	defer func() {
		if r := recover(); r != nil {
			if n.stats.panicked.Add(1) == 1 {
				n.log.Error("sink panicked; its batch is lost", "panic", r)
			}
			failed, err = b.Len(), fmt.Errorf("panic: %v", r)
		}
	}()
	return n.sink.Write(p.abort, b)
}

// Run runs the pipeline until ctx is cancelled (SIGTERM) or every source is
// exhausted, then drains it: sources stop, every buffer is drained through
// the transforms and sinks, and the sinks are closed, all within
// shutdown_timeout; what cannot be delivered by then is counted and
// reported as lost. It returns the summary, and an error when the pipeline
// could not start or a component failed. A pipeline runs once.
func (p *Pipeline) Run(ctx context.Context) (*Summary, error) {
	if p.state.started.Swap(true) {
		return nil, errors.New("pipeline: Run called twice")
	}
	// abort is cancelled when the shutdown deadline passes; it bounds every
	// wait of the drain (blocked pushes, sink writes, Close).
	abort, cancelAbort := context.WithCancel(context.Background())
	defer cancelAbort()
	p.abort = abort

	if !p.noServe {
		srv, err := p.serve()
		if err != nil {
			return nil, err
		}
		if srv != nil {
			defer srv.Close()
		}
	}
	if err := p.openDisks(); err != nil {
		return nil, err
	}
	if err := p.start(ctx); err != nil {
		p.closeDisks()
		return nil, err
	}
	r := p.launch(ctx, cancelAbort)
	defer r.stopSources()
	r.wait(ctx)
	closeCtx, release := r.drain()
	defer release()
	return r.shutdown(closeCtx)
}

// serve starts the HTTP endpoint (/metrics, /healthz, /readyz) when the
// config names an address; it returns nil when it does not.
func (p *Pipeline) serve() (*http.Server, error) {
	addr := p.cfg.Metrics.Listen
	if addr == "" {
		return nil, nil
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("metrics: listen on %s: %w", addr, err)
	}
	p.addr.Store(ln.Addr().String())
	srv := &http.Server{Handler: p.Handler(), ReadHeaderTimeout: 5 * time.Second}
	go srv.Serve(ln)
	return srv, nil
}

// run is one Run of a started pipeline: the goroutines it launched and the
// errors they reported.
type run struct {
	p           *Pipeline
	cancelAbort context.CancelFunc // passes the shutdown deadline at once

	srcCtx      context.Context // the sources' context
	stopSources context.CancelFunc
	srcDone     chan struct{} // closed when every source returned
	consumers   sync.WaitGroup
	tickDone    chan struct{}

	errMu sync.Mutex
	errs  []error
}

func (r *run) fail(err error) {
	r.errMu.Lock()
	r.errs = append(r.errs, err)
	r.errMu.Unlock()
}

// launch starts the consumers (transforms and sinks), the loss ticker and
// the sources.
func (p *Pipeline) launch(ctx context.Context, cancelAbort context.CancelFunc) *run {
	r := &run{p: p, cancelAbort: cancelAbort, srcDone: make(chan struct{}), tickDone: make(chan struct{})}
	r.srcCtx, r.stopSources = context.WithCancel(ctx)

	// Wire producers before anything runs.
	for _, n := range p.nodes {
		for _, c := range n.outputs {
			c.queue.addProducer()
		}
	}
	for _, n := range p.transforms {
		r.consumers.Add(1)
		go func() { defer r.consumers.Done(); p.runTransform(n) }()
	}
	for _, n := range p.sinks {
		r.consumers.Add(1)
		if n.disk != nil {
			go func() { defer r.consumers.Done(); p.runDiskSink(n) }()
			continue
		}
		go func() { defer r.consumers.Done(); p.runSink(n) }()
	}
	go p.tick(r.tickDone)

	var sources sync.WaitGroup
	for _, n := range p.sources {
		sources.Add(1)
		var once sync.Once
		finish := func() {
			once.Do(func() {
				for _, c := range n.outputs {
					c.queue.producerDone()
				}
			})
		}
		p.finishers = append(p.finishers, finish)
		go func() {
			defer sources.Done()
			defer finish()
			err := p.runSource(r.srcCtx, n)
			stopped := r.srcCtx.Err() != nil && (errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded))
			if err != nil && !stopped {
				n.log.Error("source failed", "error", err)
				r.fail(fmt.Errorf("source %q: %w", n.name, err))
				r.stopSources()
			}
		}()
	}
	go func() { sources.Wait(); close(r.srcDone) }()
	p.state.running.Store(true)
	close(p.launched)
	p.log.Info("pipeline running", "sources", len(p.sources), "transforms", len(p.transforms), "sinks", len(p.sinks))
	return r
}

// wait returns when ctx is cancelled, every source is done, or a source
// failed.
func (r *run) wait(ctx context.Context) {
	timeout := r.p.cfg.ShutdownTimeout.String()
	select {
	case <-ctx.Done():
		r.p.log.Info("stopping: draining the pipeline", "timeout", timeout)
	case <-r.srcDone:
		r.p.log.Info("every source is done: draining the pipeline", "timeout", timeout)
	case <-r.srcCtx.Done(): // a source failed
	}
}

// drain stops the sources and waits until every buffer is drained through
// the transforms and sinks, or the shutdown deadline passed. It returns the
// context that bounds the sinks' Close (the same deadline), and the
// function that releases it and the deadline's timer.
func (r *run) drain() (context.Context, func()) {
	p := r.p
	p.state.running.Store(false)
	p.state.draining.Store(true)
	r.stopSources()
	timeout := p.cfg.ShutdownTimeout.D()
	deadline := time.AfterFunc(timeout, func() {
		p.log.Warn("shutdown timeout passed: giving up on what is still queued")
		r.cancelAbort()
	})
	// Close gets the same deadline, visible to the sinks.
	closeCtx, cancelClose := context.WithDeadline(p.abort, time.Now().Add(timeout))
	release := func() {
		deadline.Stop()
		cancelClose()
	}

	// Sources that ignore cancellation are abandoned at the deadline: their
	// buffers close and what they emit later is counted as lost.
	select {
	case <-r.srcDone:
	case <-p.abort.Done():
		for _, f := range p.finishers {
			f()
		}
	}
	drained := make(chan struct{})
	go func() { r.consumers.Wait(); close(drained) }()
	select {
	case <-drained:
	case <-p.abort.Done():
		// Components get a last moment to notice the cancelled context.
		select {
		case <-drained:
		case <-time.After(abortGrace):
			p.log.Error("a transform or sink did not return after the shutdown timeout; exiting without it")
			r.fail(errors.New("shutdown: a component did not stop"))
		}
	}
	close(r.tickDone)
	return closeCtx, release
}

// shutdown stops the sources and transforms and closes the sinks (the
// reverse of the start order) within closeCtx, and returns the summary and
// the errors of the run.
func (r *run) shutdown(closeCtx context.Context) (*Summary, error) {
	p := r.p
	for _, err := range p.stopAll(closeCtx, p.startOrder(), true) {
		p.log.Error("stopping a component failed", "error", err)
		r.fail(err)
	}
	p.state.draining.Store(false)
	p.state.ran.Store(true)
	r.errMu.Lock()
	defer r.errMu.Unlock()
	return p.Summary(), errors.Join(r.errs...)
}

// runSource runs one source, turning a panic into an error.
func (p *Pipeline) runSource(ctx context.Context, n *node) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("panic: %v", r)
		}
	}()
	return n.source.Run(ctx, &output{p: p, n: n})
}

func (p *Pipeline) closeSink(ctx context.Context, n *node) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("panic: %v", r)
		}
	}()
	return n.sink.Close(ctx)
}

// abortGrace is how long Run waits, after the shutdown timeout, for the
// transforms and sinks to return.
const abortGrace = 5 * time.Second

// startOrder is the order components start in: sinks first, so that
// nothing is emitted before its destination is ready, sources last. They
// stop in the reverse order.
func (p *Pipeline) startOrder() []*node {
	return append(append(append([]*node(nil), p.sinks...), p.transforms...), p.sources...)
}

// start calls Start on every Starter in start order. When one fails, every
// component before it is stopped (see stopAll).
func (p *Pipeline) start(ctx context.Context) error {
	order := p.startOrder()
	for _, n := range p.sinks {
		if l, ok := n.sink.(LateLoser); ok {
			l.SetLateLoss(func(k int) { p.loseLate(n, k) })
		}
	}
	for i, n := range order {
		s, ok := n.component().(Starter)
		if !ok {
			continue
		}
		if err := p.startOne(ctx, n, s); err != nil {
			ctx, cancel := context.WithTimeout(context.Background(), p.cfg.ShutdownTimeout.D())
			defer cancel()
			for _, err := range p.stopAll(ctx, order[:i], true) {
				n.log.Warn("stopping after a failed start", "error", err)
			}
			return fmt.Errorf("%s %q: start: %w", n.kind, n.name, err)
		}
	}
	return nil
}

func (p *Pipeline) startOne(ctx context.Context, n *node, s Starter) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("panic: %v", r)
		}
	}()
	return s.Start(ctx)
}

// stopAll stops the components of started (a prefix of the start order)
// in reverse order: Stop for the Stoppers among sources and transforms,
// and, when sinks is true, Close for the sinks. It returns the errors,
// each naming its component.
func (p *Pipeline) stopAll(ctx context.Context, started []*node, sinks bool) []error {
	var errs []error
	for i := len(started) - 1; i >= 0; i-- {
		n := started[i]
		var err error
		switch {
		case n.kind == kindSink && sinks:
			if err = p.closeSink(ctx, n); err != nil {
				err = fmt.Errorf("sink %q: close: %w", n.name, err)
			}
		case n.kind != kindSink:
			if err = p.stopOne(ctx, n); err != nil {
				err = fmt.Errorf("%s %q: stop: %w", n.kind, n.name, err)
			}
		}
		if err != nil {
			errs = append(errs, err)
		}
	}
	return errs
}

// stopOne calls Stop on n when it is a Stopper, turning a panic into an
// error.
func (p *Pipeline) stopOne(ctx context.Context, n *node) (err error) {
	s, ok := n.component().(Stopper)
	if !ok {
		return nil
	}
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("panic: %v", r)
		}
	}()
	return s.Stop(ctx)
}

func (n *node) component() any {
	switch n.kind {
	case kindSource:
		return n.source
	case kindTransform:
		return n.transform
	}
	return n.sink
}

// tick asks every sink with pending losses to report them, once per
// lost_event_interval.
func (p *Pipeline) tick(done <-chan struct{}) {
	t := time.NewTicker(p.cfg.LostEventInterval.D())
	defer t.Stop()
	for {
		select {
		case <-done:
			return
		case <-t.C:
			for _, n := range p.sinks {
				if n.loss.hasPending() {
					n.queue.poke()
				}
			}
		}
	}
}

// Addr is the address the HTTP endpoint listens on, once Run started it.
func (p *Pipeline) Addr() string {
	s, _ := p.addr.Load().(string)
	return s
}
