//go:build linux

package ifname

import (
	"log/slog"
	"sync"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// lookup asks the kernel for one link by its index (RTM_GETLINK), without
// dumping the whole table.
func lookup(index uint32) string {
	l, err := netlink.LinkByIndex(int(index))
	if err != nil {
		return ""
	}
	return l.Attrs().Name
}

// Watch subscribes to the link table's changes (RTM_NEWLINK, RTM_DELLINK)
// and keeps the cache current until stop is called; it first lists the
// existing links. When the subscription fails or ends early, the cache
// still asks the kernel as Get describes.
func (c *Cache) Watch(log *slog.Logger) (stop func(), err error) {
	updates := make(chan netlink.LinkUpdate, 256)
	done := make(chan struct{})
	err = netlink.LinkSubscribeWithOptions(updates, done, netlink.LinkSubscribeOptions{
		ListExisting: true,
		ErrorCallback: func(err error) {
			select {
			case <-done:
			default:
				log.Warn("interface names: link events", "error", err)
			}
		},
	})
	if err != nil {
		return func() {}, err
	}
	go func() {
		for u := range updates {
			if u.Link == nil || u.Attrs() == nil {
				continue
			}
			index := uint32(u.Attrs().Index)
			if u.Header.Type == unix.RTM_DELLINK {
				c.Forget(index)
			} else {
				c.Put(index, u.Attrs().Name)
			}
		}
	}()
	var once sync.Once
	return func() { once.Do(func() { close(done) }) }, nil
}
