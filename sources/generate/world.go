package generate

import (
	"fmt"
	"sort"
	"strings"
)

// The synthetic cluster: nodes, namespaces, workloads with their pods,
// services and the external hosts they talk to. Everything is built once
// per generator (pod names and addresses depend on the seed), so that
// flows are made from ready strings.

const clusterName = "prod"

// emitterVersion is the Hubble version the flows claim (Flow.emitter).
const emitterVersion = "1.20.2"

type node struct {
	name   string // absolute: cluster/node
	labels []string
}

// endpoint is one side of a flow: a pod, or an external host.
type endpoint struct {
	id, identity uint32
	namespace    string
	pod          string
	labels       []string
	workloads    []workload
	ipv4, ipv6   string
	mac          string
	node         *node
	ifindex      uint32
	ifname       string
	names        []string // FQDNs of an external host
	world        bool
}

type workload struct{ name, kind string }

type service struct{ name, namespace string }

// app is a workload and its pods.
type app struct {
	name, namespace, kind string
	port                  uint32 // the port it serves, 0 if none
	pods                  []*endpoint
	service               *service
	fqdn                  string // service DNS name
}

type world struct {
	nodes []*node
	apps  map[string]*app
	ext   []*endpoint         // external hosts (reserved:world)
	hosts map[*node]*endpoint // each node's own host (reserved:host)
}

// appSpec describes a workload of the synthetic cluster.
var appSpecs = []struct {
	name, namespace, kind string
	port                  uint32
	replicas              int
}{
	{"frontend", "shop", "Deployment", 8080, 3},
	{"catalog", "shop", "Deployment", 8080, 2},
	{"cart", "shop", "Deployment", 8080, 2},
	{"checkout", "shop", "Deployment", 8080, 2},
	{"redis", "shop", "StatefulSet", 6379, 1},
	{"payments-api", "payments", "Deployment", 8443, 2},
	{"postgres", "payments", "StatefulSet", 5432, 2},
	{"coredns", "kube-system", "Deployment", 53, 2},
	{"kafka", "streaming", "StatefulSet", 9092, 3},
	{"invoicer", "billing", "Deployment", 0, 2},
	{"prometheus", "monitoring", "StatefulSet", 9090, 1},
	{"amf", "telecom", "Deployment", 38412, 2},
	{"gnb-sim", "telecom", "Deployment", 0, 1},
}

var externalHosts = []struct {
	ipv4, ipv6 string
	names      []string
}{
	{"93.184.216.34", "2606:2800:220:1:248:1893:25c8:1946", []string{"example.com"}},
	{"54.187.174.169", "2600:1f14:436:7800::1", []string{"api.stripe.com"}},
	{"140.82.121.4", "2a0a:a440::4", []string{"github.com"}},
	{"151.101.1.69", "2a04:4e42::325", []string{"registry.npmjs.org", "npmjs.org"}},
	{"142.250.185.78", "2a00:1450:4001:82a::200e", []string{"storage.googleapis.com"}},
	{"52.94.236.248", "2600:9000:2002:d600::1", []string{"sqs.eu-west-1.amazonaws.com"}},
}

const hexDigits = "0123456789abcdef"

// podSuffix is the alphabet Kubernetes uses for generated name suffixes.
const podSuffix = "bcdfghjklmnpqrstvwxz2456789"

