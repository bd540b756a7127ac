package kubernetes

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"gopkg.in/yaml.v3"
	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

	flowpb "github.com/flowbus/flowbus/flow"
	"github.com/flowbus/flowbus/pipeline"
	"github.com/flowbus/flowbus/pipeline/config"
)

func ctrl(kind, name string) []metav1.OwnerReference {
	return []metav1.OwnerReference{{APIVersion: "v1", Kind: kind, Name: name, UID: types.UID(kind + name), Controller: new(true)}}
}

func mkPod(ns, name, ip string, labels map[string]string, owners []metav1.OwnerReference) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, UID: types.UID(ns + "/" + name), Labels: labels, OwnerReferences: owners},
		Spec:       corev1.PodSpec{NodeName: "node-a", ServiceAccountName: "default"},
		Status:     corev1.PodStatus{Phase: corev1.PodRunning, PodIP: ip, PodIPs: []corev1.PodIP{{IP: ip}}},
	}
}

func mkNode(name, ip, cidr string) *corev1.Node {
	return &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"kubernetes.io/hostname": name, "zone": "z1"}},
		Spec:       corev1.NodeSpec{PodCIDR: cidr, PodCIDRs: []string{cidr}},
		Status:     corev1.NodeStatus{Addresses: []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: ip}}},
	}
}

// startFake starts a transform on a fake clientset holding objs.
func startFake(t *testing.T, o Options, objs ...runtime.Object) (*Transform, *fake.Clientset) {
	t.Helper()
	cs := fake.NewClientset(objs...)
	return startWith(t, o, cs), cs
}

func startWith(t *testing.T, o Options, cs *fake.Clientset) *Transform {
	t.Helper()
	if o.SyncTimeout == 0 {
		o.SyncTimeout = config.Duration(10 * time.Second)
	}
	tr := newTransform(&pipeline.Build{Name: "k", Type: "kubernetes", NodeName: "node-a", Log: slog.New(slog.DiscardHandler)}, &o)
	tr.client = cs
	if err := tr.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = tr.Stop(context.Background()) })
	return tr
}

// process runs one flow from src to dst through the transform.
func process(tr *Transform, f *flowpb.Flow) *flowpb.Flow {
	b := pipeline.NewBatch()
	defer b.Release()
	e := b.Next()
	e.Flow = f
	tr.Process(b)
	e.Flow = nil
	return f
}

func flowOf(src, dst string) *flowpb.Flow {
	return &flowpb.Flow{IP: &flowpb.IP{Source: src, Destination: dst}}
}

// eventually polls cond until it holds (informer events arrive
// asynchronously).
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("never: %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func workloads(ep *flowpb.Endpoint) []string {
	var out []string
	for _, w := range ep.GetWorkloads() {
		out = append(out, w.Kind+"/"+w.Name)
	}
	return out
}

