//go:build !linux

package ifname

import (
	"log/slog"
	"net"
)

func lookup(index uint32) string {
	ifi, err := net.InterfaceByIndex(int(index))
	if err != nil {
		return ""
	}
	return ifi.Name
}

// Watch does nothing here: the cache asks the kernel as Get describes.
func (c *Cache) Watch(*slog.Logger) (stop func(), err error) { return func() {}, nil }
