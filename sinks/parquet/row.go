package parquet

import (
	"strings"
	"unsafe"

	flowpb "github.com/flowbus/flowbus/flow"
	"github.com/flowbus/flowbus/flow/enumname"
	"github.com/flowbus/flowbus/pipeline"
)

// Row is one row of a file: a flow or a LostEvent. The typed columns are
// the fields analysts filter and group by; export_json holds the whole
// event as a Hubble export line (observer.GetFlowsResponse, the `json`
// encoding without its newline), so that nothing of the flow is lost.
// A LostEvent row has the time, node_name, the lost_* columns and
// export_json; its flow columns are null. An unset field is null, not an
// empty string or 0 (ports, flags, labels and is_reply included).
type Row struct {
	// Time is plain, not delta-encoded: rows in ordered runs are not in
	// time order, and zstd shrinks plain timestamps (their high bytes
	// repeat) where bit-packed deltas that jump leave it nothing.
	Time     int64  `parquet:"time,timestamp(microsecond:utc)"`
	NodeName string `parquet:"node_name,optional,dict"`
	// Type is Hubble's flow Type (L3_L4, L7, SOCK, ...).
	Type             string   `parquet:"type,optional,dict"`
	Verdict          string   `parquet:"verdict,optional,dict"`
	DropReasonDesc   string   `parquet:"drop_reason_desc,optional,dict"`
	TrafficDirection string   `parquet:"traffic_direction,optional,dict"`
	IsReply          *bool    `parquet:"is_reply,optional"`
	IPVersion        string   `parquet:"ip_version,optional,dict"`
	SourceIP         string   `parquet:"source_ip,optional,dict"`
	DestinationIP    string   `parquet:"destination_ip,optional,dict"`
	Protocol         string   `parquet:"protocol,optional,dict"`
	SourcePort       int32    `parquet:"source_port,optional"`
	DestinationPort  int32    `parquet:"destination_port,optional"`
	TCPFlags         []string `parquet:"tcp_flags,optional,list" parquet-element:",dict"`

	SourceNamespace      string   `parquet:"source_namespace,optional,dict"`
	SourcePod            string   `parquet:"source_pod,optional,dict"`
	SourceWorkload       string   `parquet:"source_workload,optional,dict"`
	SourceLabels         []string `parquet:"source_labels,optional,list" parquet-element:",dict"`
	SourceService        string   `parquet:"source_service,optional,dict"`
	DestinationNamespace string   `parquet:"destination_namespace,optional,dict"`
	DestinationPod       string   `parquet:"destination_pod,optional,dict"`
	DestinationWorkload  string   `parquet:"destination_workload,optional,dict"`
	DestinationLabels    []string `parquet:"destination_labels,optional,list" parquet-element:",dict"`
	DestinationService   string   `parquet:"destination_service,optional,dict"`

	// L7Type is the L7 record's type (REQUEST, RESPONSE, SAMPLE),
	// L7Protocol the record's kind (dns, http, kafka).
	L7Type     string `parquet:"l7_type,optional,dict"`
	L7Protocol string `parquet:"l7_protocol,optional,dict"`
	// Summary is Hubble's one-line summary of the flow.
	Summary string `parquet:"summary,optional,dict"`

	LostSource    string `parquet:"lost_source,optional,dict"`
	NumEventsLost int64  `parquet:"num_events_lost,optional"`
	LostCPU       *int32 `parquet:"lost_cpu,optional"`

	ExportJSON []byte `parquet:"export_json,json"`

	// kind packs the keys a run orders a pair's rows by before the
	// summary (see compareKind); not a column.
	kind uint64
}

// kindOf packs a flow's type, verdict, traffic direction, protocol (an
// index of the Layer4 case) and destination port into one key that
// orders as they do, one after the other. Enum values beyond a byte
// share the byte's last value: they still order after the known ones.
func kindOf(typ, verdict, dir int32, proto uint8, dport int32) uint64 {
	b := func(v int32) uint64 { return uint64(min(max(v, 0), 255)) }
	return b(typ)<<56 | b(verdict)<<48 | b(dir)<<40 | uint64(proto)<<32 | uint64(uint32(dport))
}

