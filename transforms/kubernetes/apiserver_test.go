package kubernetes

import (
	"bytes"
	"context"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	authv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	k8sclient "k8s.io/client-go/kubernetes"

	flowpb "github.com/flowbus/flowbus/flow"
	"github.com/flowbus/flowbus/internal/kubetest"
	"github.com/flowbus/flowbus/pipeline"
	"github.com/flowbus/flowbus/pipeline/config"
)

// syncLog is a log buffer safe for the informers' goroutines.
type syncLog struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *syncLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *syncLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

// startReal builds the transform from YAML against a kubeconfig and starts it.
func startReal(t *testing.T, kubeconfig string, timeout time.Duration) (*Transform, *syncLog) {
	t.Helper()
	logs := &syncLog{}
	tr, err := New(&pipeline.Build{Name: "k", Type: "kubernetes", NodeName: "node-a", Log: slog.New(slog.NewTextHandler(logs, nil))},
		&Options{Kubeconfig: kubeconfig, ClusterName: "test", SyncTimeout: config.Duration(timeout)})
	if err != nil {
		t.Fatal(err)
	}
	if err := tr.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = tr.Stop(context.Background()) })
	return tr, logs
}

type api struct {
	t  *testing.T
	cs k8sclient.Interface
}

func (a api) namespace(ns string) {
	a.t.Helper()
	ctx := context.Background()
	if _, err := a.cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		a.t.Fatal(err)
	}
	// No controller manager runs: the pods' service account is made here.
	if _, err := a.cs.CoreV1().ServiceAccounts(ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "default"}}, metav1.CreateOptions{}); err != nil {
		a.t.Fatal(err)
	}
}

// pod creates a pod and sets its status (address, phase) through the
// status subresource, as the kubelet would.
func (a api) pod(ns, name, ip string, labels map[string]string, owners []metav1.OwnerReference, hostNetwork bool) *corev1.Pod {
	a.t.Helper()
	ctx := context.Background()
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: labels, OwnerReferences: owners},
		Spec: corev1.PodSpec{NodeName: "node-a", HostNetwork: hostNetwork, AutomountServiceAccountToken: new(false),
			Containers: []corev1.Container{{Name: "c", Image: "example.invalid/c"}}},
	}
	p, err := a.cs.CoreV1().Pods(ns).Create(ctx, p, metav1.CreateOptions{})
	if err != nil {
		a.t.Fatal(err)
	}
	p.Status = corev1.PodStatus{Phase: corev1.PodRunning, PodIP: ip, PodIPs: []corev1.PodIP{{IP: ip}}, HostIP: "192.168.0.1"}
	p, err = a.cs.CoreV1().Pods(ns).UpdateStatus(ctx, p, metav1.UpdateOptions{})
	if err != nil {
		a.t.Fatal(err)
	}
	return p
}

func ownedBy(kind, name string, uid string) []metav1.OwnerReference {
	api := "apps/v1"
	if kind == "Job" || kind == "CronJob" {
		api = "batch/v1"
	}
	return []metav1.OwnerReference{{APIVersion: api, Kind: kind, Name: name, UID: typesUID(uid), Controller: new(true)}}
}

