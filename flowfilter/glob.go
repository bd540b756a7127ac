package flowfilter

import (
	"math/bits"
	"regexp"
	"strings"
)

// The FQDN and node name patterns are defined by the regular expressions
// Hubble builds from them (see appendFQDNPattern). Matching them with
// regexp costs a few hundred nanoseconds per name, so they are matched here
// by a small NFA over the canonical pattern with one bit per position,
// without allocating. Patterns too long for a 64-bit state set fall back to
// the regular expression. A differential test and fuzz target compare both.

// fqdnPattern is one canonical FQDN pattern: literal bytes [-0-9_a-z.]
// and '*', which matches [-.0-9a-z]*. any means the whole FQDN syntax
// (an empty node name pattern part).
type fqdnPattern struct {
	p   string
	any bool
	re  *regexp.Regexp // for patterns longer than 63 bytes
}

// newFQDNPattern canonicalises pattern (trim, one trailing dot, lower case)
// and validates it as Hubble does.
func newFQDNPattern(pattern string) (fqdnPattern, error) {
	var sb strings.Builder
	sb.WriteString(`\A(?:`)
	if err := appendFQDNPattern(&sb, pattern); err != nil {
		return fqdnPattern{}, err
	}
	sb.WriteString(`)\z`)
	p := strings.ToLower(strings.TrimSuffix(strings.TrimSpace(pattern), "."))
	fp := fqdnPattern{p: p}
	if len(p) > 63 {
		re, err := regexp.Compile(sb.String())
		if err != nil {
			return fqdnPattern{}, err
		}
		fp.re = re
	}
	return fp, nil
}

func inStarClass(c byte) bool {
	return c == '-' || c == '.' || '0' <= c && c <= '9' || 'a' <= c && c <= 'z'
}

func inLabelClass(c byte) bool {
	return c == '-' || c == '_' || '0' <= c && c <= '9' || 'a' <= c && c <= 'z'
}

// isFQDN reports whether s matches (?:[-0-9_a-z]+(?:\.[-0-9_a-z]+)*).
func isFQDN(s string) bool {
	if s == "" {
		return false
	}
	prevDot := true
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c == '.' {
			if prevDot {
				return false
			}
			prevDot = true
			continue
		}
		if !inLabelClass(c) {
			return false
		}
		prevDot = false
	}
	return !prevDot
}

func (fp *fqdnPattern) match(s string) bool {
	switch {
	case fp.any:
		return isFQDN(s)
	case fp.re != nil:
		return fp.re.MatchString(s)
	case strings.IndexByte(fp.p, '*') < 0:
		return s == fp.p
	}
	p := fp.p
	m := len(p)
	closure := func(set uint64) uint64 {
		for rest := set; rest != 0; {
			i := bits.TrailingZeros64(rest)
			rest &^= 1 << i
			if i < m && p[i] == '*' {
				set |= 1 << (i + 1)
				rest |= 1 << (i + 1)
			}
		}
		return set
	}
	set := closure(1)
	for j := 0; j < len(s); j++ {
		c := s[j]
		var next uint64
		for rest := set; rest != 0; {
			i := bits.TrailingZeros64(rest)
			rest &^= 1 << i
			if i >= m {
				continue
			}
			if p[i] == '*' {
				if inStarClass(c) {
					next |= 1 << i
				}
			} else if p[i] == c {
				next |= 1 << (i + 1)
			}
		}
		if next == 0 {
			return false
		}
		set = closure(next)
	}
	return set&(1<<m) != 0
}

// nodePattern is a node name pattern: cluster and node parts.
type nodePattern struct {
	cluster, node fqdnPattern
}

// newNodePattern parses "[cluster/]node" as Hubble does: no slash means
// any cluster, an empty part means any name, more than one slash is an
// error.
func newNodePattern(pattern string) (nodePattern, error) {
	var sb strings.Builder
	if err := appendNodeNamePattern(&sb, pattern); err != nil {
		return nodePattern{}, err
	}
	var np nodePattern
	cluster, node, found := strings.Cut(pattern, "/")
	if !found {
		cluster, node = "", pattern
	}
	var err error
	if cluster == "" {
		np.cluster.any = true
	} else if np.cluster, err = newFQDNPattern(cluster); err != nil {
		return nodePattern{}, err
	}
	if node == "" {
		np.node.any = true
	} else if np.node, err = newFQDNPattern(node); err != nil {
		return nodePattern{}, err
	}
	return np, nil
}

// match matches a full "cluster/node" name: neither part may hold a slash.
func (np *nodePattern) match(cluster, node string) bool {
	return np.cluster.match(cluster) && np.node.match(node)
}
