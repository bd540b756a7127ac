package codec

import (
	"fmt"
	"strconv"
	"unicode/utf8"

	flowpb "github.com/flowbus/flowbus/flow"
	"github.com/flowbus/flowbus/flow/enumname"
	"github.com/flowbus/flowbus/flow/flowjson"
	"github.com/flowbus/flowbus/pipeline"
	"github.com/flowbus/flowbus/pipeline/cli"
)

// OCSFVersion is the version of the Open Cybersecurity Schema Framework
// the ocsf encoding writes (metadata.version).
const OCSFVersion = "1.3.0"

// ContentTypeOCSF is the content type of the ocsf encoding: JSON.
const ContentTypeOCSF = ContentTypeJSON

// OCSF writes one OCSF Network Activity event (class_uid 4001) per flow, as
// a JSON line, and one OCSF Base Event (class_uid 0, activity Other) per
// LostEvent. docs/ocsf.md maps every field. The Kubernetes context, which
// OCSF 1.3 has no attributes for, goes under `unmapped`.
type OCSF struct {
	// RawData adds the Hubble export JSON of the event as raw_data.
	RawData bool
	// version is flowbus's version, for metadata.product.version.
	version string
}

// NewOCSF returns the ocsf encoder.
func NewOCSF(rawData bool) OCSF {
	return OCSF{RawData: rawData, version: cli.Version()}
}

// ContentType implements Encoder.
func (OCSF) ContentType() string { return ContentTypeOCSF }

// OCSF enumerations used by the encoding.
const (
	ocsfCategoryNetwork = 4
	ocsfClassNetwork    = 4001

	activityOpen    = 1
	activityClose   = 2
	activityReset   = 3
	activityTraffic = 6

	severityInformational = 1
	severityLow           = 2
	severityMedium        = 3
)

var activityNames = map[int]string{activityOpen: "Open", activityClose: "Close", activityReset: "Reset", activityTraffic: "Traffic"}

// Append implements Encoder.
func (o OCSF) Append(dst []byte, e *pipeline.Event) ([]byte, error) {
	start := len(dst)
	var err error
	switch {
	case e.Flow != nil:
		dst, err = o.appendFlow(dst, e)
	case e.Lost != nil:
		dst, err = o.appendLost(dst, e)
	default:
		return dst, fmt.Errorf("encode ocsf: empty event")
	}
	if err != nil {
		return dst[:start], fmt.Errorf("encode ocsf: %w", err)
	}
	return append(dst, '\n'), nil
}

// timeMillis is the event's time in OCSF's timestamp_t: milliseconds since
// the epoch.
func timeMillis(e *pipeline.Event) int64 {
	ts := e.Timestamp()
	if ts == nil {
		return 0
	}
	return ts.GetSeconds()*1000 + int64(ts.GetNanos())/1_000_000
}

