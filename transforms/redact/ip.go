package redact

import (
	"crypto/hmac"
	"crypto/sha256"
	"hash"
	"net/netip"
	"strings"
)

// ipMode is how addresses are pseudonymised.
type ipMode int

const (
	// ipHMAC maps an address to a keyed pseudonym of the same family.
	ipHMAC ipMode = iota + 1
	// ipTruncate keeps a prefix of the address and zeroes the rest.
	ipTruncate
)

// hmacLabel separates flowbus's IP pseudonyms from any other use of the
// same key. Changing it changes every pseudonym.
const hmacLabel = "flowbus ip pseudonym v1\x00"

// DefaultCacheSize bounds the pseudonym cache of one redact transform.
const DefaultCacheSize = 1 << 16

// ipMapper pseudonymises IP address text. It is used by one goroutine.
//
// hmac: the pseudonym of an IPv4 address a is the IPv4 address made of the
// first 4 bytes of HMAC-SHA256(key, hmacLabel ‖ 0x04 ‖ a's 4 bytes); of an
// IPv6 address, the first 16 bytes of HMAC-SHA256(key, hmacLabel ‖ 0x06 ‖
// a's 16 bytes). An IPv4-mapped IPv6 address (::ffff:a.b.c.d) maps to the
// IPv4-mapped form of a.b.c.d's pseudonym, so that both spellings of one
// address still join. A zone (%eth0) is kept. The same address and key
// always give the same pseudonym, on every node; without the key the
// mapping cannot be computed or inverted, but anyone holding the key can
// invert it by trying every IPv4 address, so the key must stay secret.
// Pseudonyms of different addresses may collide (IPv4: 32 bits, so about
// one pair in 2^32; at a million distinct addresses, a hundred or so
// collisions are expected).
//
// truncate: the address keeps its first ipv4/ipv6 prefix bits and the rest
// is zeroed (10.1.2.3 with 24 → 10.1.2.0); for IPv4-mapped addresses the
// IPv4 prefix applies to the embedded address.
//
// A value that is not an IP address is replaced with HUBBLE_REDACTED; an
// empty value stays empty.
type ipMapper struct {
	mode           ipMode
	v4Bits, v6Bits int
	mac            hash.Hash
	sum            [sha256.Size]byte
	in             [1 + 16]byte

	cache    map[string]string         // address text → pseudonym text
	addrs    map[netip.Addr]netip.Addr // address → pseudonym
	maxCache int
}

func newHMACMapper(key []byte) *ipMapper {
	return &ipMapper{mode: ipHMAC, mac: hmac.New(sha256.New, key), cache: map[string]string{}, addrs: map[netip.Addr]netip.Addr{}, maxCache: DefaultCacheSize}
}

func newTruncateMapper(v4Bits, v6Bits int) *ipMapper {
	return &ipMapper{mode: ipTruncate, v4Bits: v4Bits, v6Bits: v6Bits, cache: map[string]string{}, addrs: map[netip.Addr]netip.Addr{}, maxCache: DefaultCacheSize}
}

// Map returns the pseudonym of s, from the cache when it is there. At the
// cache's bound an arbitrary entry makes room.
func (m *ipMapper) Map(s string) string {
	if s == "" {
		return s
	}
	if p, ok := m.cache[s]; ok {
		return p
	}
	p := m.compute(s)
	if len(m.cache) >= m.maxCache {
		for k := range m.cache {
			delete(m.cache, k)
			break
		}
	}
	m.cache[strings.Clone(s)] = p // s may be part of a larger string
	return p
}

func (m *ipMapper) compute(s string) string {
	a, err := netip.ParseAddr(s)
	if err != nil {
		return Redacted
	}
	return m.addr(a).String()
}

// addr returns the pseudonym of a, from its cache when it is there.
func (m *ipMapper) addr(a netip.Addr) netip.Addr {
	if p, ok := m.addrs[a]; ok {
		return p
	}
	p := m.computeAddr(a)
	if len(m.addrs) >= m.maxCache {
		for k := range m.addrs {
			delete(m.addrs, k)
			break
		}
	}
	m.addrs[a] = p
	return p
}

func (m *ipMapper) computeAddr(a netip.Addr) netip.Addr {
	zone := a.Zone()
	mapped := a.Is4In6()
	if mapped {
		a = a.Unmap()
	}
	var out netip.Addr
	switch m.mode {
	case ipHMAC:
		out = m.hmacAddr(a)
	case ipTruncate:
		bits := m.v6Bits
		if a.Is4() {
			bits = m.v4Bits
		}
		pfx, _ := a.WithZone("").Prefix(bits) // bits is within range: checked at build
		out = pfx.Addr()
	}
	if mapped {
		out = netip.AddrFrom16(out.As16())
	}
	if zone != "" {
		out = out.WithZone(zone)
	}
	return out
}

func (m *ipMapper) hmacAddr(a netip.Addr) netip.Addr {
	m.mac.Reset()
	m.mac.Write([]byte(hmacLabel))
	var n int
	if a.Is4() {
		b := a.As4()
		m.in[0] = 4
		n = 1 + copy(m.in[1:], b[:])
	} else {
		b := a.As16()
		m.in[0] = 6
		n = 1 + copy(m.in[1:], b[:])
	}
	m.mac.Write(m.in[:n])
	sum := m.mac.Sum(m.sum[:0])
	if a.Is4() {
		return netip.AddrFrom4([4]byte(sum[:4]))
	}
	return netip.AddrFrom16([16]byte(sum[:16]))
}