// TCP flag names, in the order Hubble prints them.
var flagNames = [...]string{"SYN", "ACK", "FIN", "RST", "PSH", "URG", "ECE", "CWR", "NS"}

// rowFiller fills Rows from events without allocating once its arrays
// have grown: the lists of the rows (flags and labels) are slices of one
// array, and the *bool and *int32 fields point into the filler's own
// arrays. A list points into strs as it was when the list was filled:
// when strs grows into a new array, the lists before keep the old one.
//
// A row's strings are its own, copies in text: the flow's share storage
// the batch reuses once released (see pipeline.Batch.Alloc), and a row
// outlives Write. The filler's storage is reused by the next reset, which
// comes only once no one holds the job's rows (see job.hold).
type rowFiller struct {
	rows   []Row
	bools  []bool
	int32s []int32
	strs   []string // the rows' lists
	text   stringStore
}

// reset prepares n rows.
func (f *rowFiller) reset(n int) {
	if cap(f.rows) < n {
		f.rows = make([]Row, n)
		f.bools = make([]bool, n)
		f.int32s = make([]int32, n)
	}
	clear(f.strs)
	f.rows, f.bools, f.int32s, f.strs = f.rows[:n], f.bools[:n], f.int32s[:n], f.strs[:0]
	f.text.reset()
}

// fill sets row i from e; js is e's export JSON (referenced, not copied).
// The row's strings are copies (see rowFiller).
func (f *rowFiller) fill(i int, e *pipeline.Event, js []byte) {
	r := &f.rows[i]
	f.setFrom(r, i, e, js)
	r.ownStrings(&f.text)
}