func newWorld(r *rng) *world {
	w := &world{apps: map[string]*app{}}
	zones := []string{"eu-west-1a", "eu-west-1b", "eu-west-1c"}
	for i := range 3 {
		host := fmt.Sprintf("worker-%d", i+1)
		w.nodes = append(w.nodes, &node{
			name: clusterName + "/" + host,
			labels: []string{
				"kubernetes.io/arch=amd64",
				"kubernetes.io/hostname=" + host,
				"kubernetes.io/os=linux",
				"node.kubernetes.io/instance-type=m6i.xlarge",
				"topology.kubernetes.io/region=eu-west-1",
				"topology.kubernetes.io/zone=" + zones[i],
			},
		})
	}
	var epID uint32 = 100
	var identity uint32 = 12000
	podIP := 10
	for _, spec := range appSpecs {
		a := &app{name: spec.name, namespace: spec.namespace, kind: spec.kind, port: spec.port}
		if spec.port != 0 {
			svcName := spec.name
			if spec.name == "coredns" {
				svcName = "kube-dns"
			}
			a.service = &service{name: svcName, namespace: spec.namespace}
			a.fqdn = svcName + "." + spec.namespace + ".svc.cluster.local"
		}
		identity += 1 + uint32(r.intn(40))
		rsHash := randString(r, 10, podSuffix[:20]+hexDigits[:6])
		labels := appLabels(spec.name, spec.namespace)
		for i := range spec.replicas {
			var pod string
			if spec.kind == "StatefulSet" {
				pod = fmt.Sprintf("%s-%d", spec.name, i)
			} else {
				pod = fmt.Sprintf("%s-%s-%s", spec.name, rsHash, randString(r, 5, podSuffix))
			}
			epID += 1 + uint32(r.intn(300))
			n := w.nodes[(len(w.apps)+i)%len(w.nodes)]
			nodeIdx := (len(w.apps) + i) % len(w.nodes)
			podIP++
			a.pods = append(a.pods, &endpoint{
				id:        epID,
				identity:  identity,
				namespace: spec.namespace,
				pod:       pod,
				labels:    labels,
				workloads: []workload{{spec.name, spec.kind}},
				ipv4:      fmt.Sprintf("10.244.%d.%d", nodeIdx+1, podIP),
				ipv6:      fmt.Sprintf("fd00:10:244:%d::%x", nodeIdx+1, podIP),
				mac:       randMAC(r),
				node:      n,
				ifindex:   uint32(10 + r.intn(200)),
				ifname:    "lxc" + randString(r, 12, hexDigits),
			})
		}
		w.apps[spec.name] = a
	}
	for _, h := range externalHosts {
		w.ext = append(w.ext, &endpoint{
			identity: 2,
			labels:   []string{"reserved:world"},
			ipv4:     h.ipv4,
			ipv6:     h.ipv6,
			names:    h.names,
			mac:      randMAC(r),
			world:    true,
		})
	}
	w.hosts = map[*node]*endpoint{}
	for i, n := range w.nodes {
		w.hosts[n] = &endpoint{
			id:       uint32(2000 + i),
			identity: 1,
			labels:   []string{"reserved:host"},
			ipv4:     fmt.Sprintf("10.0.1.%d", 17+i),
			ipv6:     fmt.Sprintf("fd00:10::%x", 17+i),
			mac:      randMAC(r),
			node:     n,
		}
	}
	return w
}

// appLabels returns a pod's sorted security labels, as Hubble writes them.
func appLabels(name, namespace string) []string {
	l := []string{
		"k8s:app=" + name,
		"k8s:app.kubernetes.io/part-of=" + namespace,
		"k8s:io.cilium.k8s.namespace.labels.kubernetes.io/metadata.name=" + namespace,
		"k8s:io.cilium.k8s.policy.cluster=" + clusterName,
		"k8s:io.cilium.k8s.policy.serviceaccount=" + name,
		"k8s:io.kubernetes.pod.namespace=" + namespace,
	}
	if name == "coredns" {
		l[0] = "k8s:k8s-app=kube-dns"
	}
	sort.Strings(l)
	return l
}

func randString(r *rng, n int, alphabet string) string {
	var b strings.Builder
	for range n {
		b.WriteByte(alphabet[r.intn(len(alphabet))])
	}
	return b.String()
}

func randMAC(r *rng) string {
	b := []byte{0x0a, 0x58, byte(r.intn(256)), byte(r.intn(256)), byte(r.intn(256)), byte(r.intn(256))}
	var s strings.Builder
	for i, x := range b {
		if i > 0 {
			s.WriteByte(':')
		}
		s.WriteByte(hexDigits[x>>4])
		s.WriteByte(hexDigits[x&15])
	}
	return s.String()
}

// L7 tables.

type httpRequest struct {
	method, path string
	code         uint32
	secure       bool // URL carries user info and a secret query parameter
}

