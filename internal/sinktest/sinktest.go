// Package sinktest builds realistic events and configs for the broker
// sinks' tests and benchmarks.
package sinktest

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"testing"
	"time"
	"unsafe"

	"google.golang.org/protobuf/types/known/timestamppb"
	"gopkg.in/yaml.v3"

	flowpb "github.com/flowbus/flowbus/flow"
	"github.com/flowbus/flowbus/internal/cputime"
	"github.com/flowbus/flowbus/pipeline"
)

// Node parses a YAML mapping for a sink constructor (see pipeline.Make).
func Node(tb testing.TB, src string) *yaml.Node {
	tb.Helper()
	var doc yaml.Node
	if err := yaml.Unmarshal([]byte(src), &doc); err != nil {
		tb.Fatalf("yaml: %v", err)
	}
	return doc.Content[0]
}

// Build returns a pipeline.Build for a sink with the given encoding.
func Build(typ, encoding string) *pipeline.Build {
	return &pipeline.Build{
		Name: "test", Type: typ, NodeName: "node-1", Encoding: encoding,
		Log: slog.New(slog.NewTextHandler(io.Discard, nil)),
	}
}

var (
	namespaces = []string{"default", "kube-system", "payments", "monitoring"}
	verdicts   = []flowpb.Verdict{flowpb.Verdict_FORWARDED, flowpb.Verdict_FORWARDED, flowpb.Verdict_FORWARDED, flowpb.Verdict_DROPPED}
)

// Flow fills f with flow number i: even numbers are requests, odd numbers
// the replies of the same connection, so both directions appear.
func Flow(f *flowpb.Flow, i int) {
	conn := i / 2
	reply := i%2 == 1
	src := &flowpb.Endpoint{Namespace: namespaces[conn%len(namespaces)], PodName: fmt.Sprintf("client-%d", conn%17), Labels: []string{"k8s:app=client"}, Identity: 1000 + uint32(conn%17)}
	dst := &flowpb.Endpoint{Namespace: namespaces[(conn+1)%len(namespaces)], PodName: fmt.Sprintf("server-%d", conn%5), Labels: []string{"k8s:app=server"}, Identity: 2000 + uint32(conn%5)}
	ip := &flowpb.IP{Source: fmt.Sprintf("10.0.%d.%d", conn%7, conn%250+1), Destination: fmt.Sprintf("10.1.0.%d", conn%5+1), IpVersion: flowpb.IPVersion_IPv4}
	if conn%5 == 4 {
		ip = &flowpb.IP{Source: fmt.Sprintf("fd00::%x", conn%250+1), Destination: "fd00:1::5", IpVersion: flowpb.IPVersion_IPv6}
	}
	sport, dport := uint32(30000+conn%30000), uint32(443)
	var l4 *flowpb.Layer4
	if conn%3 == 2 {
		dport = 53
		l4 = &flowpb.Layer4{Protocol: &flowpb.Layer4_UDP{UDP: &flowpb.UDP{SourcePort: sport, DestinationPort: dport}}}
	} else {
		l4 = &flowpb.Layer4{Protocol: &flowpb.Layer4_TCP{TCP: &flowpb.TCP{SourcePort: sport, DestinationPort: dport, Flags: &flowpb.TCPFlags{ACK: true}}}}
	}
	if reply {
		src, dst = dst, src
		ip.Source, ip.Destination = ip.Destination, ip.Source
		switch p := l4.Protocol.(type) {
		case *flowpb.Layer4_TCP:
			p.TCP.SourcePort, p.TCP.DestinationPort = dport, sport
		case *flowpb.Layer4_UDP:
			p.UDP.SourcePort, p.UDP.DestinationPort = dport, sport
		}
	}
	*f = flowpb.Flow{
		Time:             timestamppb.New(time.Date(2026, 11, 24, 12, 0, 0, i*1000, time.UTC)),
		Uuid:             fmt.Sprintf("00000000-0000-4000-8000-%012d", i),
		Verdict:          verdicts[conn%len(verdicts)],
		IP:               ip,
		L4:               l4,
		Source:           src,
		Destination:      dst,
		Type:             flowpb.FlowType_L3_L4,
		NodeName:         "node-1",
		IsReply:          nil,
		TrafficDirection: flowpb.TrafficDirection_EGRESS,
		EventType:        &flowpb.CiliumEventType{Type: 4},
	}
	if reply {
		f.TrafficDirection = flowpb.TrafficDirection_INGRESS
	}
	if f.Verdict == flowpb.Verdict_DROPPED {
		f.DropReasonDesc = flowpb.DropReason_POLICY_DENIED
	}
}