// setFrom sets r, row i, from e; its strings are still e's.
func (f *rowFiller) setFrom(r *Row, i int, e *pipeline.Event, js []byte) {
	*r = Row{NodeName: e.NodeName, ExportJSON: js}
	if ts := e.Timestamp(); ts != nil {
		r.Time = ts.GetSeconds()*1_000_000 + int64(ts.GetNanos())/1000
	}
	if l := e.Lost; l != nil {
		r.LostSource = enumname.LostEventSource.Name(l.Source)
		r.NumEventsLost = int64(l.NumEventsLost)
		if l.Cpu != nil {
			f.int32s[i] = l.Cpu.GetValue()
			r.LostCPU = &f.int32s[i]
		}
		return
	}
	fl := e.Flow
	if fl == nil {
		return
	}
	if fl.NodeName != "" {
		r.NodeName = fl.NodeName
	}
	r.Type = enumName(enumname.FlowType, fl.Type)
	r.Verdict = enumName(enumname.Verdict, fl.Verdict)
	r.DropReasonDesc = enumName(enumname.DropReason, fl.DropReasonDesc)
	r.TrafficDirection = enumName(enumname.TrafficDirection, fl.TrafficDirection)
	if fl.IsReply != nil {
		f.bools[i] = fl.IsReply.GetValue()
		r.IsReply = &f.bools[i]
	}
	if ip := fl.IP; ip != nil {
		r.SourceIP, r.DestinationIP = ip.Source, ip.Destination
		r.IPVersion = enumName(enumname.IPVersion, ip.IpVersion)
	}
	var proto uint8
	if l4 := fl.L4; l4 != nil {
		switch p := l4.Protocol.(type) {
		case *flowpb.Layer4_TCP:
			r.Protocol, proto = "TCP", 1
			r.SourcePort, r.DestinationPort = int32(p.TCP.GetSourcePort()), int32(p.TCP.GetDestinationPort())
			if tf := p.TCP.GetFlags(); tf != nil {
				start := len(f.strs)
				for k, on := range [...]bool{tf.SYN, tf.ACK, tf.FIN, tf.RST, tf.PSH, tf.URG, tf.ECE, tf.CWR, tf.NS} {
					if on {
						f.strs = append(f.strs, flagNames[k])
					}
				}
				r.TCPFlags = f.list(start)
			}
		case *flowpb.Layer4_UDP:
			r.Protocol, proto = "UDP", 2
			r.SourcePort, r.DestinationPort = int32(p.UDP.GetSourcePort()), int32(p.UDP.GetDestinationPort())
		case *flowpb.Layer4_SCTP:
			r.Protocol, proto = "SCTP", 3
			r.SourcePort, r.DestinationPort = int32(p.SCTP.GetSourcePort()), int32(p.SCTP.GetDestinationPort())
		case *flowpb.Layer4_ICMPv4:
			r.Protocol, proto = "ICMPv4", 4
		case *flowpb.Layer4_ICMPv6:
			r.Protocol, proto = "ICMPv6", 5
		case *flowpb.Layer4_VRRP:
			r.Protocol, proto = "VRRP", 6
		case *flowpb.Layer4_IGMP:
			r.Protocol, proto = "IGMP", 7
		}
	}
	if s := fl.Source; s != nil {
		r.SourceNamespace, r.SourcePod = s.Namespace, s.PodName
		if len(s.Workloads) > 0 {
			r.SourceWorkload = s.Workloads[0].GetName()
		}
		r.SourceLabels = f.appendList(s.Labels)
	}
	if d := fl.Destination; d != nil {
		r.DestinationNamespace, r.DestinationPod = d.Namespace, d.PodName
		if len(d.Workloads) > 0 {
			r.DestinationWorkload = d.Workloads[0].GetName()
		}
		r.DestinationLabels = f.appendList(d.Labels)
	}
	r.SourceService = fl.SourceService.GetName()
	r.DestinationService = fl.DestinationService.GetName()
	if l7 := fl.L7; l7 != nil {
		r.L7Type = enumName(enumname.L7FlowType, l7.Type)
		switch l7.Record.(type) {
		case *flowpb.Layer7_Dns:
			r.L7Protocol = "dns"
		case *flowpb.Layer7_Http:
			r.L7Protocol = "http"
		case *flowpb.Layer7_Kafka:
			r.L7Protocol = "kafka"
		}
	}
	r.Summary = fl.Summary
	r.kind = kindOf(int32(fl.Type), int32(fl.Verdict), int32(fl.TrafficDirection), proto, r.DestinationPort)
}

// ownStrings replaces r's strings that come from an event with copies in
// t, the elements of its label lists included (in place: the lists are
// r's own). The others (enum, protocol and TCP flag names) are static.
func (r *Row) ownStrings(t *stringStore) {
	r.NodeName = t.copy(r.NodeName)
	r.SourceIP = t.copy(r.SourceIP)
	r.DestinationIP = t.copy(r.DestinationIP)
	r.SourceNamespace = t.copy(r.SourceNamespace)
	r.SourcePod = t.copy(r.SourcePod)
	r.SourceWorkload = t.copy(r.SourceWorkload)
	r.SourceService = t.copy(r.SourceService)
	r.DestinationNamespace = t.copy(r.DestinationNamespace)
	r.DestinationPod = t.copy(r.DestinationPod)
	r.DestinationWorkload = t.copy(r.DestinationWorkload)
	r.DestinationService = t.copy(r.DestinationService)
	r.Summary = t.copy(r.Summary)
	t.copyEach(r.SourceLabels)
	t.copyEach(r.DestinationLabels)
}

// list is strs from start on, or nil when empty (a null list).
func (f *rowFiller) list(start int) []string { return tail(f.strs, start) }

// appendList copies l into strs and returns the copy (nil when empty).
func (f *rowFiller) appendList(l []string) []string { return copyList(&f.strs, l) }

// copyList appends l to *store and returns the copy, nil when l is empty
// (a null list). The copy keeps the array it was made in when *store
// later grows into a new one. The strings are l's, not copies (see
// Row.ownStrings).
func copyList(store *[]string, l []string) []string {
	start := len(*store)
	*store = append(*store, l...)
	return tail(*store, start)
}