func TestEnrich(t *testing.T) {
	objs := []runtime.Object{
		mkNode("node-a", "192.168.0.1", "10.0.0.0/16"),
		mkNode("node-b", "192.168.0.2", "10.1.0.0/16"),
		&appsv1.ReplicaSet{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "cart-7d9f", OwnerReferences: ctrl("Deployment", "cart")}},
		&appsv1.ReplicaSet{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "bare-rs"}},
		&batchv1.Job{ObjectMeta: metav1.ObjectMeta{Namespace: "ops", Name: "backup-2900", OwnerReferences: ctrl("CronJob", "backup")}},
		&batchv1.Job{ObjectMeta: metav1.ObjectMeta{Namespace: "ops", Name: "once"}},
		mkPod("shop", "cart-7d9f-x1", "10.0.3.17", map[string]string{"app": "cart", "tier": "web"}, ctrl("ReplicaSet", "cart-7d9f")),
		mkPod("shop", "bare-rs-x", "10.0.3.18", nil, ctrl("ReplicaSet", "bare-rs")),
		mkPod("ops", "backup-2900-q", "10.0.3.19", nil, ctrl("Job", "backup-2900")),
		mkPod("ops", "once-q", "10.0.3.20", nil, ctrl("Job", "once")),
		mkPod("db", "pg-0", "10.1.0.5", map[string]string{"app": "pg"}, ctrl("StatefulSet", "pg")),
		mkPod("kube-system", "agent-abc", "10.1.0.6", nil, ctrl("DaemonSet", "agent")),
		mkPod("default", "lonely", "fd00::17", map[string]string{"odd/key.x": "", "a": "b=c"}, nil),
		&corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "payments", Name: "api"}, Spec: corev1.ServiceSpec{ClusterIP: "10.96.1.4", ClusterIPs: []string{"10.96.1.4"}}},
		&discoveryv1.EndpointSlice{
			ObjectMeta: metav1.ObjectMeta{Namespace: "db", Name: "pg-abc", Labels: map[string]string{discoveryv1.LabelServiceName: "pg"}},
			Endpoints:  []discoveryv1.Endpoint{{Addresses: []string{"10.1.0.5"}}},
		},
	}
	tr, _ := startFake(t, Options{ClusterName: "prod"}, objs...)
	eventually(t, "synced", func() bool { return tr.Ready() == nil })

	f := process(tr, flowOf("10.0.3.17", "10.96.1.4"))
	want := []string{"k8s:app=cart", "k8s:io.cilium.k8s.policy.cluster=prod", "k8s:io.cilium.k8s.policy.serviceaccount=default", "k8s:io.kubernetes.pod.namespace=shop", "k8s:tier=web"}
	if s := f.Source; s.Namespace != "shop" || s.PodName != "cart-7d9f-x1" || s.ClusterName != "prod" || !slices.Equal(s.Labels, want) {
		t.Errorf("source = %v", s)
	}
	if got := workloads(f.Source); !slices.Equal(got, []string{"Deployment/cart"}) {
		t.Errorf("source workloads = %v", got)
	}
	if d := f.DestinationService; d.GetName() != "api" || d.GetNamespace() != "payments" {
		t.Errorf("destination_service = %v", d)
	}
	if f.Destination != nil {
		t.Errorf("a ClusterIP has no endpoint: %v", f.Destination)
	}
	if !slices.Equal(f.NodeLabels, []string{"kubernetes.io/hostname=node-a", "zone=z1"}) {
		t.Errorf("node_labels = %v", f.NodeLabels)
	}

	tests := []struct {
		ip        string
		workloads []string
		labels    []string
		identity  uint32
		service   string
		unset     bool
	}{
		{ip: "10.0.3.18", workloads: []string{"ReplicaSet/bare-rs"}},
		{ip: "10.0.3.19", workloads: []string{"CronJob/backup"}},
		{ip: "10.0.3.20", workloads: []string{"Job/once"}},
		{ip: "10.1.0.5", workloads: []string{"StatefulSet/pg"}, service: "db/pg"},
		{ip: "10.1.0.6", workloads: []string{"DaemonSet/agent"}},
		{ip: "fd00::17", labels: []string{"k8s:a=b=c", "k8s:io.cilium.k8s.policy.cluster=prod", "k8s:io.cilium.k8s.policy.serviceaccount=default", "k8s:io.kubernetes.pod.namespace=default", "k8s:odd/key.x="}},
		{ip: "192.168.0.1", labels: []string{"reserved:host"}, identity: 1},
		{ip: "192.168.0.2", labels: []string{"reserved:remote-node"}, identity: 6},
		{ip: "8.8.8.8", labels: []string{"reserved:world"}, identity: 2},
		{ip: "10.0.9.9", unset: true}, // in a pod range, no pod known
		{ip: "not-an-ip", labels: []string{"reserved:world"}, identity: 2},
	}
	for _, tc := range tests {
		t.Run(tc.ip, func(t *testing.T) {
			f := process(tr, flowOf("8.8.4.4", tc.ip))
			d := f.Destination
			if tc.unset {
				if d != nil {
					t.Fatalf("destination = %v, want unset", d)
				}
				return
			}
			if tc.workloads != nil && !slices.Equal(workloads(d), tc.workloads) {
				t.Errorf("workloads = %v, want %v", workloads(d), tc.workloads)
			}
			if tc.labels != nil && !slices.Equal(d.Labels, tc.labels) {
				t.Errorf("labels = %q, want %q", d.Labels, tc.labels)
			}
			if d.Identity != tc.identity {
				t.Errorf("identity = %d, want %d", d.Identity, tc.identity)
			}
			if got := f.DestinationService.GetNamespace() + "/" + f.DestinationService.GetName(); tc.service != "" && got != tc.service {
				t.Errorf("service = %s, want %s", got, tc.service)
			}
		})
	}
}