func TestAPIServer(t *testing.T) {
	srv := kubetest.Start(t)
	ctx := context.Background()
	a := api{t, srv.Client}
	for _, ns := range []string{"shop", "payments", "kube-system"} {
		if ns != "kube-system" {
			a.namespace(ns)
		} else if _, err := srv.Client.CoreV1().ServiceAccounts(ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "default"}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}

	// A node, flowbus's own.
	n, err := srv.Client.CoreV1().Nodes().Create(ctx, &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: "node-a", Labels: map[string]string{"topology.kubernetes.io/zone": "z1"}},
		Spec:       corev1.NodeSpec{PodCIDR: "10.0.0.0/16", PodCIDRs: []string{"10.0.0.0/16"}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	n.Status.Addresses = []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: "192.168.0.1"}}
	if _, err := srv.Client.CoreV1().Nodes().UpdateStatus(ctx, n, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}

	// Deployment → ReplicaSet → pod.
	labels := map[string]string{"app": "cart"}
	dep, err := srv.Client.AppsV1().Deployments("shop").Create(ctx, &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "cart"},
		Spec: appsv1.DeploymentSpec{Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "example.invalid/c"}}}}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	rs, err := srv.Client.AppsV1().ReplicaSets("shop").Create(ctx, &appsv1.ReplicaSet{
		ObjectMeta: metav1.ObjectMeta{Name: "cart-7d9f", OwnerReferences: ownedBy("Deployment", "cart", string(dep.UID))},
		Spec: appsv1.ReplicaSetSpec{Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "example.invalid/c"}}}}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	a.pod("shop", "cart-7d9f-x1", "10.0.3.17", labels, ownedBy("ReplicaSet", "cart-7d9f", string(rs.UID)), false)
	api1 := a.pod("payments", "api-0", "10.0.4.4", map[string]string{"app": "api"}, nil, false)
	svc, err := srv.Client.CoreV1().Services("payments").Create(ctx, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "api"},
		Spec:       corev1.ServiceSpec{Selector: map[string]string{"app": "api"}, Ports: []corev1.ServicePort{{Port: 443}}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := srv.Client.DiscoveryV1().EndpointSlices("payments").Create(ctx, &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Name: "api-1", Labels: map[string]string{discoveryv1.LabelServiceName: "api"}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Endpoints:   []discoveryv1.Endpoint{{Addresses: []string{"10.0.4.4"}}},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	a.pod("kube-system", "agent", "192.168.0.1", nil, nil, true)

	tr, logs := startReal(t, srv.Kubeconfig, 30*time.Second)
	// The first batch is held back until the caches have synced.
	f := process(tr, flowOf("10.0.3.17", svc.Spec.ClusterIP))
	if tr.Ready() != nil {
		t.Fatalf("not ready after the first batch: %v", tr.Ready())
	}
	t.Logf("synced in %v", tr.SyncDuration())

	t.Run("owners and services", func(t *testing.T) {
		// The API server copies the node's topology labels to a pod bound to it.
		want := []string{"k8s:app=cart", "k8s:io.cilium.k8s.policy.cluster=test", "k8s:io.cilium.k8s.policy.serviceaccount=default", "k8s:io.kubernetes.pod.namespace=shop", "k8s:topology.kubernetes.io/zone=z1"}
		if s := f.Source; s.GetPodName() != "cart-7d9f-x1" || s.Namespace != "shop" || !slices.Equal(s.Labels, want) || !slices.Equal(workloads(s), []string{"Deployment/cart"}) {
			t.Errorf("source = %v", s)
		}
		if d := f.DestinationService; d.GetName() != "api" || d.GetNamespace() != "payments" {
			t.Errorf("destination_service = %v", d)
		}
		if !slices.Equal(f.NodeLabels, []string{"topology.kubernetes.io/zone=z1"}) {
			t.Errorf("node_labels = %v", f.NodeLabels)
		}
		f := process(tr, flowOf("10.0.3.17", "10.0.4.4"))
		if f.Destination.GetPodName() != "api-0" || f.DestinationService.GetName() != "api" {
			t.Errorf("backend: %v %v", f.Destination, f.DestinationService)
		}
	})
	t.Run("client-go warnings reach slog", func(t *testing.T) {
		// The API server warns about a deprecated node label in a pod's
		// node selector, in a Warning header client-go hands to its
		// warning handler: the transform's own client logs it, and any
		// other client-go client in the process logs it through klog,
		// which the transform routes to its logger.
		warned := func(cs k8sclient.Interface, name string) {
			t.Helper()
			p := &corev1.Pod{
				ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: name},
				Spec: corev1.PodSpec{NodeSelector: map[string]string{"beta.kubernetes.io/arch": "amd64"},
					Containers: []corev1.Container{{Name: "c", Image: "example.invalid/c"}}},
			}
			if _, err := cs.CoreV1().Pods("shop").Create(ctx, p, metav1.CreateOptions{}); err != nil {
				t.Fatal(err)
			}
		}
		warned(tr.client, "warned-1")
		eventually(t, "the transform's client logs the warning: "+logs.String(), func() bool {
			return strings.Contains(logs.String(), `level=WARN msg="kubernetes: API server warning: spec.nodeSelector[beta.kubernetes.io/arch]: deprecated`)
		})
		warned(srv.Client, "warned-2")
		eventually(t, "klog's record reaches slog: "+logs.String(), func() bool {
			return strings.Contains(logs.String(), `level=WARN msg="Warning: spec.nodeSelector[beta.kubernetes.io/arch]: deprecated`) &&
				strings.Contains(logs.String(), "from=client-go")
		})
	})
	t.Run("hostNetwork and node", func(t *testing.T) {
		f := process(tr, flowOf("192.168.0.1", "1.1.1.1"))
		if f.Source.GetPodName() != "" || !slices.Equal(f.Source.GetLabels(), []string{"reserved:host"}) {
			t.Errorf("node address: %v", f.Source)
		}
		if !slices.Equal(f.Destination.GetLabels(), []string{"reserved:world"}) {
			t.Errorf("outside address: %v", f.Destination)
		}
	})
	t.Run("deleted and reused", func(t *testing.T) {
		if err := srv.Client.CoreV1().Pods("payments").Delete(ctx, api1.Name, metav1.DeleteOptions{GracePeriodSeconds: new(int64)}); err != nil {
			t.Fatal(err)
		}
		eventually(t, "deleted pod stops matching", func() bool { return process(tr, flowOf("10.0.4.4", "")).Source == nil })
		a.pod("shop", "reuser", "10.0.4.4", map[string]string{"app": "reuser"}, nil, false)
		eventually(t, "the new pod owns the address", func() bool {
			return process(tr, flowOf("10.0.4.4", "")).Source.GetPodName() == "reuser"
		})
	})
	t.Run("updates while flows stream", func(t *testing.T) {
		stop := make(chan struct{})
		done := make(chan int)
		go func() {
			n := 0
			b := pipeline.NewBatch()
			defer b.Release()
			for {
				select {
				case <-stop:
					done <- n
					return
				default:
				}
				b.Truncate(0)
				for i := 0; i < 64; i++ {
					f := b.Next().FlowStorage()
					if f.IP == nil {
						f.IP = new(flowpb.IP)
					}
					f.IP.Source, f.IP.Destination = "10.0.5.1", "10.0.3.17"
				}
				tr.Process(b)
				n += b.Len()
			}
		}()
		for i := 0; i < 20; i++ {
			p := a.pod("shop", "churn-"+strings.Repeat("x", i+1), "10.0.5.1", map[string]string{"gen": strings.Repeat("x", i+1)}, nil, false)
			if err := srv.Client.CoreV1().Pods("shop").Delete(ctx, p.Name, metav1.DeleteOptions{GracePeriodSeconds: new(int64)}); err != nil {
				t.Fatal(err)
			}
		}
		a.pod("shop", "churn-last", "10.0.5.1", nil, nil, false)
		eventually(t, "the last pod owns the address", func() bool {
			return process(tr, flowOf("10.0.5.1", "")).Source.GetPodName() == "churn-last"
		})
		close(stop)
		t.Logf("%d flows processed during the churn", <-done)
	})
	t.Run("missing RBAC", func(t *testing.T) {
		if _, err := srv.Client.CoreV1().ServiceAccounts("kube-system").Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "flowbus"}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		tok, err := srv.Client.CoreV1().ServiceAccounts("kube-system").CreateToken(ctx, "flowbus", &authv1.TokenRequest{Spec: authv1.TokenRequestSpec{}}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		tr, logs := startReal(t, srv.KubeconfigFor(t, tok.Status.Token), 200*time.Millisecond)
		f := process(tr, flowOf("10.0.3.17", ""))
		if f.Source != nil {
			t.Errorf("enriched without a sync: %v", f.Source)
		}
		eventually(t, "a log line names the verb and resource", func() bool {
			return strings.Contains(logs.String(), "missing RBAC permission: list pods") && strings.Contains(logs.String(), "list replicasets.apps")
		})
		if err := tr.Ready(); err == nil || !strings.Contains(err.Error(), "missing RBAC permission") {
			t.Errorf("Ready() = %v", err)
		}
	})
	t.Run("invalid token", func(t *testing.T) {
		tr, logs := startReal(t, srv.KubeconfigFor(t, "expired-or-unknown"), 100*time.Millisecond)
		process(tr, flowOf("10.0.3.17", ""))
		eventually(t, "unauthorized is logged", func() bool { return strings.Contains(logs.String(), "unauthorized while watching") })
		if tr.Ready() == nil {
			t.Error("ready with an invalid token")
		}
	})
	t.Run("expired token", func(t *testing.T) {
		sa, err := srv.Client.CoreV1().ServiceAccounts("kube-system").Get(ctx, "flowbus", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		// Signed with the server's own key for an existing service
		// account (which has no RBAC binding): valid for another hour it
		// authenticates, and the server only refuses the permissions.
		key := filepath.Join(srv.Dir, "sa.key")
		_, valid := startReal(t, srv.KubeconfigFor(t, saToken(t, key, sa, time.Now().Add(time.Hour))), 100*time.Millisecond)
		eventually(t, "the signed token authenticates: "+valid.String(), func() bool { return strings.Contains(valid.String(), "missing RBAC permission") })
		if strings.Contains(valid.String(), "unauthorized") {
			t.Fatalf("a valid token is refused: %s", valid)
		}
		// The same token, expired an hour ago (past the server's leeway).
		tr, logs := startReal(t, srv.KubeconfigFor(t, saToken(t, key, sa, time.Now().Add(-time.Hour))), 100*time.Millisecond)
		if f := process(tr, flowOf("10.0.3.17", "")); f.Source != nil {
			t.Errorf("enriched with an expired token: %v", f.Source)
		}
		eventually(t, "unauthorized is logged: "+logs.String(), func() bool { return strings.Contains(logs.String(), "unauthorized while watching") })
		if tr.Ready() == nil {
			t.Error("ready with an expired token")
		}
	})
	t.Run("apiserver restart", func(t *testing.T) {
		srv.RestartAPIServer(t, time.Second)
		a.pod("shop", "after-restart", "10.0.6.1", map[string]string{"app": "late"}, nil, false)
		eventually(t, "informers recover after the restart", func() bool {
			return process(tr, flowOf("10.0.6.1", "")).Source.GetPodName() == "after-restart"
		})
		if f := process(tr, flowOf("10.0.3.17", "")); f.Source.GetPodName() != "cart-7d9f-x1" {
			t.Errorf("after the restart: %v", f.Source)
		}
	})
}

func TestUnreachable(t *testing.T) {
	dir := t.TempDir()
	path := dir + "/kubeconfig"
	// A loopback port nothing listens on.
	writeFile(t, path, "apiVersion: v1\nkind: Config\nclusters: [{name: c, cluster: {server: \"https://127.0.0.1:1\", insecure-skip-tls-verify: true}}]\nusers: [{name: u, user: {token: t}}]\ncontexts: [{name: c, context: {cluster: c, user: u}}]\ncurrent-context: c\n")
	tr, logs := startReal(t, path, 100*time.Millisecond)
	f := process(tr, flowOf("10.0.3.17", ""))
	if f.Source != nil {
		t.Errorf("enriched: %v", f.Source)
	}
	eventually(t, "the error is logged: "+logs.String(), func() bool { return strings.Contains(logs.String(), "connection refused") })
	if err := tr.Ready(); err == nil || !strings.Contains(err.Error(), "connection refused") {
		t.Errorf("Ready() = %v", err)
	}
}

// saToken is a service-account token for sa that expires at exp, signed
// with the RSA key in keyFile as the API server signs its own.
func saToken(t *testing.T, keyFile string, sa *corev1.ServiceAccount, exp time.Time) string {
	t.Helper()
	data, err := os.ReadFile(keyFile)
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode(data)
	if blk == nil {
		t.Fatalf("%s: no PEM block", keyFile)
	}
	var key *rsa.PrivateKey
	if k, err := x509.ParsePKCS8PrivateKey(blk.Bytes); err == nil {
		key, _ = k.(*rsa.PrivateKey)
	} else if key, err = x509.ParsePKCS1PrivateKey(blk.Bytes); err != nil {
		t.Fatalf("%s: %v", keyFile, err)
	}
	if key == nil {
		t.Fatalf("%s: not an RSA key", keyFile)
	}
	const issuer = "https://kubernetes.default.svc"
	claims := map[string]any{
		"iss": issuer, "aud": []string{issuer},
		"sub": "system:serviceaccount:" + sa.Namespace + ":" + sa.Name,
		"iat": exp.Add(-time.Hour).Unix(), "nbf": exp.Add(-time.Hour).Unix(), "exp": exp.Unix(),
		"kubernetes.io": map[string]any{"namespace": sa.Namespace, "serviceaccount": map[string]any{"name": sa.Name, "uid": string(sa.UID)}},
	}
	enc := func(v any) string {
		b, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		return base64.RawURLEncoding.EncodeToString(b)
	}
	signed := enc(map[string]string{"alg": "RS256", "typ": "JWT"}) + "." + enc(claims)
	sum := sha256.Sum256([]byte(signed))
	sig, err := rsa.SignPKCS1v15(rand.Reader, key, crypto.SHA256, sum[:])
	if err != nil {
		t.Fatal(err)
	}
	return signed + "." + base64.RawURLEncoding.EncodeToString(sig)
}
