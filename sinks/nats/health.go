package nats

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
)

// watch sends a PING every ping_interval and waits up to ack_timeout for
// the PONG: a server that holds the connection open but does not answer
// (a frozen process, a stalled network path) makes the sink unready until
// it answers again. The client itself pings as often and reconnects after
// three unanswered PINGs.
func (s *Sink) watch() {
	t := time.NewTicker(s.pingInterval)
	defer t.Stop()
	for {
		select {
		case <-s.done:
			return
		case <-t.C:
		}
		if s.nc.Status() != nats.CONNECTED {
			s.stale.Store(nil) // Ready reports the connection state
			continue
		}
		if err := s.nc.FlushTimeout(s.ackTimeout); err != nil {
			if s.nc.Status() != nats.CONNECTED || closed(s.done) {
				continue
			}
			e := fmt.Errorf("nats: the server did not answer a PING within %s: %w", s.ackTimeout, err)
			if s.stale.Swap(&e) == nil {
				s.log.Warn("nats: the server does not answer; unready until it does", "err", err)
			}
		} else if s.stale.Swap(nil) != nil {
			s.log.Info("nats: the server answers again")
		}
	}
}

// Ready reports an error while the connection is down.
func (s *Sink) Ready() error {
	if !closed(s.up) {
		if p := s.startErr.Load(); p != nil {
			return *p
		}
		return errors.New("nats: not connected yet")
	}
	if st := s.nc.Status(); st != nats.CONNECTED {
		return fmt.Errorf("nats: connection %s", strings.ToLower(st.String()))
	}
	if p := s.stale.Load(); p != nil {
		return *p
	}
	return s.retry.LostReady()
}
