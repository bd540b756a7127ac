//go:build linux

package ebpf

import (
	"errors"
	"strings"

	"github.com/vishvananda/netlink"
)

// subscribeLinksLocked subscribes to the kernel's link events (RTM_NEWLINK,
// RTM_DELLINK) and rescans the interfaces at each, so that a new pod's veth
// is watched as soon as it exists and a named interface as soon as it
// appears. Without the subscription (it failed, or its socket overflowed),
// the periodic rescan still finds them.
func (s *Source) subscribeLinksLocked() {
	updates := make(chan netlink.LinkUpdate, 256)
	done := make(chan struct{})
	err := netlink.LinkSubscribeWithOptions(updates, done, netlink.LinkSubscribeOptions{
		ErrorCallback: func(err error) {
			select {
			case <-done:
			default:
				s.log.Warn("ebpf source: link events", "error", err)
			}
		},
	})
	if err != nil {
		s.log.Warn("ebpf source: cannot subscribe to link events; interfaces are rescanned every "+s.rescanEvery.String(), "error", err)
		return
	}
	s.linksDone = done
	go func() {
		for range updates {
			// Take every queued event, then rescan once.
			for more := true; more; {
				select {
				case _, ok := <-updates:
					more = ok
				default:
					more = false
				}
			}
			s.mu.Lock()
			s.rescanLocked()
			s.mu.Unlock()
		}
		select {
		case <-done:
		default:
			s.log.Warn("ebpf source: link events stopped; interfaces are rescanned every " + s.rescanEvery.String())
		}
	}()
}

// unsubscribeLinksLocked ends the link event subscription.
func (s *Source) unsubscribeLinksLocked() {
	if s.linksDone != nil {
		close(s.linksDone)
		s.linksDone = nil
	}
}

// updateWaitingLocked records the named interfaces that do not exist (yet),
// which Ready reports, and logs each change.
func (s *Source) updateWaitingLocked() {
	if s.set.interfaces.All {
		return
	}
	attached := map[string]bool{}
	for _, a := range s.attached {
		attached[a.name] = true
	}
	var waiting []string
	for _, name := range s.set.interfaces.Names {
		if !attached[name] {
			waiting = append(waiting, name)
		}
	}
	was := ""
	if p := s.waitErr.Load(); p != nil {
		was = (*p).Error()
	}
	if len(waiting) == 0 {
		if was != "" {
			s.log.Info("ebpf source: every named interface is attached")
		}
		s.waitErr.Store(nil)
		return
	}
	err := errors.New("waiting for interface " + strings.Join(waiting, ", ") + " to exist")
	if err.Error() != was {
		s.log.Warn("ebpf source: "+err.Error(), "interfaces", waiting)
	}
	s.waitErr.Store(&err)
}