func (o OCSF) appendFlow(dst []byte, e *pipeline.Event) ([]byte, error) {
	f := e.Flow
	act := activityTraffic
	var flags int
	proto, protoNum := "", 0
	var sport, dport uint32
	if l4 := f.L4; l4 != nil {
		switch p := l4.Protocol.(type) {
		case *flowpb.Layer4_TCP:
			proto, protoNum = "tcp", 6
			sport, dport = p.TCP.GetSourcePort(), p.TCP.GetDestinationPort()
			if tf := p.TCP.GetFlags(); tf != nil {
				for bit, on := range [...]bool{tf.FIN, tf.SYN, tf.RST, tf.PSH, tf.ACK, tf.URG, tf.ECE, tf.CWR, tf.NS} {
					if on {
						flags |= 1 << bit
					}
				}
				switch {
				case tf.RST:
					act = activityReset
				case tf.FIN:
					act = activityClose
				case tf.SYN && !tf.ACK:
					act = activityOpen
				}
			}
		case *flowpb.Layer4_UDP:
			proto, protoNum = "udp", 17
			sport, dport = p.UDP.GetSourcePort(), p.UDP.GetDestinationPort()
		case *flowpb.Layer4_SCTP:
			proto, protoNum = "sctp", 132
			sport, dport = p.SCTP.GetSourcePort(), p.SCTP.GetDestinationPort()
		case *flowpb.Layer4_ICMPv4:
			proto, protoNum = "icmp", 1
		case *flowpb.Layer4_ICMPv6:
			proto, protoNum = "ipv6-icmp", 58
		case *flowpb.Layer4_VRRP:
			proto, protoNum = "vrrp", 112
		case *flowpb.Layer4_IGMP:
			proto, protoNum = "igmp", 2
		}
	}
	actionID, action, dispID, disp, sev := verdictDisposition(f.Verdict)

	dst = append(dst, `{"activity_id":`...)
	dst = strconv.AppendInt(dst, int64(act), 10)
	dst = append(dst, `,"activity_name":"`...)
	dst = append(dst, activityNames[act]...)
	dst = append(dst, `","category_uid":4,"category_name":"Network Activity","class_uid":4001,"class_name":"Network Activity","type_uid":`...)
	dst = strconv.AppendInt(dst, int64(ocsfClassNetwork*100+act), 10)
	dst = append(dst, `,"type_name":"Network Activity: `...)
	dst = append(dst, activityNames[act]...)
	dst = append(dst, `","severity_id":`...)
	dst = strconv.AppendInt(dst, int64(sev), 10)
	dst = append(dst, `,"severity":"`...)
	dst = append(dst, severityName(sev)...)
	dst = append(dst, `","time":`...)
	dst = strconv.AppendInt(dst, timeMillis(e), 10)
	dst = append(dst, `,"action_id":`...)
	dst = strconv.AppendInt(dst, int64(actionID), 10)
	dst = append(dst, `,"action":"`...)
	dst = append(dst, action...)
	dst = append(dst, `","disposition_id":`...)
	dst = strconv.AppendInt(dst, int64(dispID), 10)
	dst = append(dst, `,"disposition":"`...)
	dst = append(dst, disp...)
	dst = append(dst, '"')
	if f.Summary != "" {
		dst = append(dst, `,"message":`...)
		dst = appendJSONString(dst, f.Summary)
	}
	dst = o.appendMetadata(dst, f.Uuid)

	src, dstEp := f.Source, f.Destination
	var srcIP, dstIP string
	if ip := f.IP; ip != nil {
		srcIP, dstIP = ip.Source, ip.Destination
	}
	dst = append(dst, `,"src_endpoint":`...)
	dst = appendEndpoint(dst, srcIP, sport, src, f.SourceNames, f.SourceService)
	dst = append(dst, `,"dst_endpoint":`...)
	dst = appendEndpoint(dst, dstIP, dport, dstEp, f.DestinationNames, f.DestinationService)

	dirID, dir := 0, "Unknown"
	switch f.TrafficDirection {
	case flowpb.TrafficDirection_INGRESS:
		dirID, dir = 1, "Inbound"
	case flowpb.TrafficDirection_EGRESS:
		dirID, dir = 2, "Outbound"
	}
	dst = append(dst, `,"connection_info":{"direction_id":`...)
	dst = strconv.AppendInt(dst, int64(dirID), 10)
	dst = append(dst, `,"direction":"`...)
	dst = append(dst, dir...)
	dst = append(dst, '"')
	if proto != "" {
		dst = append(dst, `,"protocol_name":"`...)
		dst = append(dst, proto...)
		dst = append(dst, `","protocol_num":`...)
		dst = strconv.AppendInt(dst, int64(protoNum), 10)
	}
	if ip := f.IP; ip != nil {
		switch ip.IpVersion {
		case flowpb.IPVersion_IPv4:
			dst = append(dst, `,"protocol_ver_id":4,"protocol_ver":"Internet Protocol version 4 (IPv4)"`...)
		case flowpb.IPVersion_IPv6:
			dst = append(dst, `,"protocol_ver_id":6,"protocol_ver":"Internet Protocol version 6 (IPv6)"`...)
		}
	}
	if proto == "tcp" {
		dst = append(dst, `,"tcp_flags":`...)
		dst = strconv.AppendInt(dst, int64(flags), 10)
	}
	dst = append(dst, '}')

	// unmapped: what OCSF 1.3 has no attribute for.
	dst = append(dst, `,"unmapped":{"node_name":`...)
	node := f.NodeName
	if node == "" {
		node = e.NodeName
	}
	dst = appendJSONString(dst, node)
	dst = append(dst, `,"verdict":"`...)
	dst = append(dst, enumname.Verdict.Name(f.Verdict)...)
	dst = append(dst, `","Type":"`...)
	dst = append(dst, enumname.FlowType.Name(f.Type)...)
	dst = append(dst, '"')
	if f.DropReasonDesc != 0 {
		dst = append(dst, `,"drop_reason_desc":"`...)
		dst = append(dst, enumname.DropReason.Name(f.DropReasonDesc)...)
		dst = append(dst, '"')
	}
	if f.TrafficDirection != 0 {
		dst = append(dst, `,"traffic_direction":"`...)
		dst = append(dst, enumname.TrafficDirection.Name(f.TrafficDirection)...)
		dst = append(dst, '"')
	}
	if f.IsReply != nil {
		dst = append(dst, `,"is_reply":`...)
		dst = strconv.AppendBool(dst, f.IsReply.Value)
	}
	if l7 := f.L7; l7 != nil {
		dst = append(dst, `,"l7_type":"`...)
		dst = append(dst, enumname.L7FlowType.Name(l7.Type)...)
		dst = append(dst, '"')
	}
	if src != nil {
		dst = append(dst, `,"source":`...)
		dst = appendK8s(dst, src)
	}
	if dstEp != nil {
		dst = append(dst, `,"destination":`...)
		dst = appendK8s(dst, dstEp)
	}
	dst = append(dst, '}')
	if o.RawData {
		var err error
		if dst, err = o.appendRaw(dst, e); err != nil {
			return dst, err
		}
	}
	return append(dst, '}'), nil
}

