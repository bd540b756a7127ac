package kubernetes

import (
	"fmt"
	"log/slog"
	"os"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/cache"

	flowpb "github.com/flowbus/flowbus/flow"
	"github.com/flowbus/flowbus/pipeline"
)

const (
	benchPods     = 50000
	benchServices = 10000
	benchNodes    = 500
)

func benchIP(i int) string { return fmt.Sprintf("10.%d.%d.%d", 1+i>>16, (i>>8)&255, i&255) }

// benchPod is a pod as the API returns it, with the fields the trim drops
// (spec, annotations, managed fields) filled like a typical Deployment pod.
func benchPod(i int) *corev1.Pod {
	p := mkPod(fmt.Sprintf("ns-%d", i%200), fmt.Sprintf("app-%d-7d9f6c-%05d", i%5000, i), benchIP(i),
		map[string]string{"app": fmt.Sprintf("app-%d", i%5000), "pod-template-hash": "7d9f6c", "tier": "web", "team": "t" + strconv.Itoa(i%40)},
		ctrl("ReplicaSet", fmt.Sprintf("app-%d-7d9f6c", i%5000)))
	p.UID = types.UID(fmt.Sprintf("00000000-0000-0000-0000-%012d", i))
	p.Annotations = map[string]string{"kubectl.kubernetes.io/restartedAt": "2026-01-01T00:00:00Z", "prometheus.io/scrape": "true"}
	p.ManagedFields = []metav1.ManagedFieldsEntry{{Manager: "kube-controller-manager", Operation: "Update", APIVersion: "v1"}}
	p.Spec.Containers = []corev1.Container{{Name: "app", Image: "registry.example/app:1.2.3",
		Env:   []corev1.EnvVar{{Name: "A", Value: "1"}, {Name: "B", Value: "2"}},
		Ports: []corev1.ContainerPort{{ContainerPort: 8080}}}}
	return p
}

// threadCPU is the CPU time the calling thread has used, in nanoseconds:
// unlike the wall clock, it does not count the time other processes on a
// shared machine hold the CPU.
func threadCPU() int64 {
	var ru unix.Rusage
	if err := unix.Getrusage(unix.RUSAGE_THREAD, &ru); err != nil {
		return 0
	}
	return ru.Utime.Nano() + ru.Stime.Nano()
}

func rss() int64 {
	b, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b))
	n, _ := strconv.ParseInt(f[1], 10, 64)
	return n * int64(os.Getpagesize())
}

func heap() uint64 {
	runtime.GC()
	debug.FreeOSMemory()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

// loaded returns a transform whose index and an informer store hold
// benchPods pods and benchServices services, as after a sync.
func loaded(tb testing.TB) (*Transform, cache.Indexer) {
	tr := newTransform(&pipeline.Build{NodeName: "node-a", Log: slog.New(slog.DiscardHandler)}, &Options{ClusterName: "prod"})
	tr.isSynced.Store(true)
	store := cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{})
	for i := 0; i < benchPods; i++ {
		o, _ := trimPod(benchPod(i))
		if err := store.Add(o); err != nil {
			tb.Fatal(err)
		}
		tr.idx.setPod(o.(*corev1.Pod))
	}
	for i := 0; i < benchServices; i++ {
		s := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: fmt.Sprintf("ns-%d", i%200), Name: fmt.Sprintf("svc-%d", i), UID: types.UID(strconv.Itoa(i))},
			Spec: corev1.ServiceSpec{ClusterIP: fmt.Sprintf("10.96.%d.%d", i>>8, i&255)}}
		s.Spec.ClusterIPs = []string{s.Spec.ClusterIP}
		o, _ := trimService(s)
		if err := store.Add(o); err != nil {
			tb.Fatal(err)
		}
		tr.idx.setService(o.(*corev1.Service), nil)
	}
	// The pods' ReplicaSets, each owned by a Deployment, and the nodes with
	// their pod ranges (10.1.0.0/16 and up hold the pods).
	for i := 0; i < benchPods/10; i++ {
		tr.idx.setOwner("ReplicaSet", fmt.Sprintf("ns-%d", i%200), fmt.Sprintf("app-%d-7d9f6c", i), ctrl("Deployment", fmt.Sprintf("app-%d", i)))
	}
	for i := 0; i < benchNodes; i++ {
		n := mkNode(fmt.Sprintf("node-%d", i), fmt.Sprintf("192.168.%d.%d", i>>8, i&255), fmt.Sprintf("10.%d.%d.0/24", 1+i>>8, i&255))
		tr.idx.setNode(n, i == 0)
	}
	return tr, store
}

// BenchmarkEnrich is the lookup cost per flow with 50,000 pods, 10,000
// services, 5,000 ReplicaSets and 500 nodes loaded, on flows whose nested
// messages the slot already has (a steady pipeline): a pod → ClusterIP
// flow, a pod → pod flow, and a pod → outside flow.
func BenchmarkEnrich(b *testing.B) {
	tr, _ := loaded(b)
	for _, bc := range []struct {
		name string
		dst  func(i int) string
	}{
		{"pod-service", func(i int) string { return fmt.Sprintf("10.96.%d.%d", i>>8&31, i&255) }},
		{"pod-pod", func(i int) string { return benchIP(i * 31 % benchPods) }},
		{"pod-world", func(i int) string { return fmt.Sprintf("203.0.%d.%d", i>>8&1, i&255) }},
	} {
		b.Run(bc.name, func(b *testing.B) {
			batch := pipeline.NewBatch()
			defer batch.Release()
			for i := 0; i < pipeline.DefaultBatchSize; i++ {
				f := batch.Next().FlowStorage()
				f.IP = &flowpb.IP{Source: benchIP(i * 97 % benchPods), Destination: bc.dst(i)}
			}
			tr.Process(batch) // allocate the nested messages once
			b.ReportAllocs()
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			cpu0 := threadCPU()
			b.ResetTimer()
			for n := 0; n < b.N; n += pipeline.DefaultBatchSize {
				tr.Process(batch)
			}
			b.StopTimer()
			b.ReportMetric(float64(threadCPU()-cpu0)/float64(b.N), "cpu-ns/flow")
			f := batch.Events[1].Flow
			if f.Source.GetPodName() == "" || len(f.Source.GetWorkloads()) == 0 || f.Source.Workloads[0].Kind != "Deployment" {
				b.Fatalf("not enriched: %v", f)
			}
			if bc.name == "pod-service" && f.DestinationService.GetName() == "" {
				b.Fatalf("no destination service: %v", f)
			}
		})
	}
}

// BenchmarkMemory reports the memory the informer store and the index
// hold per 1,000 pods, with 50,000 pods and 10,000 services loaded.
func BenchmarkMemory(b *testing.B) {
	for i := 0; i < b.N; i++ {
		h0, r0 := heap(), rss()
		tr, store := loaded(b)
		h1, r1 := heap(), rss()
		b.ReportMetric(float64(h1-h0)/benchPods*1000, "heap-B/1000pods")
		b.ReportMetric(float64(r1-r0)/benchPods*1000, "rss-B/1000pods")
		runtime.KeepAlive(tr)
		runtime.KeepAlive(store)
	}
}
