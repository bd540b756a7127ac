// Package testflow makes varied Hubble flows for tests and benchmarks.
package testflow

import (
	"fmt"
	"math/rand/v2"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	flowpb "github.com/flowbus/flowbus/flow"
)

// Random returns a varied flow: both IP versions, every L4 protocol,
// L7 DNS and HTTP, drops, endpoints with labels, workloads and services,
// and the rarer fields the filters read. Fields are sometimes left unset
// so that the "unset" rules are exercised.
func Random(r *rand.Rand) *flowpb.Flow {
	pick := func(xs ...string) string { return xs[r.IntN(len(xs))] }
	maybe := func() bool { return r.IntN(3) > 0 }
	f := &flowpb.Flow{
		Time:    timestamppb.New(time.Unix(1700000000+int64(r.IntN(1000)), 0)),
		Uuid:    pick("u-1", "u-2", "0b9c6c2e-6f3a-4f47-8f1a-6c8b1f0e2d11", ""),
		Verdict: flowpb.Verdict(r.IntN(7)),
	}
	if f.Verdict == flowpb.Verdict_DROPPED {
		f.DropReasonDesc = flowpb.DropReason([]int32{0, 130, 133, 181, 189}[r.IntN(5)])
	}
	if maybe() {
		v6 := r.IntN(3) == 0
		ip := &flowpb.IP{IpVersion: flowpb.IPVersion_IPv4}
		if v6 {
			ip.IpVersion = flowpb.IPVersion_IPv6
			ip.Source = pick("fd00::1", "fd00::a:2", "2001:db8::5", "::ffff:10.0.0.1")
			ip.Destination = pick("fd00::2", "2001:db8::1", "fe80::1")
		} else {
			ip.Source = pick("10.0.0.1", "10.0.1.7", "192.168.1.20", "1.1.1.1", "8.8.8.8")
			ip.Destination = pick("10.0.0.2", "10.96.0.10", "1.1.1.1", "172.16.5.4")
		}
		if r.IntN(4) == 0 {
			ip.SourceXlated = pick("10.0.9.9", "192.168.1.1")
		}
		ip.Encrypted = r.IntN(5) == 0
		f.IP = ip
	}
	switch r.IntN(8) {
	case 0, 1:
		tcp := &flowpb.TCP{SourcePort: uint32(30000 + r.IntN(5)), DestinationPort: []uint32{80, 443, 8080, 5432}[r.IntN(4)]}
		if maybe() {
			tcp.Flags = &flowpb.TCPFlags{SYN: r.IntN(2) == 0, ACK: r.IntN(2) == 0, FIN: r.IntN(5) == 0, RST: r.IntN(6) == 0, PSH: r.IntN(3) == 0, NS: r.IntN(9) == 0}
		}
		f.L4 = &flowpb.Layer4{Protocol: &flowpb.Layer4_TCP{TCP: tcp}}
	case 2, 3:
		f.L4 = &flowpb.Layer4{Protocol: &flowpb.Layer4_UDP{UDP: &flowpb.UDP{SourcePort: uint32(40000 + r.IntN(3)), DestinationPort: []uint32{53, 123, 8472}[r.IntN(3)]}}}
	case 4:
		f.L4 = &flowpb.Layer4{Protocol: &flowpb.Layer4_ICMPv4{ICMPv4: &flowpb.ICMPv4{Type: 8}}}
	case 5:
		f.L4 = &flowpb.Layer4{Protocol: &flowpb.Layer4_ICMPv6{ICMPv6: &flowpb.ICMPv6{Type: 128}}}
	case 6:
		f.L4 = &flowpb.Layer4{Protocol: &flowpb.Layer4_SCTP{SCTP: &flowpb.SCTP{SourcePort: 5000, DestinationPort: 36412}}}
	}
	endpoint := func() *flowpb.Endpoint {
		if r.IntN(5) == 0 {
			return nil
		}
		ns := pick("default", "kube-system", "prod", "")
		ep := &flowpb.Endpoint{
			Identity:  []uint32{1, 2, 9, 16777217, 12345}[r.IntN(5)],
			Namespace: ns,
			PodName:   pick("web-7d9f", "coredns-5d78", "api-0", "db-1", ""),
		}
		if maybe() {
			ep.ClusterName = pick("default", "c1", "c2")
		}
		n := r.IntN(4)
		for i := 0; i < n; i++ {
			ep.Labels = append(ep.Labels, pick("k8s:app=web", "k8s:app=api", "k8s:app=db", "k8s:tier=frontend",
				"k8s:io.kubernetes.pod.namespace="+ns, "reserved:host", "reserved:world", "container:app=web",
				"k8s:app.kubernetes.io/name=web", "cidr:10.0.0.0/8", "k8s:n=7"))
		}
		if r.IntN(3) == 0 {
			ep.Workloads = []*flowpb.Workload{{Name: pick("web", "api"), Kind: pick("Deployment", "StatefulSet")}}
		}
		return ep
	}
	f.Source, f.Destination = endpoint(), endpoint()
	if r.IntN(4) == 0 {
		f.SourceNames = []string{pick("api.example.com", "a.b.example.com", "example.com")}
	}
	if r.IntN(3) == 0 {
		f.DestinationNames = []string{pick("isovalent.com", "www.isovalent.com", "cilium.io", "API.example.com")}
	}
	f.TrafficDirection = flowpb.TrafficDirection(r.IntN(3))
	if maybe() {
		f.EventType = &flowpb.CiliumEventType{Type: []int32{1, 4, 5, 129}[r.IntN(4)], SubType: int32(r.IntN(4))}
	}
	if maybe() {
		f.IsReply = wrapperspb.Bool(r.IntN(2) == 0)
	}
	f.NodeName = pick("k8s1", "k8s2", "prod/node-1.example.com", "c1/k8s1", "")
	if r.IntN(3) == 0 {
		f.NodeLabels = []string{"kubernetes.io/hostname=" + pick("k8s1", "k8s2"), "zone=" + pick("a", "b")}
	}
	if r.IntN(3) == 0 {
		f.Interface = &flowpb.NetworkInterface{Index: uint32(1 + r.IntN(3)), Name: pick("eth0", "lxc12", "cilium_host")}
	}
	switch r.IntN(6) {
	case 0:
		f.L7 = &flowpb.Layer7{Type: flowpb.L7FlowType_REQUEST, Record: &flowpb.Layer7_Dns{Dns: &flowpb.DNS{Query: pick("isovalent.com.", "www.cilium.io.", "a.com.")}}}
	case 1:
		h := &flowpb.HTTP{Method: pick("GET", "post", "PUT"), Url: pick("http://api/v1/users?id=1", "/healthz", "http://h/a%20b", "https://x:8443/p", "%zz"),
			Headers: []*flowpb.HTTPHeader{{Key: "X-Env", Value: pick("prod", "dev")}}}
		typ := flowpb.L7FlowType_REQUEST
		if r.IntN(2) == 0 {
			typ = flowpb.L7FlowType_RESPONSE
			h.Code = []uint32{200, 201, 404, 409, 500, 503}[r.IntN(6)]
		}
		f.L7 = &flowpb.Layer7{Type: typ, Record: &flowpb.Layer7_Http{Http: h}}
	}
	if r.IntN(5) == 0 {
		f.TraceContext = &flowpb.TraceContext{Parent: &flowpb.TraceParent{TraceId: pick("t1", "t2")}}
	}
	if r.IntN(5) == 0 {
		f.IpTraceId = &flowpb.IPTraceID{TraceId: uint64(r.IntN(3)), IpOptionType: 136}
	}
	if r.IntN(4) == 0 {
		f.SourceService = &flowpb.Service{Namespace: pick("default", "kube-system"), Name: pick("api", "kube-dns")}
	}
	if r.IntN(4) == 0 {
		f.DestinationService = &flowpb.Service{Namespace: pick("default", "kube-system"), Name: pick("api", "kube-dns")}
	}
	f.Summary = fmt.Sprintf("flow %d", r.IntN(100))
	return f
}