// Batch returns a batch of n flows numbered from first; every 10th flow has
// sample rate 4.
func Batch(first, n int) *pipeline.Batch {
	b := pipeline.NewBatch()
	for i := first; i < first+n; i++ {
		e := b.Next()
		f := e.FlowStorage()
		Flow(f, i)
		e.Time = f.Time
		e.NodeName = f.NodeName
		if i%10 == 9 {
			e.SampleRate = 4
		}
	}
	return b
}

// AddLost appends a LostEvent to b; reported marks it as flowbus's own.
func AddLost(b *pipeline.Batch, n uint64, reported bool) {
	e := b.Next()
	e.Lost = &flowpb.LostEvent{Source: flowpb.LostEventSource_OBSERVER_EVENTS_QUEUE, NumEventsLost: n}
	e.Time = timestamppb.New(time.Date(2026, 11, 24, 12, 0, 1, 0, time.UTC))
	e.NodeName = "node-1"
	e.Reported = reported
}

// BenchWrite measures writes of generated flows in batches of batch: one
// benchmark op is one flow, so ns/op and allocs/op are per flow. Every flow
// gets a fresh uuid (made before the timer starts) so brokers that
// de-duplicate by id store each one. It reports flows/s and cpu-ns/flow,
// the process's CPU time per flow.
func BenchWrite(b *testing.B, batch int, write func(*pipeline.Batch) (int, error)) {
	bt := Batch(0, batch)
	defer bt.Release()
	uuids := make([]string, b.N+batch)
	for i := range uuids {
		uuids[i] = fmt.Sprintf("bench-%d-%016x", time.Now().UnixNano(), i)
	}
	b.ReportAllocs()
	b.ResetTimer()
	start, cpu := time.Now(), processCPU(b)
	for done := 0; done < b.N; done += batch {
		for i := range bt.Events {
			bt.Events[i].Flow.Uuid = uuids[done+i]
		}
		failed, err := write(bt)
		if failed != 0 || err != nil {
			b.Fatalf("failed=%d err=%v", failed, err)
		}
	}
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "flows/s")
	b.ReportMetric(float64(processCPU(b)-cpu)/float64(b.N), "cpu-ns/flow")
}

// processCPU returns the user and system CPU time of the whole process
// (an embedded broker's included) in nanoseconds: on a shared machine it
// varies far less than the wall clock.
func processCPU(*testing.B) int64 { return int64(cputime.Process()) }

// Stored returns a copy of s in b's own storage (Batch.Alloc), as a source
// that decodes into that storage makes its strings: the copy reads
// differently once b is released and its storage reused.
func Stored(b *pipeline.Batch, s string) string {
	if s == "" {
		return ""
	}
	buf := b.Alloc(len(s))
	copy(buf, s)
	return unsafe.String(&buf[0], len(buf))
}

// WriteNodes writes to s one batch per name, its one flow's node name in
// the batch's own storage (see Stored), releasing each batch after Write:
// a sink that keeps a node name without copying it then sees the name
// change when the next batch reuses the storage. It returns the names.
func WriteNodes(tb testing.TB, s pipeline.Sink, names ...string) []string {
	tb.Helper()
	for i, name := range names {
		b := Batch(i, 1)
		b.Events[0].NodeName = Stored(b, name)
		if failed, err := s.Write(context.Background(), b); failed != 0 || err != nil {
			tb.Fatalf("write %d: %d failed: %v", i, failed, err)
		}
		b.Release()
	}
	return names
}
