package randflow

import (
	"google.golang.org/protobuf/types/known/timestamppb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	flowpb "github.com/flowbus/flowbus/flow"
)

// L3L4 returns a flow as the kernel decoder makes it: addresses, ports,
// flags, verdict, no Kubernetes metadata (~470 bytes of JSON).
func L3L4() *flowpb.Flow {
	return &flowpb.Flow{
		Time:     &timestamppb.Timestamp{Seconds: 1764000000, Nanos: 123456789},
		Uuid:     "a4100bd7-9732-442e-bbc8-beb5c7212f44",
		Verdict:  flowpb.Verdict_FORWARDED,
		Ethernet: &flowpb.Ethernet{Source: "aa:bb:cc:dd:ee:01", Destination: "aa:bb:cc:dd:ee:02"},
		IP:       &flowpb.IP{Source: "10.244.1.17", Destination: "10.96.0.10", IpVersion: flowpb.IPVersion_IPv4},
		L4: &flowpb.Layer4{Protocol: &flowpb.Layer4_TCP{TCP: &flowpb.TCP{
			SourcePort: 43512, DestinationPort: 8080, Flags: &flowpb.TCPFlags{SYN: true, ACK: true}}}},
		Source:                &flowpb.Endpoint{Identity: 2},
		Destination:           &flowpb.Endpoint{Identity: 2},
		Type:                  flowpb.FlowType_L3_L4,
		NodeName:              "node-1",
		EventType:             &flowpb.CiliumEventType{Type: 4, SubType: 3},
		TrafficDirection:      flowpb.TrafficDirection_EGRESS,
		TraceObservationPoint: flowpb.TraceObservationPoint_TO_STACK,
		IsReply:               wrapperspb.Bool(false),
		Interface:             &flowpb.NetworkInterface{Index: 7, Name: "eth0"},
		SocketCookie:          20480,
		CgroupId:              4242,
		Summary:               "TCP Flags: SYN, ACK",
	}
}

// Enriched returns a Kubernetes-enriched L7 flow: endpoints with six
// labels and workloads each, services, node labels, an HTTP record with
// headers (~1.9 kB of JSON).
func Enriched() *flowpb.Flow {
	f := L3L4()
	ep := func(id, identity uint32, ns, pod, app string) *flowpb.Endpoint {
		return &flowpb.Endpoint{
			ID: id, Identity: identity, ClusterName: "prod-eu1", Namespace: ns, PodName: pod,
			Labels: []string{
				"k8s:app=" + app, "k8s:io.kubernetes.pod.namespace=" + ns,
				"k8s:io.cilium.k8s.policy.cluster=prod-eu1", "k8s:io.cilium.k8s.policy.serviceaccount=" + app,
				"k8s:version=v2", "k8s:tier=backend",
			},
			Workloads: []*flowpb.Workload{{Name: app, Kind: "Deployment"}},
		}
	}
	f.Source = ep(1711, 48213, "shop", "frontend-7d9c6b5f4-x2x9z", "frontend")
	f.Destination = ep(2301, 51002, "shop", "checkout-5b8d7c9f6-pq7rt", "checkout")
	f.Type = flowpb.FlowType_L7
	f.NodeName = "prod-eu1/node-1"
	f.NodeLabels = []string{"kubernetes.io/hostname=node-1", "topology.kubernetes.io/zone=eu1-a"}
	f.SourceService = &flowpb.Service{Name: "frontend", Namespace: "shop"}
	f.DestinationService = &flowpb.Service{Name: "checkout", Namespace: "shop"}
	f.L7 = &flowpb.Layer7{Type: flowpb.L7FlowType_RESPONSE, LatencyNs: 1834000, Record: &flowpb.Layer7_Http{Http: &flowpb.HTTP{
		Code: 200, Method: "POST", Url: "http://checkout.shop.svc:8080/api/v1/orders?id=42&currency=EUR", Protocol: "HTTP/1.1",
		Headers: []*flowpb.HTTPHeader{{Key: "content-type", Value: "application/json"}, {Key: "x-request-id", Value: "9f8e7d6c-5b4a"}},
	}}}
	f.TraceObservationPoint = flowpb.TraceObservationPoint_TO_ENDPOINT
	f.Summary = "HTTP/1.1 200 1ms (POST http://checkout.shop.svc:8080/api/v1/orders?id=42&currency=EUR)"
	f.EgressAllowedBy = []*flowpb.Policy{{Name: "allow-frontend", Namespace: "shop", Labels: []string{"k8s:io.cilium.k8s.policy.name=allow-frontend"}, Revision: 12, Kind: "CiliumNetworkPolicy"}}
	return f
}
