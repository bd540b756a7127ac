// Package kubernetes is the `kubernetes` transform: it gives kernel flows
// their workload identity from the Kubernetes API. Its keys:
// `flowbus components kubernetes`, or docs/components.md.
//
// Shared informers watch Pods, Services, EndpointSlices, Nodes, ReplicaSets
// and Jobs; each object is trimmed to the few fields the transform uses
// before it is stored, and the handlers keep an address index (index.go).
// For each side of a flow whose address is a pod's, the transform fills the
// Endpoint (namespace, pod_name, labels as Hubble writes them, workloads
// from owner references, cluster_name); a Service's ClusterIP or an
// EndpointSlice address gives source_service/destination_service; a node's
// address gets reserved:host (flowbus's own node) or reserved:remote-node;
// an address outside every node's pod range gets reserved:world. The local
// node's labels go to node_labels.
//
// Ownership: Process changes the batch's flows in place, reusing the nested
// Endpoint, Service and Workload messages a slot already has, and copies
// only immutable strings out of the index; it keeps nothing after it
// returns.
package kubernetes

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/informers"
	k8sclient "k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/flowbus/flowbus/pipeline"
	"github.com/flowbus/flowbus/pipeline/config"
)

func init() {
	pipeline.RegisterTransform(pipeline.Spec{
		Type:        "kubernetes",
		Summary:     "workload identity for kernel flows from the Kubernetes API: pods, workloads, services, nodes",
		Description: `Watches Pods, Services, EndpointSlices, Nodes, ReplicaSets and Jobs (list and watch; the ClusterRole shipped with the manifests grants get, list and watch on these six and nothing else) and fills, for each side of a flow whose address belongs to a pod, the Endpoint: namespace, pod_name, labels as Hubble writes them (k8s:app=web, k8s:io.kubernetes.pod.namespace=shop, the service account and cluster labels), workloads from owner references (Deployment through its ReplicaSet, StatefulSet, DaemonSet, Job, CronJob through its Job) and cluster_name. A Service's ClusterIP or an EndpointSlice address gives source_service/destination_service; a node's address gets reserved:host (flowbus's own node) or reserved:remote-node; an address outside every node's pod range gets reserved:world; the local node's labels go to node_labels. Pods in the host network never claim an address, terminated pods stop matching, and an address reused by a new pod maps to the new pod as soon as the API reports it. Until the caches have synced, flows are held back for at most sync_timeout from the start; after that they pass unenriched and are counted (flowbus_kubernetes_unenriched_total) until the sync completes. The transform is not ready until then; list and watch errors are logged, a missing permission with its verb and resource. client-go's own log lines (klog) go to flowbus's log tagged from=client-go, and the API server's warnings are logged.`,
		Example: `type: kubernetes
inputs: [flows]
cluster_name: prod-eu
sync_timeout: 30s
`,
	}, pipeline.DropsNone, New)
}

// Options are the transform's keys.
type Options struct {
	Kubeconfig  string          `yaml:"kubeconfig" doc:"a kubeconfig file; default: the in-cluster service account"`
	ClusterName string          `yaml:"cluster_name" default:"default" doc:"the cluster's name, for cluster_name and the k8s:io.cilium.k8s.policy.cluster label"`
	Resync      config.Duration `yaml:"resync" default:"0s" doc:"how often the informers replay their caches; 0: never"`
	Overwrite   bool            `yaml:"overwrite" default:"false" doc:"replace fields a source already set (by default they are kept)"`
	SyncTimeout config.Duration `yaml:"sync_timeout" default:"30s" doc:"the longest flows are held back at start while the caches sync"`
}

// Transform is the kubernetes transform.
type Transform struct {
	log       *slog.Logger
	opts      Options
	nodeName  string
	restCfg   *rest.Config
	client    k8sclient.Interface
	idx       *index
	factory   informers.SharedInformerFactory
	cancel    context.CancelFunc
	synced    chan struct{}
	isSynced  atomic.Bool
	deadline  time.Time
	started   time.Time
	syncTook  atomic.Int64
	stopOnce  sync.Once
	lastErr   atomic.Pointer[string]
	waited    bool
	now       func() time.Time
	unsynced  prometheus.Counter
	syncGauge prometheus.Gauge
	listErrs  *prometheus.CounterVec
}

// New builds the transform. The kubeconfig file, when given, is read here;
// the in-cluster configuration is read at Start.
func New(b *pipeline.Build, o *Options) (*Transform, error) {
	t := newTransform(b, o)
	if o.Kubeconfig != "" {
		path := o.Kubeconfig
		if b.Dir != "" && !strings.HasPrefix(path, "/") {
			path = b.Dir + "/" + path
		}
		cfg, err := clientcmd.BuildConfigFromFlags("", path)
		if err != nil {
			return nil, b.Errorf("kubeconfig", "kubeconfig %s: %v", path, err)
		}
		t.restCfg = cfg
	}
	return t, nil
}

