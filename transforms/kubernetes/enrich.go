package kubernetes

import (
	"time"

	flowpb "github.com/flowbus/flowbus/flow"
	"github.com/flowbus/flowbus/pipeline"
)

// Reserved identities, as Cilium numbers them.
const (
	identityHost       = 1
	identityWorld      = 2
	identityRemoteNode = 6
)

var (
	labelsHost       = []string{"reserved:host"}
	labelsWorld      = []string{"reserved:world"}
	labelsRemoteNode = []string{"reserved:remote-node"}
)

// Process enriches the flows of b in place. Until the caches have synced it
// waits, at most until sync_timeout after Start; flows it then passes
// unenriched are counted.
func (t *Transform) Process(b *pipeline.Batch) {
	if !t.isSynced.Load() && !t.waitSynced() {
		n := 0
		for i := range b.Events {
			if b.Events[i].Flow != nil {
				n++
			}
		}
		t.unsynced.Add(float64(n))
		return
	}
	x := t.idx
	x.mu.RLock()
	for i := range b.Events {
		if f := b.Events[i].Flow; f != nil {
			t.enrichLocked(f)
		}
	}
	x.mu.RUnlock()
}

// waitSynced blocks until the caches sync or the start deadline passes and
// reports whether they synced.
func (t *Transform) waitSynced() bool {
	if t.deadline.IsZero() {
		return false // not started
	}
	d := t.deadline.Sub(t.now())
	if d <= 0 {
		return t.isSynced.Load()
	}
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-t.synced:
		return true
	case <-timer.C:
		if !t.waited {
			t.waited = true
			t.log.Warn("kubernetes: caches not synced within sync_timeout; passing flows unenriched until they are", "sync_timeout", t.opts.SyncTimeout.D())
		}
		return t.isSynced.Load()
	}
}

// enrichLocked fills one flow; the caller holds the index's read lock.
func (t *Transform) enrichLocked(f *flowpb.Flow) {
	ip := f.GetIP()
	if ip == nil {
		return
	}
	x := t.idx
	if ip.Source != "" {
		f.Source = t.endpointLocked(f.Source, ip.Source)
		f.SourceService = t.serviceLocked(f.SourceService, ip.Source)
	}
	if ip.Destination != "" {
		f.Destination = t.endpointLocked(f.Destination, ip.Destination)
		f.DestinationService = t.serviceLocked(f.DestinationService, ip.Destination)
	}
	if len(x.localLabels) > 0 && (t.opts.Overwrite || len(f.NodeLabels) == 0) {
		f.NodeLabels = append(f.NodeLabels[:0], x.localLabels...)
	}
}

// endpointLocked fills ep (allocated when nil) for address addr and returns
// it; it returns ep unchanged when the address is unknown.
func (t *Transform) endpointLocked(ep *flowpb.Endpoint, addr string) *flowpb.Endpoint {
	x := t.idx
	ow := t.opts.Overwrite
	if pods := x.podsByIP[addr]; len(pods) > 0 {
		p := pods[len(pods)-1]
		if ep == nil {
			ep = new(flowpb.Endpoint)
		}
		if ow || ep.Namespace == "" {
			ep.Namespace = p.namespace
		}
		if ow || ep.PodName == "" {
			ep.PodName = p.name
		}
		if ow || ep.ClusterName == "" {
			ep.ClusterName = x.cluster
		}
		if ow || len(ep.Labels) == 0 {
			ep.Labels = append(ep.Labels[:0], p.labels...)
		}
		if ow || len(ep.Workloads) == 0 {
			kind, name := x.workloadOfLocked(p)
			setWorkload(ep, kind, name)
		}
		return ep
	}
	var labels []string
	var id uint32
	if n := x.nodeByIP[addr]; n != nil {
		if n.name == t.nodeName {
			labels, id = labelsHost, identityHost
		} else {
			labels, id = labelsRemoteNode, identityRemoteNode
		}
	} else if _, svc := x.clusterIPs[addr]; svc {
		return ep
	} else if _, backend := x.sliceAddrs[addr]; backend || x.inPodCIDRLocked(addr) {
		return ep // in the cluster, but no pod known for it (yet)
	} else {
		labels, id = labelsWorld, identityWorld
	}
	if ep == nil {
		ep = new(flowpb.Endpoint)
	}
	if ow || len(ep.Labels) == 0 {
		ep.Labels = append(ep.Labels[:0], labels...)
	}
	if ow || ep.Identity == 0 {
		ep.Identity = id
	}
	if ow || ep.ClusterName == "" {
		if id != identityWorld {
			ep.ClusterName = x.cluster
		}
	}
	return ep
}

// setWorkload makes kind/name the endpoint's only workload (none when kind
// is empty), reusing a Workload message the slot already has.
func setWorkload(ep *flowpb.Endpoint, kind, name string) {
	if kind == "" {
		ep.Workloads = ep.Workloads[:0]
		return
	}
	w := ep.Workloads[:cap(ep.Workloads)]
	if len(w) > 0 && w[0] != nil {
		w[0].Kind, w[0].Name = kind, name
		ep.Workloads = w[:1]
		return
	}
	ep.Workloads = append(ep.Workloads[:0], &flowpb.Workload{Kind: kind, Name: name})
}

// serviceLocked returns the Service an address belongs to (a ClusterIP
// first, then an EndpointSlice address), filling svc or a new one; svc is
// returned unchanged when the address is no service's, or when it is set
// and overwrite is off.
func (t *Transform) serviceLocked(svc *flowpb.Service, addr string) *flowpb.Service {
	x := t.idx
	s, ok := x.clusterIPs[addr]
	if !ok {
		claims := x.sliceAddrs[addr]
		if len(claims) == 0 {
			return svc
		}
		s = claims[len(claims)-1].svc
	}
	if svc != nil && svc.Name != "" && !t.opts.Overwrite {
		return svc
	}
	if svc == nil {
		svc = new(flowpb.Service)
	}
	svc.Name, svc.Namespace = s.name, s.namespace
	return svc
}
