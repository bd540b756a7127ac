package flowfilter

// Predicates on endpoints: IP addresses and IP version, pod, service and
// node names, FQDNs, workloads, clusters and identities.

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	flowpb "github.com/flowbus/flowbus/flow"
)

// source_ip / destination_ip / source_ip_xlated: an entry containing "/" is
// a CIDR (netip.ParsePrefix), otherwise an address (netip.ParseAddr); both
// are validated at build time. The flow's IP string must be non-empty;
// addresses are compared as strings, exactly as written (no
// normalisation), prefixes by Contains(ParseAddr(flow ip)).
func ipFilter(field string, entries []string, get func(*flowpb.Flow) string) (predicate, error) {
	if len(entries) == 0 {
		return nil, nil
	}
	var addrs []string
	var prefixes []netip.Prefix
	for i, e := range entries {
		if strings.Contains(e, "/") {
			p, err := netip.ParsePrefix(e)
			if err != nil {
				return nil, fieldErrf(field, i, e, "invalid CIDR: %v", err)
			}
			prefixes = append(prefixes, p)
			continue
		}
		if _, err := netip.ParseAddr(e); err != nil {
			return nil, fieldErrf(field, i, e, "invalid IP address: %v", err)
		}
		addrs = append(addrs, e)
	}
	return func(f *flowpb.Flow) bool {
		ip := get(f)
		if ip == "" {
			return false
		}
		if slices.Contains(addrs, ip) {
			return true
		}
		if len(prefixes) > 0 {
			a, err := netip.ParseAddr(ip)
			if err != nil {
				return false
			}
			for _, p := range prefixes {
				if p.Contains(a) {
					return true
				}
			}
		}
		return false
	}, nil
}

// source_pod / destination_pod / source_service / destination_service:
// entries are `[namespace/][prefix]` split like Hubble's
// ParseNamespaceName: "ns/prefix" → (ns, prefix); "ns/" → every name in
// ns; "/prefix" → the prefix in any namespace; "prefix" (no slash) →
// namespace "default"; with more than one slash, everything after the
// second segment is ignored. An entry giving neither ("" or "/") is an
// error. Match: the endpoint's namespace and name must not both be empty,
// the namespace must equal the entry's unless that is empty, and the name
// must start with the prefix (an empty prefix matches every name).
func nameFilter(field string, entries []string, get func(*flowpb.Flow) (ns, name string)) (predicate, error) {
	if len(entries) == 0 {
		return nil, nil
	}
	type nsName struct{ ns, prefix string }
	filters := make([]nsName, 0, len(entries))
	for i, e := range entries {
		ns, prefix := parseNamespaceName(e)
		if ns == "" && prefix == "" {
			return nil, fieldErrf(field, i, e, "invalid filter, must be [namespace/][<name>]")
		}
		filters = append(filters, nsName{ns, prefix})
	}
	return func(f *flowpb.Flow) bool {
		ns, name := get(f)
		if ns == "" && name == "" {
			return false
		}
		for _, nf := range filters {
			if (nf.ns == "" || nf.ns == ns) && strings.HasPrefix(name, nf.prefix) {
				return true
			}
		}
		return false
	}, nil
}

// parseNamespaceName splits "ns/name" (Hubble's k8s.ParseNamespaceName).
func parseNamespaceName(s string) (ns, name string) {
	first, rest, found := strings.Cut(s, "/")
	if found {
		name, _, _ = strings.Cut(rest, "/")
		return first, name
	}
	if first == "" {
		return "", ""
	}
	return "default", first
}

// source_fqdn / destination_fqdn: the patterns form one regular expression
// \A(?:p1|p2…)\z. Each pattern is trimmed of spaces and of one trailing
// dot, lower-cased, and may hold [-0-9_a-z.*], where "." is literal and "*"
// is [-.0-9a-z]* (it crosses dots). Matches when any of the flow's
// source_names / destination_names matches (names are not lower-cased).
func fqdnFilter(field string, patterns []string, get func(*flowpb.Flow) []string) (predicate, error) {
	if len(patterns) == 0 {
		return nil, nil
	}
	fps := make([]fqdnPattern, 0, len(patterns))
	for i, p := range patterns {
		fp, err := newFQDNPattern(p)
		if err != nil {
			return nil, fieldErr(field, i, p, err)
		}
		fps = append(fps, fp)
	}
	return func(f *flowpb.Flow) bool {
		for _, name := range get(f) {
			for i := range fps {
				if fps[i].match(name) {
					return true
				}
			}
		}
		return false
	}, nil
}

// fqdnRegexp matches any FQDN (with underscores): what an empty element of
// a node name pattern means.
const fqdnRegexp = `(?:[-0-9_a-z]+(?:\.[-0-9_a-z]+)*)`