func TestOverwrite(t *testing.T) {
	pod := mkPod("shop", "cart", "10.0.3.17", map[string]string{"app": "cart"}, ctrl("StatefulSet", "cart"))
	for _, overwrite := range []bool{false, true} {
		tr, _ := startFake(t, Options{ClusterName: "c", Overwrite: overwrite}, pod)
		eventually(t, "synced", func() bool { return tr.Ready() == nil })
		f := flowOf("10.0.3.17", "8.8.8.8")
		f.Source = &flowpb.Endpoint{Namespace: "from-hubble", Labels: []string{"k8s:x=y"}}
		f.Destination = &flowpb.Endpoint{Identity: 16777217}
		process(tr, f)
		if overwrite {
			if f.Source.Namespace != "shop" || f.Source.Labels[0] != "k8s:app=cart" || f.Destination.Identity != 2 {
				t.Errorf("overwrite: %v → %v", f.Source, f.Destination)
			}
		} else {
			if f.Source.Namespace != "from-hubble" || !slices.Equal(f.Source.Labels, []string{"k8s:x=y"}) || f.Destination.Identity != 16777217 {
				t.Errorf("kept: %v → %v", f.Source, f.Destination)
			}
			if f.Source.PodName != "cart" || f.Destination.Labels[0] != "reserved:world" {
				t.Errorf("unset fields are filled: %v → %v", f.Source, f.Destination)
			}
		}
	}
}

