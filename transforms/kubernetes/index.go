package kubernetes

import (
	"net/netip"
	"sort"
	"sync"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

// pod is what the index keeps of a pod: everything a flow's endpoint needs,
// with its labels already in Hubble's form and sorted.
type pod struct {
	uid                  types.UID
	namespace, name      string
	labels               []string
	ownerKind, ownerName string
	ips                  []string
}

// service names a Service.
type service struct {
	namespace, name string
}

// owner is a controller owner reference of a ReplicaSet or Job.
type owner struct {
	kind, name string
}

// nsName keys namespaced objects without building a string.
type nsName struct {
	namespace, name string
}

// node is what the index keeps of a node.
type node struct {
	name   string
	labels []string // key=value, sorted
	ips    []string
	cidrs  []netip.Prefix
}

// index maps addresses to pods, services and nodes. The informers' handlers
// write it; Process reads it under one read lock per batch. Everything it
// hands out (label slices, strings) is immutable once stored: an update
// replaces the entry instead of changing it.
type index struct {
	mu sync.RWMutex

	cluster string

	// podsByIP holds, per address, the pods that claim it in the order the
	// claims arrived; the last one is the current owner. Two live pods
	// claim one address only briefly (a reused address seen before the
	// old pod's deletion).
	podsByIP map[string][]*pod
	podsByID map[types.UID]*pod

	clusterIPs  map[string]service
	sliceAddrs  map[string][]sliceClaim
	sliceByKey  map[nsName]sliceEntry
	owners      map[nsName]owner // ReplicaSet and Job → their controller
	nodes       map[string]*node
	nodeByIP    map[string]*node
	podCIDRs    []netip.Prefix
	localLabels []string
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
		cluster:    cluster,
		podsByIP:   make(map[string][]*pod),
		podsByID:   make(map[types.UID]*pod),
		clusterIPs: make(map[string]service),
		sliceAddrs: make(map[string][]sliceClaim),
		sliceByKey: make(map[nsName]sliceEntry),
		owners:     make(map[nsName]owner),
		nodes:      make(map[string]*node),
		nodeByIP:   make(map[string]*node),
	}
}

// canonicalIP returns the address as flows write it, or "" when s is not
// an address.
func canonicalIP(s string) string {
	a, err := netip.ParseAddr(s)
	if err != nil {
		return ""
	}
	return a.Unmap().String()
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
		if c := canonicalIP(s); c != "" {
			for _, have := range ips {
				if have == c {
					return
				}
			}
			ips = append(ips, c)
		}
	}
	add(p.Status.PodIP)
	for _, ip := range p.Status.PodIPs {
		add(ip.IP)
	}
	return ips
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
	x.podsByID[e.uid] = e
	for _, ip := range e.ips {
		x.podsByIP[ip] = append(x.podsByIP[ip], e)
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
	}
}

// setService adds or updates a Service's cluster addresses.
func (x *index) setService(s *corev1.Service, old *corev1.Service) {
	x.mu.Lock()
	defer x.mu.Unlock()
	if old != nil {
		x.dropServiceLocked(old)
	}
	svc := service{namespace: s.Namespace, name: s.Name}
	for _, ip := range append([]string{s.Spec.ClusterIP}, s.Spec.ClusterIPs...) {
		if c := canonicalIP(ip); c != "" {
			x.clusterIPs[c] = svc
		}
	}
}

func (x *index) deleteService(s *corev1.Service) {
	x.mu.Lock()
	defer x.mu.Unlock()
	x.dropServiceLocked(s)
}

func (x *index) dropServiceLocked(s *corev1.Service) {
	for _, ip := range append([]string{s.Spec.ClusterIP}, s.Spec.ClusterIPs...) {
		c := canonicalIP(ip)
		if cur, ok := x.clusterIPs[c]; ok && cur.namespace == s.Namespace && cur.name == s.Name {
			delete(x.clusterIPs, c)
		}
	}
}

// setSlice adds or updates an EndpointSlice: its ready addresses back the
// Service named by its kubernetes.io/service-name label.
func (x *index) setSlice(s *discoveryv1.EndpointSlice) {
	key := nsName{s.Namespace, s.Name}
	name := s.Labels[discoveryv1.LabelServiceName]
	var addrs []string
	if name != "" {
		for _, ep := range s.Endpoints {
			for _, a := range ep.Addresses {
				if c := canonicalIP(a); c != "" {
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
	}
}

// setOwner records the controller of a ReplicaSet or Job (kind is the
// object's own kind, for the key).
func (x *index) setOwner(namespace, name string, refs []metav1.OwnerReference) {
	o, ok := controllerOf(refs)
	x.mu.Lock()
	defer x.mu.Unlock()
	if ok {
		x.owners[nsName{namespace, name}] = o
	} else {
		delete(x.owners, nsName{namespace, name})
	}
}

func (x *index) deleteOwner(namespace, name string) {
	x.mu.Lock()
	defer x.mu.Unlock()
	delete(x.owners, nsName{namespace, name})
}

// setNode adds or updates a node; local is flowbus's own node.
func (x *index) setNode(n *corev1.Node, local bool) {
	e := &node{name: n.Name}
	for k, v := range n.Labels {
		e.labels = append(e.labels, k+"="+v)
	}
	sort.Strings(e.labels)
	for _, a := range n.Status.Addresses {
		if a.Type != corev1.NodeInternalIP && a.Type != corev1.NodeExternalIP {
			continue
		}
		if c := canonicalIP(a.Address); c != "" {
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
	}
	if local {
		x.localLabels = e.labels
	}
	x.rebuildCIDRsLocked()
}

func (x *index) deleteNode(name string, local bool) {
	x.mu.Lock()
	defer x.mu.Unlock()
	x.dropNodeLocked(name)
	if local {
		x.localLabels = nil
	}
	x.rebuildCIDRsLocked()
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
		}
	}
}

func (x *index) rebuildCIDRsLocked() {
	var all []netip.Prefix
	for _, n := range x.nodes {
		all = append(all, n.cidrs...)
	}
	x.podCIDRs = all
}

// inPodCIDR reports whether s is an address of some node's pod range: an
// address there that no pod claims is unknown, not the outside world.
func (x *index) inPodCIDRLocked(s string) bool {
	if len(x.podCIDRs) == 0 {
		return false
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return false
	}
	a = a.Unmap()
	for _, p := range x.podCIDRs {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// workloadOf resolves a pod's owner to its workload: a ReplicaSet to the
// Deployment that controls it, a Job to its CronJob.
func (x *index) workloadOfLocked(p *pod) (kind, name string) {
	kind, name = p.ownerKind, p.ownerName
	if kind == "ReplicaSet" || kind == "Job" {
		if o, ok := x.owners[nsName{p.namespace, name}]; ok && (o.kind == "Deployment" || o.kind == "CronJob") {
			return o.kind, o.name
		}
	}
	return kind, name
}