// verdictDisposition maps a Hubble verdict to OCSF's security control
// action and disposition, and the event's severity.
func verdictDisposition(v flowpb.Verdict) (actionID int, action string, dispID int, disp string, sev int) {
	switch v {
	case flowpb.Verdict_FORWARDED, flowpb.Verdict_REDIRECTED, flowpb.Verdict_TRACED, flowpb.Verdict_TRANSLATED:
		return 1, "Allowed", 1, "Allowed", severityInformational
	case flowpb.Verdict_AUDIT:
		return 1, "Allowed", 17, "Logged", severityInformational
	case flowpb.Verdict_DROPPED:
		return 2, "Denied", 2, "Blocked", severityLow
	case flowpb.Verdict_ERROR:
		return 2, "Denied", 27, "Error", severityLow
	}
	return 0, "Unknown", 0, "Unknown", severityInformational
}

func severityName(s int) string {
	switch s {
	case severityInformational:
		return "Informational"
	case severityLow:
		return "Low"
	case severityMedium:
		return "Medium"
	}
	return "Unknown"
}

func (o OCSF) appendMetadata(dst []byte, uid string) []byte {
	dst = append(dst, `,"metadata":{"version":"`+OCSFVersion+`","product":{"name":"flowbus","vendor_name":"flowbus","version":`...)
	dst = appendJSONString(dst, o.version)
	dst = append(dst, `},"profiles":["security_control"]`...)
	if uid != "" {
		dst = append(dst, `,"uid":`...)
		dst = appendJSONString(dst, uid)
	}
	return append(dst, '}')
}

// appendEndpoint writes an OCSF network_endpoint. OCSF requires one of
// ip, uid, name, hostname, svc_name, ...: an endpoint with none of them
// (a flow without an IP layer) gets name "unknown".
func appendEndpoint(dst []byte, ip string, port uint32, ep *flowpb.Endpoint, names []string, svc *flowpb.Service) []byte {
	dst = append(dst, '{')
	has := false
	sep := func() {
		if has {
			dst = append(dst, ',')
		}
		has = true
	}
	if ip != "" {
		sep()
		dst = append(dst, `"ip":`...)
		dst = appendJSONString(dst, ip)
	}
	if port != 0 {
		sep()
		dst = append(dst, `"port":`...)
		dst = strconv.AppendUint(dst, uint64(port), 10)
	}
	if len(names) > 0 {
		sep()
		dst = append(dst, `"hostname":`...)
		dst = appendJSONString(dst, names[0])
	}
	named := false
	if ep != nil {
		if ep.PodName != "" {
			sep()
			dst = append(dst, `"name":`...)
			dst = appendJSONString(dst, ep.PodName)
			named = true
		}
		if ep.Identity != 0 {
			sep()
			dst = append(dst, `"uid":"`...)
			dst = strconv.AppendUint(dst, uint64(ep.Identity), 10)
			dst = append(dst, '"')
			named = true
		}
	}
	if svc.GetName() != "" {
		sep()
		dst = append(dst, `"svc_name":`...)
		dst = appendJSONString(dst, svc.GetName())
		named = true
	}
	if ip == "" && len(names) == 0 && !named {
		sep()
		dst = append(dst, `"name":"unknown"`...)
	}
	return append(dst, '}')
}

