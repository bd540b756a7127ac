package flowjson

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	flowpb "github.com/flowbus/flowbus/flow"
)

// TestEndpointCache encodes endpoints that differ from each other in one
// field at a time, in passes over the same cache: every output is the
// uncached encoder's, whether the cache copied it or encoded it.
func TestEndpointCache(t *testing.T) {
	base := func() *flowpb.Endpoint {
		return &flowpb.Endpoint{
			ID: 1556, Identity: 12123, ClusterName: "prod", Namespace: "payments",
			Labels:    []string{"k8s:app=payments-api", "k8s:io.kubernetes.pod.namespace=payments"},
			PodName:   "payments-api-2cdh1n4whx-dzq2m",
			Workloads: []*flowpb.Workload{{Name: "payments-api", Kind: "Deployment"}},
		}
	}
	with := func(f func(*flowpb.Endpoint)) *flowpb.Endpoint { e := base(); f(e); return e }
	eps := []struct {
		name string
		e    *flowpb.Endpoint
	}{
		{"base", base()},
		{"nil", nil},
		{"empty", &flowpb.Endpoint{}},
		{"world", &flowpb.Endpoint{Identity: 2, Labels: []string{"reserved:world"}}},
		{"ID", with(func(e *flowpb.Endpoint) { e.ID = 0 })},
		{"identity", with(func(e *flowpb.Endpoint) { e.Identity++ })},
		{"cluster", with(func(e *flowpb.Endpoint) { e.ClusterName = "" })},
		{"namespace", with(func(e *flowpb.Endpoint) { e.Namespace = "payment" })},
		{"pod", with(func(e *flowpb.Endpoint) { e.PodName = "payments-api-2cdh1n4whx-dzq2n" })},
		{"no labels", with(func(e *flowpb.Endpoint) { e.Labels = nil })},
		{"one label more", with(func(e *flowpb.Endpoint) { e.Labels = append(e.Labels, "k8s:x=y") })},
		{"a label changed", with(func(e *flowpb.Endpoint) { e.Labels[1] = "k8s:io.kubernetes.pod.namespace=paymentz" })},
		{"labels split elsewhere", with(func(e *flowpb.Endpoint) {
			e.Labels = []string{"k8s:app=", "payments-apik8s:io.kubernetes.pod.namespace=payments"}
		})},
		{"an empty label", with(func(e *flowpb.Endpoint) { e.Labels = append(e.Labels, "") })},
		{"escapes", with(func(e *flowpb.Endpoint) { e.Labels[0] = "k8s:a=<b>&\"c\"\n\u2028" })},
		{"no workloads", with(func(e *flowpb.Endpoint) { e.Workloads = nil })},
		{"workload name", with(func(e *flowpb.Endpoint) { e.Workloads[0].Name = "payments-web" })},
		{"workload kind", with(func(e *flowpb.Endpoint) { e.Workloads[0].Kind = "ReplicaSet" })},
		{"workload name into kind", with(func(e *flowpb.Endpoint) {
			e.Workloads[0] = &flowpb.Workload{Name: "payments-apiDeploy", Kind: "ment"}
		})},
		{"two workloads", with(func(e *flowpb.Endpoint) { e.Workloads = append(e.Workloads, &flowpb.Workload{Name: "x"}) })},
		{"a nil workload", with(func(e *flowpb.Endpoint) { e.Workloads = append(e.Workloads, nil) })},
		{"invalid UTF-8", with(func(e *flowpb.Endpoint) { e.PodName = "pod\xff" })},
	}
	c := new(encodeCache)
	check := func(name string, e *flowpb.Endpoint) {
		t.Helper()
		want, werr := appendEndpoint([]byte("x"), e)
		got, gerr := c.appendEndpoint([]byte("x"), e)
		if !bytes.Equal(got, want) || fmt.Sprint(gerr) != fmt.Sprint(werr) {
			t.Fatalf("%s: got %s, %v\nwant %s, %v", name, got, gerr, want, werr)
		}
	}
	// holds tells each endpoint from the base one, even those the sets
	// would keep apart.
	var kept cachedEndpoint
	js, _ := appendEndpoint(nil, eps[0].e)
	kept.store(eps[0].e, js)
	for _, ep := range eps[1:] {
		if ep.e != nil && kept.holds(ep.e) != proto.Equal(ep.e, eps[0].e) {
			t.Errorf("%s: holds = %v", ep.name, !proto.Equal(ep.e, eps[0].e))
		}
	}
	// Each endpoint right after the base one, twice, so that it meets the
	// base one in the cache's set, and the base one meets it.
	for _, ep := range eps {
		for range 2 {
			check("base before "+ep.name, eps[0].e)
			check(ep.name, ep.e)
		}
	}
	for i := range eps {
		ep := eps[len(eps)-1-i]
		check(ep.name+", backwards", ep.e)
	}
}

