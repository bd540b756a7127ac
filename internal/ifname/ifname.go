// Package ifname names network interfaces by index from the node's link
// table, as Hubble names a flow's interface: the kernel's events carry
// only the index. A Cache answers from memory and asks the kernel for an
// index it does not know (or knows for too long); with Watch, the link
// table's changes (a pod's veth created or deleted, an index reused) reach
// it as they happen.
package ifname

import (
	"sync"
	"time"
)

// Cache maps interface indexes to names. The zero value is ready to use
// and safe for concurrent use.
type Cache struct {
	mu sync.Mutex
	m  map[uint32]cached
}

type cached struct {
	name    string
	fetched time.Time
}

// Put records the name of an interface (learnt from an attach or a link
// event).
func (c *Cache) Put(index uint32, name string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.putLocked(index, name)
}

func (c *Cache) putLocked(index uint32, name string) {
	if c.m == nil {
		c.m = map[uint32]cached{}
	}
	c.m[index] = cached{name: name, fetched: time.Now()}
}

// Forget drops what the cache knows of an index (the interface is gone),
// so the next Get asks the kernel.
func (c *Cache) Forget(index uint32) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.m, index)
}

// Get returns the name of an interface, "" when the kernel has none. It
// asks the kernel at most once a second for an unknown index, and once a
// minute for a known one.
func (c *Cache) Get(index uint32) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	n, ok := c.m[index]
	if ok && time.Since(n.fetched) < refresh(n.name) {
		return n.name
	}
	name := lookup(index)
	c.putLocked(index, name)
	return name
}

// refresh is how long a cached name (or the absence of one) is trusted.
func refresh(name string) time.Duration {
	if name == "" {
		return time.Second
	}
	return time.Minute
}
