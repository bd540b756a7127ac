//go:build linux

package e2e

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	k8sclient "k8s.io/client-go/kubernetes"

	"github.com/flowbus/flowbus/bpf/bpftest"
	flowpb "github.com/flowbus/flowbus/flow"
	"github.com/flowbus/flowbus/flow/flowjson"
	"github.com/flowbus/flowbus/flow/observer"
	"github.com/flowbus/flowbus/internal/kubetest"
)

// mkPod creates a pod through the API and sets its address and phase
// through the status subresource, as the kubelet would.
func mkPod(t *testing.T, cs k8sclient.Interface, ns, name, ip string, labels map[string]string, owner metav1.OwnerReference) {
	t.Helper()
	ctx := context.Background()
	p, err := cs.CoreV1().Pods(ns).Create(ctx, &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: labels, OwnerReferences: []metav1.OwnerReference{owner}},
		Spec: corev1.PodSpec{NodeName: "node-a", AutomountServiceAccountToken: new(false),
			Containers: []corev1.Container{{Name: "c", Image: "example.invalid/c"}}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	p.Status = corev1.PodStatus{Phase: corev1.PodRunning, PodIP: ip, PodIPs: []corev1.PodIP{{IP: ip}}}
	if _, err := cs.CoreV1().Pods(ns).UpdateStatus(ctx, p, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
}

// rsOwnedBy is a ReplicaSet with the given controller.
func rsOwnedBy(name string, owner metav1.OwnerReference) *appsv1.ReplicaSet {
	labels := map[string]string{"rs": name}
	return &appsv1.ReplicaSet{
		ObjectMeta: metav1.ObjectMeta{Name: name, OwnerReferences: []metav1.OwnerReference{owner}},
		Spec: appsv1.ReplicaSetSpec{Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "example.invalid/c"}}}}},
	}
}