var httpRequests = []httpRequest{
	{"GET", "/api/v1/products?page=2&per_page=50", 200, false},
	{"GET", "/api/v1/products/8812", 200, false},
	{"GET", "/api/v1/products/99999", 404, false},
	{"POST", "/api/v1/cart/items", 201, false},
	{"GET", "/api/v1/cart?session_token=7f3a9c2e41b84d0e", 200, false},
	{"DELETE", "/api/v1/cart/items/17", 204, false},
	{"POST", "/v1/charges?api_key=sk_live_51HqLyjWDarjtT1zdp7dc&amount=1299", 200, true},
	{"POST", "/v1/refunds?api_key=sk_live_51HqLyjWDarjtT1zdp7dc", 502, true},
	{"GET", "/healthz", 200, false},
	{"GET", "/metrics", 200, false},
	{"PUT", "/api/v1/orders/5521/status", 409, false},
	{"GET", "/admin/users?email=jane.doe%40example.com&password=hunter2", 403, true},
}

// httpLatenciesMS are the response latencies the generator picks from.
var httpLatenciesMS = []uint64{1, 2, 3, 5, 8, 12, 20, 35, 60, 250}

type dnsRecord struct {
	query    string
	qtype    string
	ips      []string
	cnames   []string
	ttl      uint32
	rcode    uint32
	rrtypes  []string
	external bool
}

var dnsRecords = []dnsRecord{
	{query: "catalog.shop.svc.cluster.local.", qtype: "A", ips: []string{"10.96.41.7"}, ttl: 30, rrtypes: []string{"A"}},
	{query: "postgres.payments.svc.cluster.local.", qtype: "A", ips: []string{"10.96.112.9"}, ttl: 30, rrtypes: []string{"A"}},
	{query: "kafka.streaming.svc.cluster.local.", qtype: "AAAA", ips: []string{"fd00:10:96::2c"}, ttl: 30, rrtypes: []string{"AAAA"}},
	{query: "api.stripe.com.", qtype: "A", ips: []string{"54.187.174.169", "54.187.216.72"}, ttl: 60, rrtypes: []string{"A"}, external: true},
	{query: "github.com.", qtype: "AAAA", ips: []string{"2a0a:a440::4"}, ttl: 300, rrtypes: []string{"AAAA"}, external: true},
	{query: "storage.googleapis.com.", qtype: "A", ips: []string{"142.250.185.78"}, cnames: []string{"storage.l.googleusercontent.com."}, ttl: 120, rrtypes: []string{"CNAME", "A"}, external: true},
	{query: "does-not-exist.shop.svc.cluster.local.", qtype: "A", ttl: 0, rcode: 3},
}

var kafkaTopics = []string{"orders", "payments", "invoices", "clickstream"}
var kafkaAPIKeys = []string{"produce", "fetch", "metadata"}

// kafkaCorrelations is the number of correlation ids with ready summaries.
const kafkaCorrelations = 64

// policies a policy verdict can name.
type policyInfo struct {
	name, namespace, kind string
	labels                []string
	revision              uint64
}

func newPolicy(name, namespace, kind string, revision uint64) policyInfo {
	labels := []string{
		"k8s:io.cilium.k8s.policy.derived-from=" + kind,
		"k8s:io.cilium.k8s.policy.name=" + name,
	}
	if namespace != "" {
		labels = append(labels, "k8s:io.cilium.k8s.policy.namespace="+namespace)
	}
	labels = append(labels, fmt.Sprintf("k8s:io.cilium.k8s.policy.uid=0b8c4a1e-%04x-4c2e-9f3a-5d7e%08x", revision, len(name)*7919))
	sort.Strings(labels)
	return policyInfo{name, namespace, kind, labels, revision}
}

var (
	allowPolicies = []policyInfo{
		newPolicy("allow-frontend-to-backends", "shop", "CiliumNetworkPolicy", 14),
		newPolicy("allow-payments", "payments", "NetworkPolicy", 3),
		newPolicy("allow-dns", "", "CiliumClusterwideNetworkPolicy", 7),
	}
	denyPolicies = []policyInfo{
		newPolicy("default-deny", "payments", "CiliumNetworkPolicy", 21),
		newPolicy("deny-external-egress", "", "CiliumClusterwideNetworkPolicy", 2),
	}
)