func appendFQDNPattern(sb *strings.Builder, pattern string) error {
	pattern = strings.TrimSpace(pattern)
	pattern = strings.TrimSuffix(pattern, ".")
	pattern = strings.ToLower(pattern)
	switch {
	case pattern == "":
		return errors.New("empty pattern")
	case strings.HasSuffix(pattern, "."):
		return errors.New("multiple trailing dots in pattern")
	}
	for _, r := range pattern {
		switch {
		case r == '.':
			sb.WriteString(`\.`)
		case r == '*':
			sb.WriteString(`[-.0-9a-z]*`)
		case r == '-', r == '_', '0' <= r && r <= '9', 'a' <= r && r <= 'z':
			sb.WriteRune(r)
		default:
			return fmt.Errorf("%q: invalid rune in pattern", r)
		}
	}
	return nil
}

// node_name: patterns are [cluster/]node, each part an FQDN pattern as
// above where an empty part matches any name; without "/" the pattern
// matches every cluster; more than one "/" is an error. At match time an
// empty flow node_name never matches, and one without "/" is taken as
// "default/<node_name>" (Cilium's default cluster name).
func nodeNameFilter(patterns []string) (predicate, error) {
	if len(patterns) == 0 {
		return nil, nil
	}
	nps := make([]nodePattern, 0, len(patterns))
	for i, p := range patterns {
		np, err := newNodePattern(p)
		if err != nil {
			return nil, fieldErr("node_name", i, p, err)
		}
		nps = append(nps, np)
	}
	return func(f *flowpb.Flow) bool {
		name := f.GetNodeName()
		if name == "" {
			return false
		}
		cluster, node, found := strings.Cut(name, "/")
		if !found {
			cluster, node = "default", name
		} else if strings.IndexByte(node, '/') >= 0 {
			return false // no pattern part matches a slash
		}
		for i := range nps {
			if nps[i].match(cluster, node) {
				return true
			}
		}
		return false
	}, nil
}

func appendNodeNamePattern(sb *strings.Builder, pattern string) error {
	if pattern == "" {
		return errors.New("empty pattern")
	}
	cluster, node := "", ""
	elems := strings.Split(pattern, "/")
	switch len(elems) {
	case 1:
		node = elems[0]
	case 2:
		cluster, node = elems[0], elems[1]
	default:
		return errors.New("too many slashes in pattern")
	}
	if cluster == "" {
		sb.WriteString(fqdnRegexp)
	} else if err := appendFQDNPattern(sb, cluster); err != nil {
		return err
	}
	sb.WriteByte('/')
	if node == "" {
		sb.WriteString(fqdnRegexp)
	} else if err := appendFQDNPattern(sb, node); err != nil {
		return err
	}
	return nil
}

// source_workload / destination_workload: matches when some workload of
// the endpoint has (filter name empty or equal) and (filter kind empty or
// equal) for some filter entry.
func workloadFilter(field string, entries []*flowpb.Workload, ep func(*flowpb.Flow) *flowpb.Endpoint) (predicate, error) {
	if len(entries) == 0 {
		return nil, nil
	}
	type wl struct{ name, kind string }
	ws := make([]wl, len(entries))
	for i, e := range entries {
		ws[i] = wl{e.GetName(), e.GetKind()}
	}
	return func(f *flowpb.Flow) bool {
		for _, w := range ep(f).GetWorkloads() {
			for _, fw := range ws {
				if (fw.name == "" || fw.name == w.GetName()) && (fw.kind == "" || fw.kind == w.GetKind()) {
					return true
				}
			}
		}
		return false
	}, nil
}

// source_cluster_name / destination_cluster_name: exact equality with the
// endpoint's cluster_name; an empty name in the filter is an error.
func clusterNameFilter(field string, names []string, ep func(*flowpb.Flow) *flowpb.Endpoint) (predicate, error) {
	if len(names) == 0 {
		return nil, nil
	}
	for i, n := range names {
		if n == "" {
			return nil, fieldErrf(field, i, n, "invalid cluster name: empty")
		}
	}
	return func(f *flowpb.Flow) bool {
		return slices.Contains(names, ep(f).GetClusterName())
	}, nil
}

// source_identity / destination_identity: the endpoint must be set and its
// identity in the list.
func identityFilter(ids []uint32, ep func(*flowpb.Flow) *flowpb.Endpoint) (predicate, error) {
	if len(ids) == 0 {
		return nil, nil
	}
	return func(f *flowpb.Flow) bool {
		e := ep(f)
		return e != nil && slices.Contains(ids, e.GetIdentity())
	}, nil
}

// ip_version: membership of IP.ipVersion (IP_NOT_USED without IP).
func ipVersionFilter(vs []flowpb.IPVersion) (predicate, error) {
	if len(vs) == 0 {
		return nil, nil
	}
	return func(f *flowpb.Flow) bool { return slices.Contains(vs, f.GetIP().GetIpVersion()) }, nil
}