func newTransform(b *pipeline.Build, o *Options) *Transform {
	log := b.Log
	if log == nil {
		log = slog.Default()
	}
	t := &Transform{
		log:      log,
		opts:     *o,
		nodeName: localNodeName(b.NodeName),
		idx:      newIndex(o.ClusterName),
		synced:   make(chan struct{}),
		now:      time.Now,
		unsynced: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "flowbus_kubernetes_unenriched_total",
			Help: "Flows passed on unenriched because the caches had not synced within sync_timeout.",
		}),
		syncGauge: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "flowbus_kubernetes_synced",
			Help: "1 once the informer caches have synced.",
		}),
		listErrs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "flowbus_kubernetes_watch_errors_total",
			Help: "List and watch errors, by resource.",
		}, []string{"resource"}),
	}
	if b.Metrics != nil {
		b.Metrics.MustRegister(t.unsynced, t.syncGauge, t.listErrs)
	}
	return t
}

// localNodeName strips a cluster prefix (cluster/node) from a node name.
func localNodeName(s string) string {
	if i := strings.LastIndexByte(s, '/'); i >= 0 {
		return s[i+1:]
	}
	return s
}

// Start connects to the API server and starts the informers; it does not
// wait for them to sync (Process holds flows back instead).
func (t *Transform) Start(ctx context.Context) error {
	routeKlog(t.log)
	if t.client == nil {
		cfg := t.restCfg
		if cfg == nil {
			c, err := rest.InClusterConfig()
			if err != nil {
				return fmt.Errorf("kubernetes: in-cluster configuration (set kubeconfig outside a cluster): %w", err)
			}
			cfg = c
		}
		cfg = rest.CopyConfig(cfg)
		cfg.UserAgent = "flowbus"
		cfg.ContentType = "application/vnd.kubernetes.protobuf"
		cfg.AcceptContentTypes = "application/vnd.kubernetes.protobuf,application/json"
		cfg.WarningHandlerWithContext = warningLogger{t.log}
		if cfg.QPS == 0 {
			cfg.QPS, cfg.Burst = 20, 40
		}
		cs, err := k8sclient.NewForConfig(cfg)
		if err != nil {
			return fmt.Errorf("kubernetes: client: %w", err)
		}
		t.client = cs
	}
	t.started = t.now()
	t.deadline = t.started.Add(t.opts.SyncTimeout.D())
	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	t.cancel = cancel
	t.factory = informers.NewSharedInformerFactory(t.client, t.opts.Resync.D())
	var syncs []cache.InformerSynced
	add := func(resource string, inf cache.SharedIndexInformer, trim cache.TransformFunc, h cache.ResourceEventHandlerFuncs) error {
		if err := inf.SetTransform(trim); err != nil {
			return fmt.Errorf("kubernetes: %s informer: %w", resource, err)
		}
		if err := inf.SetWatchErrorHandlerWithContext(func(_ context.Context, _ *cache.Reflector, err error) {
			t.watchError(resource, err)
		}); err != nil {
			return fmt.Errorf("kubernetes: %s informer: %w", resource, err)
		}
		reg, err := inf.AddEventHandler(h)
		if err != nil {
			return fmt.Errorf("kubernetes: %s informer: %w", resource, err)
		}
		syncs = append(syncs, reg.HasSynced)
		return nil
	}
	x := t.idx
	errs := []error{
		add("pods", t.factory.Core().V1().Pods().Informer(), trimPod, cache.ResourceEventHandlerFuncs{
			AddFunc:    func(o any) { x.setPod(o.(*corev1.Pod)) },
			UpdateFunc: func(_, o any) { x.setPod(o.(*corev1.Pod)) },
			DeleteFunc: func(o any) {
				if p, ok := tombstone(o).(*corev1.Pod); ok {
					x.deletePod(p.UID)
				}
			},
		}),
		add("services", t.factory.Core().V1().Services().Informer(), trimService, cache.ResourceEventHandlerFuncs{
			AddFunc:    func(o any) { x.setService(o.(*corev1.Service), nil) },
			UpdateFunc: func(old, o any) { x.setService(o.(*corev1.Service), old.(*corev1.Service)) },
			DeleteFunc: func(o any) {
				if s, ok := tombstone(o).(*corev1.Service); ok {
					x.deleteService(s)
				}
			},
		}),
		add("endpointslices", t.factory.Discovery().V1().EndpointSlices().Informer(), trimSlice, cache.ResourceEventHandlerFuncs{
			AddFunc:    func(o any) { x.setSlice(o.(*discoveryv1.EndpointSlice)) },
			UpdateFunc: func(_, o any) { x.setSlice(o.(*discoveryv1.EndpointSlice)) },
			DeleteFunc: func(o any) {
				if s, ok := tombstone(o).(*discoveryv1.EndpointSlice); ok {
					x.deleteSlice(s.Namespace, s.Name)
				}
			},
		}),
		add("nodes", t.factory.Core().V1().Nodes().Informer(), trimNode, cache.ResourceEventHandlerFuncs{
			AddFunc:    func(o any) { n := o.(*corev1.Node); x.setNode(n, n.Name == t.nodeName) },
			UpdateFunc: func(_, o any) { n := o.(*corev1.Node); x.setNode(n, n.Name == t.nodeName) },
			DeleteFunc: func(o any) {
				if n, ok := tombstone(o).(*corev1.Node); ok {
					x.deleteNode(n.Name, n.Name == t.nodeName)
				}
			},
		}),
		add("replicasets.apps", t.factory.Apps().V1().ReplicaSets().Informer(), trimMeta(func() *appsv1.ReplicaSet { return new(appsv1.ReplicaSet) }), ownerHandler(x, "ReplicaSet")),
		add("jobs.batch", t.factory.Batch().V1().Jobs().Informer(), trimMeta(func() *batchv1.Job { return new(batchv1.Job) }), ownerHandler(x, "Job")),
	}
	if err := errors.Join(errs...); err != nil {
		cancel()
		return err
	}
	t.factory.Start(runCtx.Done())
	go t.probeUntilSynced(runCtx)
	go func() {
		if !cache.WaitForCacheSync(runCtx.Done(), syncs...) {
			return
		}
		took := t.now().Sub(t.started)
		t.syncTook.Store(int64(took))
		t.isSynced.Store(true)
		t.syncGauge.Set(1)
		close(t.synced)
		t.log.Info("kubernetes: caches synced", "took", took.Round(time.Millisecond))
	}()
	return nil
}

