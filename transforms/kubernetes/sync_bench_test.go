package kubernetes

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	k8sclient "k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/flowbus/flowbus/internal/kubetest"
	"github.com/flowbus/flowbus/pipeline"
	"github.com/flowbus/flowbus/pipeline/config"
)

var (
	syncPods     = flag.Int("sync-pods", 10000, "BenchmarkSync: pods created through the API")
	syncServices = flag.Int("sync-services", 2000, "BenchmarkSync: services created through the API")
)

// BenchmarkSync is the time from Start until the caches have synced, with
// -sync-pods pods (each with its address set through the status
// subresource, as the kubelet does) and -sync-services services created
// through a real API server first. It also reports how fast the objects
// were created, which bounds the size a run can afford on a small machine.
// Run it with -benchtime 1x: every call creates the objects again.
func BenchmarkSync(b *testing.B) {
	srv := kubetest.Start(b)
	cfg := rest.CopyConfig(srv.Config)
	cfg.QPS, cfg.Burst = 1e6, 1e6
	cfg.ContentType = "application/vnd.kubernetes.protobuf"
	cs, err := k8sclient.NewForConfig(cfg)
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	const namespaces = 20
	for i := 0; i < namespaces; i++ {
		ns := fmt.Sprintf("ns-%d", i)
		if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
			b.Fatal(err)
		}
		if _, err := cs.CoreV1().ServiceAccounts(ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "default"}}, metav1.CreateOptions{}); err != nil {
			b.Fatal(err)
		}
	}
	start := time.Now()
	parallel(b, *syncPods, func(i int) error {
		ns := fmt.Sprintf("ns-%d", i%namespaces)
		p, err := cs.CoreV1().Pods(ns).Create(ctx, &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("app-%d-7d9f6c-%05d", i%5000, i),
				Labels:          map[string]string{"app": fmt.Sprintf("app-%d", i%5000), "pod-template-hash": "7d9f6c", "tier": "web"},
				OwnerReferences: ownedBy("ReplicaSet", fmt.Sprintf("app-%d-7d9f6c", i%5000), fmt.Sprintf("uid-%d", i%5000))},
			Spec: corev1.PodSpec{NodeName: "node-a", AutomountServiceAccountToken: new(false),
				Containers: []corev1.Container{{Name: "app", Image: "registry.example/app:1.2.3"}}},
		}, metav1.CreateOptions{})
		if err != nil {
			return err
		}
		ip := benchIP(i)
		p.Status = corev1.PodStatus{Phase: corev1.PodRunning, PodIP: ip, PodIPs: []corev1.PodIP{{IP: ip}}}
		_, err = cs.CoreV1().Pods(ns).UpdateStatus(ctx, p, metav1.UpdateOptions{})
		return err
	})
	parallel(b, *syncServices, func(i int) error {
		_, err := cs.CoreV1().Services(fmt.Sprintf("ns-%d", i%namespaces)).Create(ctx, &corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("svc-%d", i)},
			Spec:       corev1.ServiceSpec{Ports: []corev1.ServicePort{{Port: 443}}},
		}, metav1.CreateOptions{})
		return err
	})
	creates := float64(*syncPods*2+*syncServices) / time.Since(start).Seconds()

	b.ResetTimer()
	var total time.Duration
	var heapAdded, rssAdded float64
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		h0, r0 := heap(), rss()
		b.StartTimer()
		tr, err := New(&pipeline.Build{Name: "k", Type: "kubernetes", NodeName: "node-a", Log: slog.New(slog.DiscardHandler)},
			&Options{Kubeconfig: srv.Kubeconfig, ClusterName: "bench", SyncTimeout: config.Duration(10 * time.Minute)})
		if err != nil {
			b.Fatal(err)
		}
		if err := tr.Start(ctx); err != nil {
			b.Fatal(err)
		}
		<-tr.synced
		total += tr.SyncDuration()
		b.StopTimer()
		h1, r1 := heap(), rss()
		heapAdded += float64(h1) - float64(h0)
		rssAdded += float64(r1 - r0)
		tr.idx.mu.RLock()
		n := tr.idx.v4.n
		tr.idx.mu.RUnlock()
		// The API server's own kubernetes Service comes on top.
		if n != *syncPods+*syncServices+1 {
			b.Errorf("%d addresses indexed, want %d", n, *syncPods+*syncServices+1)
		}
		_ = tr.Stop(ctx)
		b.StartTimer()
	}
	b.ReportMetric(float64(total.Milliseconds())/float64(b.N), "sync-ms")
	b.ReportMetric(heapAdded/float64(b.N)/float64(*syncPods)*1000, "heap-B/1000pods")
	b.ReportMetric(rssAdded/float64(b.N)/float64(*syncPods)*1000, "rss-B/1000pods")
	b.ReportMetric(float64(*syncPods), "pods")
	b.ReportMetric(creates, "creates/s")
}

// parallel runs f(0..n-1) on 16 goroutines and fails b on the first error.
func parallel(b *testing.B, n int, f func(i int) error) {
	var next atomic.Int64
	var wg sync.WaitGroup
	var once sync.Once
	var first error
	for w := 0; w < 16; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				if err := f(i); err != nil {
					once.Do(func() { first = err })
					return
				}
			}
		}()
	}
	wg.Wait()
	if first != nil {
		b.Fatal(first)
	}
}
