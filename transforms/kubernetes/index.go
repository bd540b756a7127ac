package kubernetes

import (
	"net/netip"
	"slices"
	"sort"
	"sync"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

// entry is everything a flow's side gets for one address, prepared when the
// objects behind it are stored: applying it copies strings and one label
// slice, and never looks anything else up. Entries sit by value in one
// dense slice (128 bytes each, two cache lines) that the address tables
// index; a change to a pod, service, slice, owner or node overwrites the
// entries of the addresses it touches, and the label slices they refer to
// are never changed.
type entry struct {
	// endpoint is false for an address that is in the cluster but has no
	// endpoint of its own (a ClusterIP, or a backend whose pod is not
	// known): the flow's endpoint is left as it is.
	endpoint bool
	// pod is true when a pod owns the address; namespace, podName,
	// workloadKind and workloadName are then its.
	pod bool
	// hasService is true when the address belongs to the Service
	// svcNamespace/svcName.
	hasService bool
	// identity is the reserved identity of a node address (0 for pods).
	identity                   uint32
	namespace, podName         string
	workloadKind, workloadName string
	svcNamespace, svcName      string
	// labels are the pod's labels as Hubble writes them (sorted), or a
	// node's reserved label.
	labels []string
}

// worldEntry is what every address outside the cluster gets.
var worldEntry = entry{endpoint: true, labels: labelsWorld, identity: identityWorld}

// pod is what the index keeps of a pod. Only the index's writers (under
// its lock) see it; flows see the entries built from it.
type pod struct {
	uid                        types.UID
	namespace, name            string
	labels                     []string
	ownerKind, ownerName       string // the controller owner reference
	workloadKind, workloadName string // the owner, resolved through owners
	ips                        []string
}

// service names a Service.
type service struct {
	namespace, name string
}

// owner is a controller owner reference of a ReplicaSet or Job.
type owner struct {
	kind, name string
}

// ownerKey names a ReplicaSet or Job: a ReplicaSet and a Job may share a
// name in one namespace.
type ownerKey struct {
	kind, namespace, name string
}

// nsName keys namespaced objects without building a string.
type nsName struct {
	namespace, name string
}

// node is what the index keeps of a node.
type node struct {
	name   string
	local  bool     // flowbus's own node
	labels []string // key=value, sorted
	ips    []string
	cidrs  []netip.Prefix
}

// index maps addresses to prepared entries. The informers' handlers write
// it; Process reads it under one read lock per batch, with one table probe
// per address (v4, v6 and entries). The maps are the state entries are
// built from, and only writers read them.
type index struct {
	mu sync.RWMutex

	cluster string

	// v4 and v6 map every address that belongs to a pod, a node or a
	// service, keyed by the address's bits, to its entry in entries: a
	// flow's address is parsed (an IPv4 address by a short loop) rather
	// than hashed and compared as a string. free lists the indexes of
	// entries no address uses.
	v4      v4Table
	v6      v6Table
	entries []entry
	free    []int32
	// podRanges are the nodes' pod CIDRs as sorted, disjoint address
	// ranges: an address there that no entry has is in the cluster but
	// unknown, not the outside world. podRanges4 are its IPv4 ranges as
	// numbers, for the flows' common case.
	podRanges  []addrRange
	podRanges4 []v4Range
	// localLabels are flowbus's node's labels, for node_labels.
	localLabels []string

	// podsByIP holds, per address, the pods that claim it in the order the
	// claims arrived; the last one is the current owner. Two live pods
	// claim one address only briefly (a reused address seen before the
	// old pod's deletion).
	podsByIP    map[string][]*pod
	podsByID    map[types.UID]*pod
	podsByOwner map[ownerKey]map[types.UID]*pod // pods owned by a ReplicaSet or Job

	clusterIPs map[string]service
	sliceAddrs map[string][]sliceClaim
	sliceByKey map[nsName]sliceEntry
	owners     map[ownerKey]owner // ReplicaSet and Job → their controller
	nodes      map[string]*node
	nodeByIP   map[string]*node
}

type sliceClaim struct {
	slice nsName
	svc   service
}

type sliceEntry struct {
	svc   service
	addrs []string
}

func newIndex(cluster string) *index {
	return &index{
		cluster:     cluster,
		podsByIP:    make(map[string][]*pod),
		podsByID:    make(map[types.UID]*pod),
		podsByOwner: make(map[ownerKey]map[types.UID]*pod),
		clusterIPs:  make(map[string]service),
		sliceAddrs:  make(map[string][]sliceClaim),
		sliceByKey:  make(map[nsName]sliceEntry),
		owners:      make(map[ownerKey]owner),
		nodes:       make(map[string]*node),
		nodeByIP:    make(map[string]*node),
	}
}

// lookupLocked returns the entry for an address as a flow writes it, or
// nil for an address in the cluster that nothing known owns. The caller
// holds the read lock and must not keep the entry past it. It allocates
// nothing.
func (x *index) lookupLocked(s string) *entry {
	if v, isV4 := parseIPv4(s); isV4 {
		return x.lookup4Locked(v)
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return &worldEntry
	}
	a = a.Unmap().WithZone("")
	if a.Is4() {
		return x.lookup4Locked(v4Key(a))
	}
	if i := x.v6.find(a.As16()); i >= 0 {
		return &x.entries[i]
	}
	if x.inPodRangeLocked(a) {
		return nil
	}
	return &worldEntry
}

func (x *index) lookup4Locked(v uint32) *entry {
	if i := x.v4.find(v); i >= 0 {
		return &x.entries[i]
	}
	// The first range that starts after v; v can only be in the one before.
	rs := x.podRanges4
	lo, hi := 0, len(rs)
	for lo < hi {
		m := int(uint(lo+hi) >> 1)
		if rs[m].lo <= v {
			lo = m + 1
		} else {
			hi = m
		}
	}
	if lo > 0 && v <= rs[lo-1].hi {
		return nil
	}
	return &worldEntry
}

func v4Key(a netip.Addr) uint32 {
	b := a.As4()
	return uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
}

// parseIPv4 parses a dotted-quad IPv4 address as netip.ParseAddr accepts
// it (four decimal fields of at most 255, no leading zeros); other input,
// IPv6 included, is not ok. It reads each field's one to three digits
// straight, with no per-character state.
func parseIPv4(s string) (uint32, bool) {
	if len(s) < 7 || len(s) > 15 {
		return 0, false
	}
	var v uint32
	i := 0
	for f := 0; f < 4; f++ {
		if f > 0 {
			if i >= len(s) || s[i] != '.' {
				return 0, false
			}
			i++
		}
		if i >= len(s) {
			return 0, false
		}
		d := s[i] - '0'
		if d > 9 {
			return 0, false
		}
		n := uint32(d)
		i++
		// A field that starts with 0 is that 0 alone: the next character
		// must be a dot or the end, which the next field or the final
		// check sees.
		if d != 0 {
			if i < len(s) {
				if d := s[i] - '0'; d <= 9 {
					n = n*10 + uint32(d)
					i++
					if i < len(s) {
						if d := s[i] - '0'; d <= 9 {
							n = n*10 + uint32(d)
							i++
						}
					}
				}
			}
			if n > 255 {
				return 0, false
			}
		}
		v = v<<8 | n
	}
	return v, i == len(s)
}

// canonicalIP returns the address as flows write it, or "" when s is not
// an address.
func canonicalIP(s string) string {
	a, err := netip.ParseAddr(s)
	if err != nil {
		return ""
	}
	return a.Unmap().WithZone("").String()
}

// refreshLocked rebuilds the entry of one address from the pods, nodes,
// services and slices that claim it. The caller holds the write lock.
func (x *index) refreshLocked(addr string) {
	var e entry
	if pods := x.podsByIP[addr]; len(pods) > 0 {
		p := pods[len(pods)-1]
		e.endpoint, e.pod = true, true
		e.namespace, e.podName, e.labels = p.namespace, p.name, p.labels
		e.workloadKind, e.workloadName = p.workloadKind, p.workloadName
	} else if n := x.nodeByIP[addr]; n != nil {
		e.endpoint = true
		if n.local {
			e.labels, e.identity = labelsHost, identityHost
		} else {
			e.labels, e.identity = labelsRemoteNode, identityRemoteNode
		}
	}
	if s, ok := x.clusterIPs[addr]; ok {
		e.hasService, e.svcNamespace, e.svcName = true, s.namespace, s.name
	} else if claims := x.sliceAddrs[addr]; len(claims) > 0 {
		s := claims[len(claims)-1].svc
		e.hasService, e.svcNamespace, e.svcName = true, s.namespace, s.name
	}
	a, err := netip.ParseAddr(addr)
	if err != nil {
		return // never: the index's addresses are canonical
	}
	if !e.endpoint && !e.hasService {
		var i int32
		if a.Is4() {
			i = x.v4.remove(v4Key(a))
		} else {
			i = x.v6.remove(a.As16())
		}
		if i >= 0 {
			x.entries[i] = entry{}
			x.free = append(x.free, i)
		}
		return
	}
	var i int32
	if a.Is4() {
		i = x.v4.find(v4Key(a))
	} else {
		i = x.v6.find(a.As16())
	}
	if i >= 0 {
		x.entries[i] = e
		return
	}
	if n := len(x.free); n > 0 {
		i = x.free[n-1]
		x.free = x.free[:n-1]
		x.entries[i] = e
	} else {
		i = int32(len(x.entries))
		x.entries = append(x.entries, e)
	}
	if a.Is4() {
		x.v4.put(v4Key(a), i)
	} else {
		x.v6.put(a.As16(), i)
	}
}

// podLabels returns a pod's labels as Hubble writes them: k8s:key=value for
// each pod label, plus the namespace, service account and cluster labels
// Cilium adds, sorted.
func podLabels(p *corev1.Pod, cluster string) []string {
	out := make([]string, 0, len(p.Labels)+3)
	for k, v := range p.Labels {
		out = append(out, "k8s:"+k+"="+v)
	}
	out = append(out, "k8s:io.kubernetes.pod.namespace="+p.Namespace)
	if sa := p.Spec.ServiceAccountName; sa != "" {
		out = append(out, "k8s:io.cilium.k8s.policy.serviceaccount="+sa)
	}
	if cluster != "" {
		out = append(out, "k8s:io.cilium.k8s.policy.cluster="+cluster)
	}
	sort.Strings(out)
	return out
}

// controllerOf returns the controller owner reference of an object.
func controllerOf(refs []metav1.OwnerReference) (owner, bool) {
	for _, r := range refs {
		if r.Controller != nil && *r.Controller {
			return owner{kind: r.Kind, name: r.Name}, true
		}
	}
	if len(refs) > 0 {
		return owner{kind: refs[0].Kind, name: refs[0].Name}, true
	}
	return owner{}, false
}

// podMatches reports whether a pod may claim its addresses: it has them,
// is not in the host's network namespace (its address is the node's) and
// has not terminated.
func podMatches(p *corev1.Pod) bool {
	if p.Spec.HostNetwork {
		return false
	}
	switch p.Status.Phase {
	case corev1.PodSucceeded, corev1.PodFailed:
		return false
	}
	return true
}

func podIPs(p *corev1.Pod) []string {
	var ips []string
	add := func(s string) {
		if c := canonicalIP(s); c != "" && !slices.Contains(ips, c) {
			ips = append(ips, c)
		}
	}
	add(p.Status.PodIP)
	for _, ip := range p.Status.PodIPs {
		add(ip.IP)
	}
	return ips
}

// resolves reports whether an owner of this kind is resolved further: a
// ReplicaSet to its Deployment, a Job to its CronJob.
func resolves(kind string) bool { return kind == "ReplicaSet" || kind == "Job" }

// resolveLocked sets a pod's workload from its owner reference: a
// ReplicaSet's Deployment, a Job's CronJob, or the owner itself.
func (x *index) resolveLocked(p *pod) {
	p.workloadKind, p.workloadName = p.ownerKind, p.ownerName
	if resolves(p.ownerKind) {
		o, ok := x.owners[ownerKey{p.ownerKind, p.namespace, p.ownerName}]
		if ok && (o.kind == "Deployment" || o.kind == "CronJob") {
			p.workloadKind, p.workloadName = o.kind, o.name
		}
	}
}

// setPod adds or updates a pod.
func (x *index) setPod(p *corev1.Pod) {
	var e *pod
	if podMatches(p) {
		if ips := podIPs(p); len(ips) > 0 {
			e = &pod{uid: p.UID, namespace: p.Namespace, name: p.Name, labels: podLabels(p, x.cluster), ips: ips}
			if o, ok := controllerOf(p.OwnerReferences); ok {
				e.ownerKind, e.ownerName = o.kind, o.name
			}
		}
	}
	x.mu.Lock()
	defer x.mu.Unlock()
	x.dropPodLocked(p.UID)
	if e == nil {
		return
	}
	x.resolveLocked(e)
	x.podsByID[e.uid] = e
	if resolves(e.ownerKind) {
		k := ownerKey{e.ownerKind, e.namespace, e.ownerName}
		m := x.podsByOwner[k]
		if m == nil {
			m = make(map[types.UID]*pod)
			x.podsByOwner[k] = m
		}
		m[e.uid] = e
	}
	for _, ip := range e.ips {
		x.podsByIP[ip] = append(x.podsByIP[ip], e)
		x.refreshLocked(ip)
	}
}

// deletePod removes a pod by its UID.
func (x *index) deletePod(uid types.UID) {
	x.mu.Lock()
	defer x.mu.Unlock()
	x.dropPodLocked(uid)
}

func (x *index) dropPodLocked(uid types.UID) {
	old := x.podsByID[uid]
	if old == nil {
		return
	}
	delete(x.podsByID, uid)
	if resolves(old.ownerKind) {
		k := ownerKey{old.ownerKind, old.namespace, old.ownerName}
		if m := x.podsByOwner[k]; m != nil {
			delete(m, uid)
			if len(m) == 0 {
				delete(x.podsByOwner, k)
			}
		}
	}
	for _, ip := range old.ips {
		list := x.podsByIP[ip]
		kept := make([]*pod, 0, len(list))
		for _, q := range list {
			if q != old {
				kept = append(kept, q)
			}
		}
		if len(kept) == 0 {
			delete(x.podsByIP, ip)
		} else {
			x.podsByIP[ip] = kept
		}
		x.refreshLocked(ip)
	}
}

// serviceIPs returns a Service's cluster addresses, canonical.
func serviceIPs(s *corev1.Service) []string {
	var out []string
	for _, ip := range append([]string{s.Spec.ClusterIP}, s.Spec.ClusterIPs...) {
		if c := canonicalIP(ip); c != "" && !slices.Contains(out, c) {
			out = append(out, c)
		}
	}
	return out
}

// setService adds or updates a Service's cluster addresses.
func (x *index) setService(s *corev1.Service, old *corev1.Service) {
	ips := serviceIPs(s)
	x.mu.Lock()
	defer x.mu.Unlock()
	if old != nil {
		x.dropServiceLocked(old)
	}
	svc := service{namespace: s.Namespace, name: s.Name}
	for _, ip := range ips {
		x.clusterIPs[ip] = svc
		x.refreshLocked(ip)
	}
}

func (x *index) deleteService(s *corev1.Service) {
	x.mu.Lock()
	defer x.mu.Unlock()
	x.dropServiceLocked(s)
}

func (x *index) dropServiceLocked(s *corev1.Service) {
	for _, ip := range serviceIPs(s) {
		if cur, ok := x.clusterIPs[ip]; ok && cur.namespace == s.Namespace && cur.name == s.Name {
			delete(x.clusterIPs, ip)
			x.refreshLocked(ip)
		}
	}
}

// setSlice adds or updates an EndpointSlice: its addresses back the
// Service named by its kubernetes.io/service-name label.
func (x *index) setSlice(s *discoveryv1.EndpointSlice) {
	key := nsName{s.Namespace, s.Name}
	name := s.Labels[discoveryv1.LabelServiceName]
	var addrs []string
	if name != "" {
		for _, ep := range s.Endpoints {
			for _, a := range ep.Addresses {
				if c := canonicalIP(a); c != "" && !slices.Contains(addrs, c) {
					addrs = append(addrs, c)
				}
			}
		}
	}
	x.mu.Lock()
	defer x.mu.Unlock()
	x.dropSliceLocked(key)
	if len(addrs) == 0 {
		return
	}
	svc := service{namespace: s.Namespace, name: name}
	x.sliceByKey[key] = sliceEntry{svc: svc, addrs: addrs}
	for _, a := range addrs {
		x.sliceAddrs[a] = append(x.sliceAddrs[a], sliceClaim{slice: key, svc: svc})
		x.refreshLocked(a)
	}
}

func (x *index) deleteSlice(namespace, name string) {
	x.mu.Lock()
	defer x.mu.Unlock()
	x.dropSliceLocked(nsName{namespace, name})
}

func (x *index) dropSliceLocked(key nsName) {
	old, ok := x.sliceByKey[key]
	if !ok {
		return
	}
	delete(x.sliceByKey, key)
	for _, a := range old.addrs {
		list := x.sliceAddrs[a]
		kept := make([]sliceClaim, 0, len(list))
		for _, c := range list {
			if c.slice != key {
				kept = append(kept, c)
			}
		}
		if len(kept) == 0 {
			delete(x.sliceAddrs, a)
		} else {
			x.sliceAddrs[a] = kept
		}
		x.refreshLocked(a)
	}
}

// setOwner records the controller of a ReplicaSet or Job (kind is the
// object's own kind) and re-resolves the workload of the pods it owns.
func (x *index) setOwner(kind, namespace, name string, refs []metav1.OwnerReference) {
	o, ok := controllerOf(refs)
	k := ownerKey{kind, namespace, name}
	x.mu.Lock()
	defer x.mu.Unlock()
	if cur, had := x.owners[k]; had == ok && cur == o {
		return // a resync or a status update: nothing a flow shows changed
	}
	if ok {
		x.owners[k] = o
	} else {
		delete(x.owners, k)
	}
	x.reresolveLocked(k)
}

func (x *index) deleteOwner(kind, namespace, name string) {
	k := ownerKey{kind, namespace, name}
	x.mu.Lock()
	defer x.mu.Unlock()
	if _, had := x.owners[k]; !had {
		return
	}
	delete(x.owners, k)
	x.reresolveLocked(k)
}

// reresolveLocked resolves again the workload of the pods that owner k
// owns, and rebuilds their entries.
func (x *index) reresolveLocked(k ownerKey) {
	for _, p := range x.podsByOwner[k] {
		x.resolveLocked(p)
		for _, ip := range p.ips {
			x.refreshLocked(ip)
		}
	}
}

// setNode adds or updates a node; local is flowbus's own node.
func (x *index) setNode(n *corev1.Node, local bool) {
	e := &node{name: n.Name, local: local}
	for k, v := range n.Labels {
		e.labels = append(e.labels, k+"="+v)
	}
	sort.Strings(e.labels)
	for _, a := range n.Status.Addresses {
		if a.Type != corev1.NodeInternalIP && a.Type != corev1.NodeExternalIP {
			continue
		}
		if c := canonicalIP(a.Address); c != "" && !slices.Contains(e.ips, c) {
			e.ips = append(e.ips, c)
		}
	}
	for _, c := range append([]string{n.Spec.PodCIDR}, n.Spec.PodCIDRs...) {
		if p, err := netip.ParsePrefix(c); err == nil {
			e.cidrs = append(e.cidrs, p.Masked())
		}
	}
	x.mu.Lock()
	defer x.mu.Unlock()
	x.dropNodeLocked(n.Name)
	x.nodes[n.Name] = e
	for _, ip := range e.ips {
		x.nodeByIP[ip] = e
		x.refreshLocked(ip)
	}
	if local {
		x.localLabels = e.labels
	}
	x.rebuildRangesLocked()
}

func (x *index) deleteNode(name string, local bool) {
	x.mu.Lock()
	defer x.mu.Unlock()
	x.dropNodeLocked(name)
	if local {
		x.localLabels = nil
	}
	x.rebuildRangesLocked()
}

func (x *index) dropNodeLocked(name string) {
	old := x.nodes[name]
	if old == nil {
		return
	}
	delete(x.nodes, name)
	for _, ip := range old.ips {
		if x.nodeByIP[ip] == old {
			delete(x.nodeByIP, ip)
			x.refreshLocked(ip)
		}
	}
}

// addrRange is the addresses from lo to hi, both included, of one family.
type addrRange struct{ lo, hi netip.Addr }

// v4Range is an addrRange of IPv4 addresses as numbers.
type v4Range struct{ lo, hi uint32 }

// lastAddr returns the last address of a masked prefix.
func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Addr().As16()
	off := 0
	if p.Addr().Is4() {
		off = 12
	}
	for i := off*8 + p.Bits(); i < 128; i++ {
		b[i/8] |= 0x80 >> (i % 8)
	}
	a := netip.AddrFrom16(b)
	if p.Addr().Is4() {
		a = a.Unmap()
	}
	return a
}