// appendK8s writes an endpoint's Kubernetes context for `unmapped`.
func appendK8s(dst []byte, ep *flowpb.Endpoint) []byte {
	dst = append(dst, '{')
	first := true
	field := func(k string) {
		if !first {
			dst = append(dst, ',')
		}
		first = false
		dst = append(dst, '"')
		dst = append(dst, k...)
		dst = append(dst, `":`...)
	}
	if ep.ClusterName != "" {
		field("cluster_name")
		dst = appendJSONString(dst, ep.ClusterName)
	}
	if ep.Namespace != "" {
		field("namespace")
		dst = appendJSONString(dst, ep.Namespace)
	}
	if ep.PodName != "" {
		field("pod_name")
		dst = appendJSONString(dst, ep.PodName)
	}
	if ep.Identity != 0 {
		field("identity")
		dst = strconv.AppendUint(dst, uint64(ep.Identity), 10)
	}
	if len(ep.Labels) > 0 {
		field("labels")
		dst = append(dst, '[')
		for i, l := range ep.Labels {
			if i > 0 {
				dst = append(dst, ',')
			}
			dst = appendJSONString(dst, l)
		}
		dst = append(dst, ']')
	}
	if len(ep.Workloads) > 0 {
		field("workloads")
		dst = append(dst, '[')
		for i, w := range ep.Workloads {
			if i > 0 {
				dst = append(dst, ',')
			}
			dst = append(dst, `{"name":`...)
			dst = appendJSONString(dst, w.GetName())
			dst = append(dst, `,"kind":`...)
			dst = appendJSONString(dst, w.GetKind())
			dst = append(dst, '}')
		}
		dst = append(dst, ']')
	}
	return append(dst, '}')
}

// appendRaw writes raw_data: the Hubble export line, as a JSON string.
func (o OCSF) appendRaw(dst []byte, e *pipeline.Event) ([]byte, error) {
	raw, err := flowjson.AppendExport(dst, e.Flow, e.Lost, e.NodeName, e.Time)
	if err != nil {
		return dst, err
	}
	// Quote the export line in place: copy it out first.
	line := string(raw[len(dst):])
	dst = append(raw[:len(dst)], `,"raw_data":`...)
	return appendJSONString(dst, line), nil
}

func (o OCSF) appendLost(dst []byte, e *pipeline.Event) ([]byte, error) {
	l := e.Lost
	dst = append(dst, `{"activity_id":99,"activity_name":"Events Lost","category_uid":0,"category_name":"Uncategorized","class_uid":0,"class_name":"Base Event","type_uid":99,"type_name":"Base Event: Other","severity_id":3,"severity":"Medium","time":`...)
	dst = strconv.AppendInt(dst, timeMillis(e), 10)
	dst = append(dst, `,"count":`...)
	dst = strconv.AppendUint(dst, l.NumEventsLost, 10)
	dst = append(dst, `,"message":"`...)
	dst = strconv.AppendUint(dst, l.NumEventsLost, 10)
	dst = append(dst, ` events lost at `...)
	dst = append(dst, l.Source.String()...)
	dst = append(dst, '"')
	dst = o.appendMetadata(dst, "")
	dst = append(dst, `,"unmapped":{"node_name":`...)
	dst = appendJSONString(dst, e.NodeName)
	dst = append(dst, `,"lost_events":{"source":"`...)
	dst = append(dst, l.Source.String()...)
	dst = append(dst, `","num_events_lost":`...)
	dst = strconv.AppendUint(dst, l.NumEventsLost, 10)
	if l.Cpu != nil {
		dst = append(dst, `,"cpu":`...)
		dst = strconv.AppendInt(dst, int64(l.Cpu.Value), 10)
	}
	dst = append(dst, "}}"...)
	if o.RawData {
		var err error
		if dst, err = o.appendRaw(dst, e); err != nil {
			return dst, err
		}
	}
	return append(dst, '}'), nil
}

// appendJSONString appends s as a JSON string; invalid UTF-8 becomes
// U+FFFD.
func appendJSONString(dst []byte, s string) []byte {
	const hex = "0123456789abcdef"
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' {
				i++
				continue
			}
			dst = append(dst, s[start:i]...)
			switch c {
			case '"', '\\':
				dst = append(dst, '\\', c)
			case '\n':
				dst = append(dst, '\\', 'n')
			case '\t':
				dst = append(dst, '\\', 't')
			case '\r':
				dst = append(dst, '\\', 'r')
			default:
				dst = append(dst, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			dst = append(dst, s[start:i]...)
			dst = append(dst, `\ufffd`...)
			i++
			start = i
			continue
		}
		i += size
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}