// TestEndpointCacheEvicts encodes more endpoints than a cache holds, in a
// random order: the sets' endpoints are replaced, and every output is the
// uncached encoder's.
func TestEndpointCacheEvicts(t *testing.T) {
	var eps []*flowpb.Endpoint
	for i := range 4 * 2 * endpointSets {
		eps = append(eps, &flowpb.Endpoint{
			ID: uint32(i % 7), Identity: uint32(12000 + i/7), Namespace: "ns",
			Labels: []string{fmt.Sprintf("k8s:app=a%d", i/7)}, PodName: fmt.Sprintf("pod-%d", i%5),
		})
	}
	c := new(encodeCache)
	r := rand.New(rand.NewPCG(1, 2))
	hits := 0
	for range 20000 {
		e := eps[r.IntN(len(eps))]
		want, _ := appendEndpoint(nil, e)
		set := &c.sets[setOf(e)]
		if set.ways[0].used && set.ways[0].holds(e) || set.ways[1].used && set.ways[1].holds(e) {
			hits++
		}
		if got, _ := c.appendEndpoint(nil, e); !bytes.Equal(got, want) {
			t.Fatalf("got %s\nwant %s", got, want)
		}
	}
	if hits == 0 || hits == 20000 {
		t.Fatalf("%d hits of 20000: the test does not exercise both paths", hits)
	}
}

// TestEndpointCacheFields fails when flow.Endpoint or flow.Workload gain a
// field: cachedEndpoint.holds and store must then compare and keep it.
func TestEndpointCacheFields(t *testing.T) {
	names := func(md protoreflect.MessageDescriptor) []string {
		var n []string
		for i := range md.Fields().Len() {
			n = append(n, string(md.Fields().Get(i).Name()))
		}
		slices.Sort(n)
		return n
	}
	for _, c := range []struct {
		md   protoreflect.MessageDescriptor
		want []string
	}{
		{(&flowpb.Endpoint{}).ProtoReflect().Descriptor(), []string{"ID", "cluster_name", "identity", "labels", "namespace", "pod_name", "workloads"}},
		{(&flowpb.Workload{}).ProtoReflect().Descriptor(), []string{"kind", "name"}},
	} {
		if got := names(c.md); !slices.Equal(got, c.want) {
			t.Errorf("%s has fields %v; the endpoint cache compares %v", c.md.FullName(), got, c.want)
		}
	}
}

// TestNodeLabelsCache encodes lists that differ from the one before in
// their strings, their number or where they split: every output is the
// uncached encoder's.
func TestNodeLabelsCache(t *testing.T) {
	lists := [][]string{
		{"kubernetes.io/arch=amd64", "kubernetes.io/os=linux"},
		{"kubernetes.io/arch=amd64", "kubernetes.io/os=linux"},
		{"kubernetes.io/arch=amd64kubernetes.io/os=linux"},
		{"kubernetes.io/arch=amd64", "kubernetes.io/os=linux"},
		{"kubernetes.io/arch=amd64", "kubernetes.io/os=linu"},
		{"kubernetes.io/arch=amd64", "kubernetes.io/os=linux", ""},
		{"kubernetes.io/arch=amd64", "kubernetes.io/os=linux"},
		{"<escaped>&\"", "\u2028"},
		{"<escaped>&\"", "\u2028"},
		{"invalid \xff"},
		{"invalid \xff"},
		{"kubernetes.io/arch=amd64", "kubernetes.io/os=linux"},
	}
	c := new(encodeCache)
	for i, l := range lists {
		want, werr := appendStrings([]byte("x"), l)
		got, gerr := c.appendNodeLabels([]byte("x"), l)
		if !bytes.Equal(got, want) || fmt.Sprint(gerr) != fmt.Sprint(werr) {
			t.Fatalf("list %d: got %s, %v\nwant %s, %v", i, got, gerr, want, werr)
		}
	}
}
