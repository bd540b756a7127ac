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
	for start := 0; start < len(b.Events); start += lookAhead {
		t.enrichLocked(b.Events[start:min(start+lookAhead, len(b.Events))])
	}
	x.mu.RUnlock()
}

// lookAhead is how many flows enrichLocked resolves before it fills them.
const lookAhead = 64

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

// enrichLocked fills the flows of at most lookAhead events; the caller
// holds the index's read lock. It first resolves every address and then
// fills the flows: with 50,000 pods an address's table slot and entry are
// rarely in the CPU's cache, and a loop that only resolves lets the CPU
// wait for several of those reads at once instead of one after another.
func (t *Transform) enrichLocked(events []pipeline.Event) {
	x := t.idx
	var src, dst [lookAhead]*entry
	for i := range events {
		f := events[i].Flow
		if f == nil || f.IP == nil {
			continue
		}
		if s := f.IP.Source; s != "" {
			src[i] = x.lookupLocked(s)
		}
		if d := f.IP.Destination; d != "" {
			dst[i] = x.lookupLocked(d)
		}
	}
	nodeLabels := len(x.localLabels) > 0
	for i := range events {
		f := events[i].Flow
		if f == nil || f.IP == nil {
			continue
		}
		if e := src[i]; e != nil {
			f.Source = t.applyEndpoint(f.Source, e)
			f.SourceService = t.applyService(f.SourceService, e)
		}
		if e := dst[i]; e != nil {
			f.Destination = t.applyEndpoint(f.Destination, e)
			f.DestinationService = t.applyService(f.DestinationService, e)
		}
		if nodeLabels && (t.opts.Overwrite || len(f.NodeLabels) == 0) {
			f.NodeLabels = append(f.NodeLabels[:0], x.localLabels...)
		}
	}
}

// applyEndpoint fills ep (allocated when nil) from an address's entry and
// returns it; it returns ep unchanged when the entry has no endpoint.
func (t *Transform) applyEndpoint(ep *flowpb.Endpoint, e *entry) *flowpb.Endpoint {
	if !e.endpoint {
		return ep
	}
	if ep == nil {
		ep = new(flowpb.Endpoint)
	}
	ow := t.opts.Overwrite
	if ow || len(ep.Labels) == 0 {
		ep.Labels = append(ep.Labels[:0], e.labels...)
	}
	if e.pod {
		if ow || ep.Namespace == "" {
			ep.Namespace = e.namespace
		}
		if ow || ep.PodName == "" {
			ep.PodName = e.podName
		}
		if ow || ep.ClusterName == "" {
			ep.ClusterName = t.idx.cluster
		}
		if ow || len(ep.Workloads) == 0 {
			setWorkload(ep, e.workloadKind, e.workloadName)
		}
		return ep
	}
	if ow || ep.Identity == 0 {
		ep.Identity = e.identity
	}
	if (ow || ep.ClusterName == "") && e.identity != identityWorld {
		ep.ClusterName = t.idx.cluster
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

// applyService fills svc (allocated when nil) with the Service of an
// address's entry; svc is returned unchanged when the address is no
// service's, or when it is set and overwrite is off.
func (t *Transform) applyService(svc *flowpb.Service, e *entry) *flowpb.Service {
	if !e.hasService {
		return svc
	}
	if svc != nil && svc.Name != "" && !t.opts.Overwrite {
		return svc
	}
	if svc == nil {
		svc = new(flowpb.Service)
	}
	svc.Name, svc.Namespace = e.svcName, e.svcNamespace
	return svc
}