// probeUntilSynced asks the API server for its version each time the sync
// has taken another sync_timeout (at least a second apart), and logs what
// fails: informers retry a refused connection quietly, so an unreachable
// server would otherwise go unreported.
func (t *Transform) probeUntilSynced(ctx context.Context) {
	every := max(t.opts.SyncTimeout.D(), time.Second)
	timer := time.NewTimer(every)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.synced:
			return
		case <-timer.C:
		}
		if _, err := t.client.Discovery().ServerVersion(); err != nil {
			t.watchError("the API server", err)
		} else {
			t.log.Warn("kubernetes: the API server answers, but the caches have not synced yet")
		}
		timer.Reset(every)
	}
}

// Stop stops the informers.
func (t *Transform) Stop(context.Context) error {
	t.stopOnce.Do(func() {
		if t.cancel != nil {
			t.cancel()
		}
		if t.factory != nil {
			t.factory.Shutdown()
		}
	})
	return nil
}

// Ready reports an error until the caches have synced.
func (t *Transform) Ready() error {
	if t.isSynced.Load() {
		return nil
	}
	if p := t.lastErr.Load(); p != nil {
		return fmt.Errorf("kubernetes: caches not synced: %s", *p)
	}
	return errors.New("kubernetes: caches not synced")
}

// SyncDuration returns how long the caches took to sync, 0 before.
func (t *Transform) SyncDuration() time.Duration { return time.Duration(t.syncTook.Load()) }

var forbiddenRE = regexp.MustCompile(`cannot (\w+) resource "([^"]+)"(?: in API group "([^"]*)")?`)

// watchError logs a list or watch error with what it means.
func (t *Transform) watchError(resource string, err error) {
	t.listErrs.WithLabelValues(resource).Inc()
	var msg string
	switch {
	case apierrors.IsForbidden(err):
		verb, res := "list/watch", resource
		if m := forbiddenRE.FindStringSubmatch(err.Error()); m != nil {
			verb, res = m[1], m[2]
			if m[3] != "" {
				res += "." + m[3]
			}
		}
		msg = fmt.Sprintf("missing RBAC permission: %s %s (grant it in the ClusterRole): %v", verb, res, err)
	case apierrors.IsUnauthorized(err):
		msg = fmt.Sprintf("unauthorized while watching %s (token expired or invalid): %v", resource, err)
	case resource == "the API server":
		msg = fmt.Sprintf("cannot reach the API server: %v", err)
	default:
		msg = fmt.Sprintf("watching %s: %v", resource, err)
	}
	t.lastErr.Store(&msg)
	t.log.Error("kubernetes: " + msg)
}

