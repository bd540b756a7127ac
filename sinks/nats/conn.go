package nats

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/flowbus/flowbus/internal/sinkutil"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Start starts the embedded server when configured, connects, and creates
// or checks the JetStream stream. When no server accepts a connection,
// Start fails with Build.RequireHealthy (`run --require-healthy`);
// otherwise the sink starts unready and keeps connecting in the background
// with backoff, and Write waits for the connection. A server that refuses
// the sink's credentials or TLS settings, or a stream that cannot be
// created or found, fails Start.
func (s *Sink) Start(ctx context.Context) error {
	url := s.url
	if s.embedded != nil {
		srv, err := acquireEmbedded(s.embedded)
		if err != nil {
			return fmt.Errorf("nats: embedded server: %w", err)
		}
		s.srv = srv
		url = srv.clientURL()
		s.log.Info("nats: embedded server started", "url", url, "store_dir", srv.storeDir)
	}
	nc, err := nats.Connect(url, s.opts...)
	if err != nil {
		err = fmt.Errorf("nats: connect %s: %w", redact(url), err)
		if s.requireHealthy || !errors.Is(err, nats.ErrNoServers) {
			return err
		}
		s.startErr.Store(&err)
		s.log.Warn("nats: no server reachable at start; starting unready and retrying in the background", "err", err)
		go s.reconnect(url)
		return nil
	}
	if err := s.setup(ctx, nc); err != nil {
		nc.Close()
		return err
	}
	return nil
}

// setup creates the JetStream context and checks or creates the stream on
// the connection nc, then makes the sink use it.
func (s *Sink) setup(ctx context.Context, nc *nats.Conn) error {
	var jsc jetstream.JetStream
	if s.js != nil {
		var err error
		jsc, err = jetstream.New(nc,
			jetstream.WithPublishAsyncMaxPending(s.js.MaxPending),
			jetstream.WithPublishAsyncTimeout(s.ackTimeout))
		if err != nil {
			return fmt.Errorf("nats: jetstream: %w", err)
		}
		if err := s.ensureStream(ctx, jsc); err != nil {
			return err
		}
	}
	s.connMu.Lock()
	defer s.connMu.Unlock()
	if closed(s.done) {
		return errors.New("nats: sink closed")
	}
	s.nc, s.jsc = nc, jsc
	close(s.up)
	go s.watch()
	return nil
}

// reconnect connects in the background after Start found no server, with
// backoff, until it succeeds or the sink closes.
func (s *Sink) reconnect(url string) {
	var nc *nats.Conn
	for attempt := 1; ; attempt++ {
		if !sinkutil.Sleep(s.done, s.backoff.Delay(attempt), nil) {
			if nc != nil {
				nc.Close()
			}
			return
		}
		var err error
		if nc == nil {
			if nc, err = nats.Connect(url, s.opts...); err != nil {
				nc = nil
				err = fmt.Errorf("nats: connect %s: %w", redact(url), err)
			}
		}
		if nc != nil {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			err = s.setup(ctx, nc)
			cancel()
			if err == nil {
				s.startErr.Store(nil)
				s.log.Info("nats: connected", "server", nc.ConnectedUrlRedacted(), "attempts", attempt+1)
				return
			}
			if closed(s.done) {
				nc.Close()
				return
			}
			s.log.Error("nats: connected, but the stream is not usable; retrying", "err", err)
		}
		s.startErr.Store(&err)
	}
}

// waitConnected waits until the sink is connected; false when ctx ended or
// the sink closed first.
func (s *Sink) waitConnected(ctx context.Context) bool {
	select {
	case <-s.up:
		return true
	default:
	}
	select {
	case <-s.up:
		return true
	case <-ctx.Done():
	case <-s.done:
	}
	return false
}

func closed(c <-chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}

func (s *Sink) ensureStream(ctx context.Context, jsc jetstream.JetStream) error {
	js := s.js
	if js.Stream == "" {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if !js.Create {
		if _, err := jsc.Stream(ctx, js.Stream); err != nil {
			return fmt.Errorf("nats: stream %s: %w (set jetstream.create to create it)", js.Stream, err)
		}
		return nil
	}
	cfg := jetstream.StreamConfig{
		Name:       js.Stream,
		Subjects:   js.Subjects,
		Storage:    jetstream.FileStorage,
		MaxAge:     js.MaxAge.D(),
		MaxBytes:   -1,
		Duplicates: js.DuplicateWindow.D(),
	}
	if js.Storage == "memory" {
		cfg.Storage = jetstream.MemoryStorage
	}
	if js.MaxBytes > 0 {
		cfg.MaxBytes = js.MaxBytes
	}
	if _, err := jsc.CreateOrUpdateStream(ctx, cfg); err != nil {
		return fmt.Errorf("nats: create stream %s (subjects %s): %w", js.Stream, strings.Join(js.Subjects, ","), err)
	}
	return nil
}

// redact removes user information from a URL for messages.
func redact(url string) string {
	var out []string
	for _, u := range strings.Split(url, ",") {
		if at := strings.LastIndexByte(u, '@'); at >= 0 {
			scheme := ""
			if i := strings.Index(u, "://"); i >= 0 && i < at {
				scheme = u[:i+3]
			}
			u = scheme + "***@" + u[at+1:]
		}
		out = append(out, u)
	}
	return strings.Join(out, ",")
}

// Close waits for the batches in flight to resolve (their events given up
// are reported through the late-loss function before it returns), drains
// the connection and stops the embedded server. When ctx ends first (the
// shutdown timeout passed), what is still in flight is given up, and the
// connection is closed without draining: nothing counted is pending
// (JetStream), or it was counted delivered at most once (core publish), so
// this is logged, not returned as an error.
func (s *Sink) Close(ctx context.Context) error {
	if err := s.settle(ctx, 0); err != nil {
		s.log.Warn("nats: publishes still unacknowledged at the shutdown timeout; they are reported lost", "err", err)
	}
	s.closing.Do(func() { close(s.done) })
	s.mu.Lock()
	defer s.mu.Unlock()
	if ch := s.flights; ch != nil {
		// No Write sends to flights after done is closed.
		close(ch)
		s.flights = nil
		s.resolving.Do(func() { go s.resolve(ch) })
		select {
		case <-s.resolved:
		case <-time.After(s.ackTimeout + time.Second):
			// ctx has ended and the client holds PubAcks back: the
			// resolver ends within ack_timeout.
			s.log.Warn("nats: batches in flight did not resolve before the sink closed")
		}
	}
	s.connMu.Lock()
	defer s.connMu.Unlock()
	if s.nc != nil && !s.nc.IsClosed() {
		closed := make(chan struct{})
		s.nc.SetClosedHandler(func(*nats.Conn) { close(closed) })
		if ctx.Err() != nil || s.nc.Drain() != nil {
			s.nc.Close()
		} else {
			select {
			case <-closed:
			case <-ctx.Done():
				s.nc.Close()
				s.log.Warn("nats: the connection did not drain before the shutdown timeout; closed it", "err", ctx.Err())
			}
		}
	}
	if s.srv != nil {
		releaseEmbedded(s.srv)
		s.srv = nil
	}
	return nil
}

// connected tells the retry driver whether the client is connected, so
// that a backoff ends as soon as the client has reconnected.
func (s *Sink) connected() bool { return s.nc != nil && s.nc.IsConnected() }