func TestChurn(t *testing.T) {
	old := mkPod("shop", "old", "10.0.3.17", map[string]string{"app": "old"}, nil)
	host := mkPod("kube-system", "hostnet", "192.168.0.1", nil, ctrl("DaemonSet", "ds"))
	host.Spec.HostNetwork = true
	tr, cs := startFake(t, Options{ClusterName: "c"}, mkNode("node-a", "192.168.0.1", "10.0.0.0/16"), old, host)
	eventually(t, "synced", func() bool { return tr.Ready() == nil })
	ctx := context.Background()
	src := func() *flowpb.Endpoint { return process(tr, flowOf("10.0.3.17", "192.168.0.1")).Source }

	if f := process(tr, flowOf("10.0.3.17", "192.168.0.1")); f.Destination.PodName != "" || f.Destination.Labels[0] != "reserved:host" {
		t.Errorf("hostNetwork pod claimed the node address: %v", f.Destination)
	}
	if src().PodName != "old" {
		t.Fatalf("source = %v", src())
	}
	// The address is reused by a new pod before the old one's deletion is seen.
	if _, err := cs.CoreV1().Pods("shop").Create(ctx, mkPod("shop", "new", "10.0.3.17", map[string]string{"app": "new"}, nil), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "new pod owns the address", func() bool { return src().GetPodName() == "new" })
	if err := cs.CoreV1().Pods("shop").Delete(ctx, "old", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(50 * time.Millisecond)
	if src().GetPodName() != "new" {
		t.Errorf("deleting the old pod took the address from the new one: %v", src())
	}
	// Terminated pods stop matching.
	done := mkPod("shop", "new", "10.0.3.17", map[string]string{"app": "new"}, nil)
	done.Status.Phase = corev1.PodSucceeded
	if _, err := cs.CoreV1().Pods("shop").UpdateStatus(ctx, done, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "terminated pod stops matching", func() bool { return src() == nil })
	// A pod whose address changes releases the old one.
	p := mkPod("shop", "mover", "10.0.4.1", nil, nil)
	if _, err := cs.CoreV1().Pods("shop").Create(ctx, p, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "mover", func() bool { return process(tr, flowOf("10.0.4.1", "")).Source.GetPodName() == "mover" })
	p.Status.PodIP, p.Status.PodIPs = "10.0.4.2", []corev1.PodIP{{IP: "10.0.4.2"}}
	if _, err := cs.CoreV1().Pods("shop").UpdateStatus(ctx, p, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "mover moved", func() bool { return process(tr, flowOf("10.0.4.2", "")).Source.GetPodName() == "mover" })
	if s := process(tr, flowOf("10.0.4.1", "")).Source; s != nil {
		t.Errorf("old address still matches: %v", s)
	}
}

// TestNotSynced: a missing permission keeps the caches from syncing; flows
// are held back for sync_timeout, then pass unenriched and are counted, and
// Ready names the verb and resource.
func TestNotSynced(t *testing.T) {
	cs := fake.NewClientset(mkPod("shop", "a", "10.0.3.17", nil, nil))
	cs.PrependReactor("list", "pods", func(k8stesting.Action) (bool, runtime.Object, error) {
		return true, nil, apierrors.NewForbidden(schema.GroupResource{Resource: "pods"}, "",
			errors.New(`User "system:serviceaccount:flowbus:flowbus" cannot list resource "pods" in API group "" at the cluster scope`))
	})
	tr := startWith(t, Options{SyncTimeout: config.Duration(100 * time.Millisecond)}, cs)
	start := time.Now()
	b := pipeline.NewBatch()
	b.Next().Flow = flowOf("10.0.3.17", "8.8.8.8")
	b.Next().Flow = flowOf("10.0.3.17", "8.8.8.8")
	tr.Process(b)
	if time.Since(start) < 90*time.Millisecond {
		t.Errorf("flows were not held back")
	}
	if b.Events[0].Flow.Source != nil {
		t.Errorf("enriched before sync: %v", b.Events[0].Flow.Source)
	}
	b.Release()
	if got := testutil.ToFloat64(tr.unsynced); got != 2 {
		t.Errorf("unenriched = %v, want 2", got)
	}
	eventually(t, "the error is reported", func() bool {
		err := tr.Ready()
		return err != nil && strings.Contains(err.Error(), "missing RBAC permission: list pods")
	})
}

func TestConfig(t *testing.T) {
	var n yaml.Node
	if err := yaml.Unmarshal([]byte("kubeconfig: /nonexistent/kubeconfig\nsync_timeout: -1s\n"), &n); err != nil {
		t.Fatal(err)
	}
	_, err := pipeline.Make(&pipeline.Build{Name: "k", Type: "kubernetes"}, n.Content[0], New)
	if err == nil || !strings.Contains(err.Error(), "2:15") {
		t.Errorf("err = %v", err)
	}
	if err := yaml.Unmarshal([]byte("kubeconfig: /nonexistent/kubeconfig\n"), &n); err != nil {
		t.Fatal(err)
	}
	_, err = pipeline.Make(&pipeline.Build{Name: "k", Type: "kubernetes"}, n.Content[0], New)
	if err == nil || !strings.Contains(err.Error(), "1:13") || !strings.Contains(err.Error(), "/nonexistent/kubeconfig") {
		t.Errorf("err = %v, want it positioned at the kubeconfig value", err)
	}
}

func typesUID(s string) types.UID { return types.UID(s) }

func writeFile(t *testing.T, path, text string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
}