// warningLogger logs the warnings the API server sends with its answers
// (deprecations, ignored fields).
type warningLogger struct{ log *slog.Logger }

func (w warningLogger) HandleWarningHeaderWithContext(_ context.Context, code int, agent, text string) {
	if code != 299 || text == "" {
		return
	}
	w.log.Warn("kubernetes: API server warning: "+text, "agent", agent)
}

// tombstone unwraps a deletion whose final state the informer missed.
func tombstone(o any) any {
	if d, ok := o.(cache.DeletedFinalStateUnknown); ok {
		return d.Obj
	}
	return o
}

// ownerHandler keeps the index's owners of one kind (ReplicaSet or Job).
func ownerHandler(x *index, kind string) cache.ResourceEventHandlerFuncs {
	set := func(o any) {
		if m, ok := o.(metav1.Object); ok {
			x.setOwner(kind, m.GetNamespace(), m.GetName(), m.GetOwnerReferences())
		}
	}
	return cache.ResourceEventHandlerFuncs{
		AddFunc:    set,
		UpdateFunc: func(_, o any) { set(o) },
		DeleteFunc: func(o any) {
			if m, ok := tombstone(o).(metav1.Object); ok {
				x.deleteOwner(kind, m.GetNamespace(), m.GetName())
			}
		},
	}
}

// trimmedMeta keeps the metadata fields the informers and the index use.
func trimmedMeta(m *metav1.ObjectMeta, labels bool) metav1.ObjectMeta {
	out := metav1.ObjectMeta{
		Name: m.Name, Namespace: m.Namespace, UID: m.UID,
		ResourceVersion: m.ResourceVersion, OwnerReferences: m.OwnerReferences,
		DeletionTimestamp: m.DeletionTimestamp,
	}
	if labels {
		out.Labels = m.Labels
	}
	return out
}

func trimPod(o any) (any, error) {
	p, ok := o.(*corev1.Pod)
	if !ok {
		return o, nil
	}
	return &corev1.Pod{
		ObjectMeta: trimmedMeta(&p.ObjectMeta, true),
		Spec: corev1.PodSpec{
			NodeName: p.Spec.NodeName, HostNetwork: p.Spec.HostNetwork,
			ServiceAccountName: p.Spec.ServiceAccountName,
		},
		Status: corev1.PodStatus{Phase: p.Status.Phase, PodIP: p.Status.PodIP, PodIPs: p.Status.PodIPs},
	}, nil
}

func trimService(o any) (any, error) {
	s, ok := o.(*corev1.Service)
	if !ok {
		return o, nil
	}
	return &corev1.Service{
		ObjectMeta: trimmedMeta(&s.ObjectMeta, false),
		Spec:       corev1.ServiceSpec{ClusterIP: s.Spec.ClusterIP, ClusterIPs: s.Spec.ClusterIPs},
	}, nil
}

func trimSlice(o any) (any, error) {
	s, ok := o.(*discoveryv1.EndpointSlice)
	if !ok {
		return o, nil
	}
	out := &discoveryv1.EndpointSlice{ObjectMeta: trimmedMeta(&s.ObjectMeta, false), AddressType: s.AddressType}
	if name, ok := s.Labels[discoveryv1.LabelServiceName]; ok {
		out.Labels = map[string]string{discoveryv1.LabelServiceName: name}
	}
	out.Endpoints = make([]discoveryv1.Endpoint, len(s.Endpoints))
	for i, ep := range s.Endpoints {
		out.Endpoints[i] = discoveryv1.Endpoint{Addresses: ep.Addresses}
	}
	return out, nil
}

func trimNode(o any) (any, error) {
	n, ok := o.(*corev1.Node)
	if !ok {
		return o, nil
	}
	return &corev1.Node{
		ObjectMeta: trimmedMeta(&n.ObjectMeta, true),
		Spec:       corev1.NodeSpec{PodCIDR: n.Spec.PodCIDR, PodCIDRs: n.Spec.PodCIDRs},
		Status:     corev1.NodeStatus{Addresses: n.Status.Addresses},
	}, nil
}

type metaObject interface {
	metav1.Object
	*appsv1.ReplicaSet | *batchv1.Job
}

// trimMeta keeps only the metadata of a ReplicaSet or Job.
func trimMeta[T metaObject](mk func() T) cache.TransformFunc {
	return func(o any) (any, error) {
		in, ok := o.(T)
		if !ok {
			return o, nil
		}
		out := mk()
		out.SetName(in.GetName())
		out.SetNamespace(in.GetNamespace())
		out.SetUID(in.GetUID())
		out.SetResourceVersion(in.GetResourceVersion())
		out.SetOwnerReferences(in.GetOwnerReferences())
		return out, nil
	}
}