// rebuildRangesLocked merges every node's pod CIDRs into sorted, disjoint
// ranges for a binary search.
func (x *index) rebuildRangesLocked() {
	var rs []addrRange
	for _, n := range x.nodes {
		for _, p := range n.cidrs {
			rs = append(rs, addrRange{p.Addr(), lastAddr(p)})
		}
	}
	slices.SortFunc(rs, func(a, b addrRange) int { return a.lo.Compare(b.lo) })
	merged := rs[:0]
	for _, r := range rs {
		if n := len(merged); n > 0 {
			last := &merged[n-1]
			next := last.hi.Next()
			if last.hi.BitLen() == r.lo.BitLen() && (!next.IsValid() || r.lo.Compare(next) <= 0) {
				if r.hi.Compare(last.hi) > 0 {
					last.hi = r.hi
				}
				continue
			}
		}
		merged = append(merged, r)
	}
	x.podRanges = merged
	x.podRanges4 = x.podRanges4[:0]
	for _, r := range merged {
		if r.lo.Is4() {
			x.podRanges4 = append(x.podRanges4, v4Range{v4Key(r.lo), v4Key(r.hi)})
		}
	}
}

// inPodRangeLocked reports whether a is in some node's pod range.
func (x *index) inPodRangeLocked(a netip.Addr) bool {
	rs := x.podRanges
	// The first range that starts after a; a can only be in the one before.
	i := sort.Search(len(rs), func(i int) bool { return rs[i].lo.Compare(a) > 0 })
	return i > 0 && a.Compare(rs[i-1].hi) <= 0
}