// tail is s[start:] without room to grow, or nil when empty.
func tail(s []string, start int) []string {
	if start == len(s) {
		return nil
	}
	return s[start:len(s):len(s)]
}

// enumName is v's name, or "" (null) for the zero value.
func enumName[E enumname.Enum](names enumname.Table[E], v E) string {
	if v == 0 {
		return ""
	}
	return names.Name(v)
}

// stringStore holds copies of strings in slabs of storeSlab bytes, filled
// in order, and kept for reuse. A copy keeps its bytes until reset makes
// them free for the next copies: its owner resets it only once no copy is
// in use. A string that does not fit in the rest of the slab being filled
// goes to the next slab, or to a new one; a slab is never replaced by a
// larger copy, as strings point into it.
//
// Equal strings copied since the last reset mostly share one copy: a
// batch's flows repeat a few hundred node, namespace, pod, workload and
// label names, and a copy each would take ten times the bytes (the
// generate source's flows: 560 bytes a row, 50 shared), which the runs
// hold and the Parquet writer reads again.
type stringStore struct {
	slabs [][]byte // slabs[:next] hold copies
	next  int
	cur   []byte // the slab being filled, slabs[next-1]
	used  int    // bytes of cur filled
	// seen holds the copies made since the last reset by their slot (see
	// seenSlot); a copy replaces the one before in its slot.
	seen [1 << seenBits]string
}

// seenBits is the number of bits of a slot of stringStore.seen.
const seenBits = 10

// seenSlot is s's slot in stringStore.seen: a hash of its length and its
// first and last 8 bytes (all of them when shorter), which tell most
// names, labels and addresses apart.
func seenSlot(s string) uint64 {
	n := len(s)
	var a, b uint64
	if n >= 8 {
		a, b = le64(s), le64(s[n-8:])
	} else {
		for i := range n {
			a = a<<8 | uint64(s[i])
		}
	}
	return ((a^uint64(n))*0x9e3779b97f4a7c15 ^ b) * 0xbf58476d1ce4e5b9 >> (64 - seenBits)
}

// le64 is s's first 8 bytes, little-endian (one load).
func le64(s string) uint64 {
	_ = s[7]
	return uint64(s[0]) | uint64(s[1])<<8 | uint64(s[2])<<16 | uint64(s[3])<<24 |
		uint64(s[4])<<32 | uint64(s[5])<<40 | uint64(s[6])<<48 | uint64(s[7])<<56
}

// Store sizes: a string longer than storeMax is copied on its own, for
// the collector to free with the last row that uses it.
const (
	storeSlab = 64 << 10
	storeMax  = storeSlab / 8
)

// copy returns a copy of s, in t's storage: the one made before when it
// is still in s's slot.
func (t *stringStore) copy(s string) string {
	if s == "" {
		return ""
	}
	seen := &t.seen[seenSlot(s)]
	if *seen == s {
		return *seen
	}
	u := t.used
	if len(s) > len(t.cur)-u {
		*seen = t.copyNext(s)
		return *seen
	}
	copy(t.cur[u:], s)
	t.used = u + len(s)
	*seen = unsafe.String(&t.cur[u], len(s))
	return *seen
}

// copyEach replaces each string of l with its copy.
func (t *stringStore) copyEach(l []string) {
	for k, s := range l {
		l[k] = t.copy(s)
	}
}

// copyNext copies a non-empty s that does not fit in the slab being
// filled.
func (t *stringStore) copyNext(s string) string {
	if len(s) > storeMax {
		return strings.Clone(s)
	}
	if t.next == len(t.slabs) {
		t.slabs = append(t.slabs, make([]byte, storeSlab))
	}
	t.cur, t.next = t.slabs[t.next], t.next+1
	t.used = copy(t.cur, s)
	return unsafe.String(&t.cur[0], len(s))
}

// reset makes all of t's storage free for new copies: the copies made
// before change as new ones are made.
func (t *stringStore) reset() {
	t.cur, t.used, t.next = nil, 0, 0
	clear(t.seen[:])
}
