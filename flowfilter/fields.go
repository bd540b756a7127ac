package flowfilter

// compile assembles the predicates of one FlowFilter; the predicates of
// each field are in fields_*.go.

import (
	flowpb "github.com/flowbus/flowbus/flow"
)

// compile turns one FlowFilter into its predicates. A field counts as set
// when its list is non-empty (Hubble tests `!= nil`, and decoded empty
// lists are nil).
func compile(ff *flowpb.FlowFilter) (*flowFilter, error) {
	c := &flowFilter{}
	add := func(p predicate, err error) error {
		if err != nil {
			return err
		}
		if p != nil {
			c.preds = append(c.preds, p)
		}
		return nil
	}
	steps := []func() error{
		func() error { return add(uuidFilter(ff.GetUuid())) },
		func() error {
			return add(ipFilter("source_ip", ff.GetSourceIp(), func(f *flowpb.Flow) string { return f.GetIP().GetSource() }))
		},
		func() error {
			return add(ipFilter("destination_ip", ff.GetDestinationIp(), func(f *flowpb.Flow) string { return f.GetIP().GetDestination() }))
		},
		func() error {
			return add(ipFilter("source_ip_xlated", ff.GetSourceIpXlated(), func(f *flowpb.Flow) string { return f.GetIP().GetSourceXlated() }))
		},
		func() error {
			return add(nameFilter("source_pod", ff.GetSourcePod(), func(f *flowpb.Flow) (string, string) {
				ep := f.GetSource()
				return ep.GetNamespace(), ep.GetPodName()
			}))
		},
		func() error {
			return add(nameFilter("destination_pod", ff.GetDestinationPod(), func(f *flowpb.Flow) (string, string) {
				ep := f.GetDestination()
				return ep.GetNamespace(), ep.GetPodName()
			}))
		},
		func() error {
			return add(nameFilter("source_service", ff.GetSourceService(), func(f *flowpb.Flow) (string, string) {
				s := f.GetSourceService()
				return s.GetNamespace(), s.GetName()
			}))
		},
		func() error {
			return add(nameFilter("destination_service", ff.GetDestinationService(), func(f *flowpb.Flow) (string, string) {
				s := f.GetDestinationService()
				return s.GetNamespace(), s.GetName()
			}))
		},
		func() error {
			return add(fqdnFilter("source_fqdn", ff.GetSourceFqdn(), (*flowpb.Flow).GetSourceNames))
		},
		func() error {
			return add(fqdnFilter("destination_fqdn", ff.GetDestinationFqdn(), (*flowpb.Flow).GetDestinationNames))
		},
		func() error {
			return add(labelFilter("source_label", ff.GetSourceLabel(), func(f *flowpb.Flow) []string { return f.GetSource().GetLabels() }))
		},
		func() error {
			return add(labelFilter("destination_label", ff.GetDestinationLabel(), func(f *flowpb.Flow) []string { return f.GetDestination().GetLabels() }))
		},
		func() error {
			return add(labelFilter("node_labels", ff.GetNodeLabels(), (*flowpb.Flow).GetNodeLabels))
		},
		func() error {
			return add(workloadFilter("source_workload", ff.GetSourceWorkload(), (*flowpb.Flow).GetSource))
		},
		func() error {
			return add(workloadFilter("destination_workload", ff.GetDestinationWorkload(), (*flowpb.Flow).GetDestination))
		},
		func() error {
			return add(clusterNameFilter("source_cluster_name", ff.GetSourceClusterName(), (*flowpb.Flow).GetSource))
		},
		func() error {
			return add(clusterNameFilter("destination_cluster_name", ff.GetDestinationClusterName(), (*flowpb.Flow).GetDestination))
		},
		func() error { return add(trafficDirectionFilter(ff.GetTrafficDirection())) },
		func() error { return add(verdictFilter(ff.GetVerdict())) },
		func() error { return add(dropReasonFilter(ff.GetDropReasonDesc())) },
		func() error { return add(interfaceFilter(ff.GetInterface())) },
		func() error { return add(eventTypeFilter(ff.GetEventType())) },
		func() error { return add(httpStatusFilter(ff)) },
		func() error { return add(httpMethodFilter(ff)) },
		func() error { return add(httpPathFilter(ff)) },
		func() error { return add(httpURLFilter(ff)) },
		func() error { return add(httpHeaderFilter(ff)) },
		func() error { return add(protocolFilter(ff.GetProtocol())) },
		func() error { return add(portFilter("source_port", ff.GetSourcePort(), true)) },
		func() error { return add(portFilter("destination_port", ff.GetDestinationPort(), false)) },
		func() error { return add(replyFilter(ff.GetReply())) },
		func() error { return add(dnsQueryFilter(ff.GetDnsQuery())) },
		func() error {
			return add(identityFilter(ff.GetSourceIdentity(), (*flowpb.Flow).GetSource))
		},
		func() error {
			return add(identityFilter(ff.GetDestinationIdentity(), (*flowpb.Flow).GetDestination))
		},
		func() error { return add(tcpFlagsFilter(ff.GetTcpFlags())) },
		func() error { return add(nodeNameFilter(ff.GetNodeName())) },
		func() error { return add(ipVersionFilter(ff.GetIpVersion())) },
		func() error { return add(traceIDFilter(ff.GetTraceId())) },
		func() error { return add(ipTraceIDFilter(ff.GetIpTraceId())) },
		func() error { return add(encryptedFilter(ff.GetEncrypted())) },
		func() error { return add(celFilter(ff.GetExperimental().GetCelExpression())) },
	}
	for _, step := range steps {
		if err := step(); err != nil {
			return nil, err
		}
	}
	return c, nil
}