// TestKubernetesKernelFlows: the ebpf source watches a veth pair whose two
// addresses are registered as pods in a real API server; the kubernetes
// transform names both sides of every flow (namespace, pod, labels,
// workload), and the file sink writes them as Hubble export JSON.
func TestKubernetesKernelFlows(t *testing.T) {
	bpftest.RequireRoot(t)
	srv := kubetest.Start(t)
	pair := bpftest.NewPair(t)
	cs := srv.Client
	ctx := context.Background()
	for _, ns := range []string{"shop", "payments"} {
		if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		if _, err := cs.CoreV1().ServiceAccounts(ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "default"}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	ref := func(api, kind, name string) metav1.OwnerReference {
		return metav1.OwnerReference{APIVersion: api, Kind: kind, Name: name, UID: types.UID(kind + "-" + name), Controller: new(true)}
	}
	// A Deployment's ReplicaSet (only its owner reference matters) and a
	// StatefulSet own the two pods.
	if _, err := cs.AppsV1().ReplicaSets("shop").Create(ctx, rsOwnedBy("cart-7d9f", ref("apps/v1", "Deployment", "cart")), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	mkPod(t, cs, "shop", "cart-7d9f-x1", pair.HostIP.String(), map[string]string{"app": "cart"}, ref("apps/v1", "ReplicaSet", "cart-7d9f"))
	mkPod(t, cs, "payments", "api-0", pair.PeerIP.String(), map[string]string{"app": "api"}, ref("apps/v1", "StatefulSet", "api"))

	dir := t.TempDir()
	out := filepath.Join(dir, "flows.json")
	p, err := Build(fmt.Sprintf(`
node_name: node-a
metrics: {listen: ""}
sources:
  kernel: {type: ebpf, interfaces: [%s], drops: false}
transforms:
  k8s: {type: kubernetes, inputs: [kernel], kubeconfig: %q, cluster_name: test, sync_timeout: 30s}
sinks:
  out: {type: file, inputs: [k8s], path: %q, encoding: json}
`, pair.Host, srv.Kubeconfig, out), dir)
	if err != nil {
		t.Fatal(err)
	}
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		_, err := p.Run(runCtx)
		done <- err
	}()
	// The source attaches at start; ping until the echo flows are
	// written, then stop the pipeline (it drains into the file).
	deadline := time.Now().Add(60 * time.Second)
	for !hasEcho(t, out, pair.HostIP.String(), pair.PeerIP.String()) {
		if time.Now().After(deadline) {
			cancel()
			t.Fatalf("no enriched echo flows in %s after 60s", out)
		}
		if err := bpftest.Ping(pair.PeerIP, 1); err != nil {
			t.Fatal(err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}

	cart := side{"shop", "cart-7d9f-x1", "Deployment/cart", []string{"k8s:app=cart", "k8s:io.cilium.k8s.policy.cluster=test", "k8s:io.cilium.k8s.policy.serviceaccount=default", "k8s:io.kubernetes.pod.namespace=shop"}}
	api := side{"payments", "api-0", "StatefulSet/api", []string{"k8s:app=api", "k8s:io.cilium.k8s.policy.cluster=test", "k8s:io.cilium.k8s.policy.serviceaccount=default", "k8s:io.kubernetes.pod.namespace=payments"}}
	// Flows between the two pods' addresses; the kernel's own IPv6
	// neighbour discovery on the veth (:: → ff02::…) is outside the
	// cluster and gets reserved:world.
	n := 0
	pods := map[string]side{pair.HostIP.String(): cart, pair.PeerIP.String(): api}
	for _, f := range readFlows(t, out) {
		src, okSrc := pods[f.GetIP().GetSource()]
		dst, okDst := pods[f.GetIP().GetDestination()]
		if !okSrc || !okDst {
			if f.GetIP().GetSource() == "::" && !slices.Equal(f.GetSource().GetLabels(), []string{"reserved:world"}) {
				t.Errorf("unspecified source: %v", f.GetSource())
			}
			continue
		}
		if err := src.check(f.Source); err != nil {
			t.Errorf("source of %s → %s: %v", f.GetIP().GetSource(), f.GetIP().GetDestination(), err)
		}
		if err := dst.check(f.Destination); err != nil {
			t.Errorf("destination of %s → %s: %v", f.GetIP().GetSource(), f.GetIP().GetDestination(), err)
		}
		n++
	}
	if n < 2 {
		t.Errorf("%d flows between the pods, want the echo request and reply at least", n)
	}
	t.Logf("%d flows between the pods, all enriched on both sides", n)
}

// side is what a flow's endpoint must say.
type side struct {
	namespace, pod, workload string
	labels                   []string
}

func (s side) check(ep *flowpb.Endpoint) error {
	var wl []string
	for _, w := range ep.GetWorkloads() {
		wl = append(wl, w.Kind+"/"+w.Name)
	}
	if ep.GetNamespace() != s.namespace || ep.GetPodName() != s.pod || ep.GetClusterName() != "test" ||
		!slices.Equal(wl, []string{s.workload}) || !slices.Equal(ep.GetLabels(), s.labels) {
		return fmt.Errorf("endpoint %v, want %s/%s (%s) with labels %v", ep, s.namespace, s.pod, s.workload, s.labels)
	}
	return nil
}

// readFlows reads the flows of a Hubble export file.
func readFlows(t *testing.T, path string) []*flowpb.Flow {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	var flows []*flowpb.Flow
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var ev observer.ExportEvent
		if err := flowjson.Unmarshal(sc.Bytes(), &ev); err != nil {
			t.Fatalf("%s: %v: %s", path, err, sc.Bytes())
		}
		if f := ev.GetFlow(); f != nil {
			flows = append(flows, f)
		}
	}
	return flows
}

// hasEcho reports whether the file holds an echo request from a to b and
// its reply, both with a pod name on each side.
func hasEcho(t *testing.T, path, a, b string) bool {
	var req, rep bool
	for _, f := range readFlows(t, path) {
		icmp := f.GetL4().GetICMPv4()
		if icmp == nil || f.GetSource().GetPodName() == "" || f.GetDestination().GetPodName() == "" {
			continue
		}
		switch {
		case icmp.Type == 8 && f.IP.Source == a && f.IP.Destination == b:
			req = true
		case icmp.Type == 0 && f.IP.Source == b && f.IP.Destination == a:
			rep = true
		}
	}
	return req && rep
}
