package kafka

import (
	"context"
	"fmt"
	"net"
	"time"

	metadataAPI "github.com/segmentio/kafka-go/protocol/metadata"

	"github.com/flowbus/flowbus/internal/sinkutil"
)

// Start checks that the brokers answer (and accept the TLS and SASL
// settings) before the pipeline runs. A broker that accepts connections
// but refuses the sink's settings fails Start. When no broker accepts a
// connection, Start fails with Build.RequireHealthy (`run
// --require-healthy`); otherwise the sink starts unready and keeps
// connecting in the background with backoff, and Write waits for the
// connection.
func (s *Sink) Start(ctx context.Context) error {
	err := s.connect(ctx)
	if err == nil {
		s.connected()
		return nil
	}
	s.ready.Store(&err)
	if s.requireHealthy || s.dial(s.timeout) == nil {
		return err
	}
	s.log.Warn("kafka: brokers unreachable at start; starting unready and retrying in the background", "err", err)
	go s.reconnect()
	return nil
}

// connect asks the brokers for metadata once.
func (s *Sink) connect(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	if _, err := s.transport.RoundTrip(ctx, s.addr, &metadataAPI.Request{}); err != nil {
		// kafka-go's connection pool keeps a failed first metadata answer
		// until its next refresh (up to 5s): drop the pool, so that the
		// next attempt asks the brokers again.
		s.transport.CloseIdleConnections()
		return fmt.Errorf("kafka: brokers %s: %w", s.addr, err)
	}
	return nil
}

// connected marks the sink connected: ready, Write no longer waits, and
// the idle probe runs.
func (s *Sink) connected() {
	s.ready.Store(nil)
	s.lastWrite.Store(time.Now().UnixNano())
	close(s.up)
	go s.probe()
}

// reconnect connects in the background after a failed Start, with backoff,
// until it succeeds or the sink closes.
func (s *Sink) reconnect() {
	for attempt := 1; ; attempt++ {
		if !sinkutil.Sleep(s.done, s.backoff.Delay(attempt), nil) {
			return
		}
		ctx, cancel := context.WithCancel(context.Background())
		go func() {
			select {
			case <-s.done:
				cancel()
			case <-ctx.Done():
			}
		}()
		err := s.connect(ctx)
		cancel()
		if err == nil {
			s.log.Info("kafka: connected to the brokers", "brokers", s.addr.String(), "attempts", attempt+1)
			s.connected()
			return
		}
		if closed(s.done) {
			return
		}
		s.ready.Store(&err)
		s.log.Debug("kafka: brokers still unreachable", "err", err)
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

// probeInterval is how often an idle sink checks that a broker accepts
// connections, so that /readyz notices an outage without traffic.
var probeInterval = 5 * time.Second

// probe dials the brokers while no Write has talked to them for a while.
func (s *Sink) probe() {
	t := time.NewTicker(s.probeEvery)
	defer t.Stop()
	for {
		select {
		case <-s.done:
			return
		case <-t.C:
		}
		if time.Since(time.Unix(0, s.lastWrite.Load())) < s.probeEvery {
			continue
		}
		if err := s.dial(2 * time.Second); err != nil {
			e := fmt.Errorf("kafka: brokers %s unreachable: %w", s.addr, err)
			s.ready.Store(&e)
		} else {
			s.ready.Store(nil)
		}
	}
}

// dial checks that one of the brokers accepts a TCP connection.
func (s *Sink) dial(timeout time.Duration) error {
	var lastErr error
	for _, a := range s.brokers {
		c, err := net.DialTimeout("tcp", a, timeout)
		if err == nil {
			c.Close()
			return nil
		}
		lastErr = err
	}
	return lastErr
}

// reachable tells the retry driver whether a broker accepts connections,
// so that a backoff ends as soon as the broker is back.
func (s *Sink) reachable() bool { return s.dial(200*time.Millisecond) == nil }

// Ready reports an error while the brokers cannot be reached, or while
// the sink's LostEvents cannot be delivered.
func (s *Sink) Ready() error {
	if p := s.ready.Load(); p != nil {
		return *p
	}
	return s.retry.LostReady()
}

// Close releases the connections. Write is synchronous, so nothing is
// pending once the runtime calls Close.
func (s *Sink) Close(context.Context) error {
	s.closing.Do(func() { close(s.done) })
	s.mu.Lock()
	defer s.mu.Unlock()
	s.transport.CloseIdleConnections()
	return nil
}
