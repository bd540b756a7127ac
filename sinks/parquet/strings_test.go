package parquet_test

import (
	"context"
	"fmt"
	"path/filepath"
	"reflect"
	"testing"
	"time"
	"unsafe"

	pq "github.com/parquet-go/parquet-go"
	"google.golang.org/protobuf/types/known/timestamppb"

	flowpb "github.com/flowbus/flowbus/flow"
	"github.com/flowbus/flowbus/pipeline"
	pqsink "github.com/flowbus/flowbus/sinks/parquet"
)

// A source may keep its flows' strings in their batch's own storage
// (Batch.Alloc), which is reused once the batch is released. The sink
// holds rows past Write (queued for its writer, held in runs for
// ordering, copied out of jobs split between files or too sparse to hold)
// and writes the strings the flows had, though every byte of each
// batch's storage is overwritten once Write returned and the batch was
// released, as its next use does. Each case writes more batches than the
// sink has jobs, so that the sink reuses its own storage meanwhile too.
func TestRowsOwnTheirStrings(t *testing.T) {
	for _, tc := range []struct {
		name    string
		path    string // under the test's directory
		opts    string
		batch   int // flows per batch
		batches int
	}{
		{"held in runs", "flows", "", 512, 12},
		{"copied into runs", "flows", "", 16, 24},
		{"split between files", "ns={{ source.namespace }}", "", 512, 12},
		{"arrival order", "flows", "sort_rows: 0\n", 512, 12},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			lost := 0
			s := newSink(t, fmt.Sprintf("path: %s\n%s", filepath.Join(dir, tc.path), tc.opts), &lost)
			for k := range tc.batches {
				b := pipeline.NewBatch()
				var stored [][]byte
				for i := k * tc.batch; i < (k+1)*tc.batch; i++ {
					addStoredFlow(b, i, &stored)
				}
				if failed, err := s.Write(context.Background(), b); failed != 0 || err != nil {
					t.Fatalf("Write: failed %d, %v", failed, err)
				}
				b.Release()
				// What the storage's next use does.
				for _, buf := range stored {
					for i := range buf {
						buf[i] = '#'
					}
				}
			}
			if err := s.Close(context.Background()); err != nil {
				t.Fatal(err)
			}
			n := 0
			for _, name := range files(t, dir) {
				rows, err := pq.ReadFile[pqsink.Row](filepath.Join(dir, name))
				if err != nil {
					t.Fatal(err)
				}
				for _, r := range rows {
					i := int((r.Time - t0/1000) / 1000) // flow i is at t0 + i ms
					if got, want := stringsOfRow(&r), flowStrings(i); !reflect.DeepEqual(got, want) {
						t.Fatalf("%s: the row of flow %d holds\n%q\nwant\n%q", name, i, got, want)
					}
					n++
				}
			}
			if want := tc.batch * tc.batches; n != want || lost != 0 {
				t.Errorf("%d rows in the files, %d lost; want %d, 0", n, lost, want)
			}
		})
	}
}

// strs are the strings of a flow that have columns of their own.
type strs struct {
	node, srcIP, dstIP                              string
	srcNs, srcPod, srcWorkload, srcService          string
	dstNs, dstPod, dstWorkload, dstService, summary string
	srcLabels, dstLabels                            []string
}

// flowStrings are flow i's strings, most of them its own.
func flowStrings(i int) strs {
	return strs{
		node:  fmt.Sprintf("node-%d", i%3),
		srcIP: fmt.Sprintf("10.1.%d.%d", i/256%256, i%256), dstIP: fmt.Sprintf("10.2.%d.%d", i/256%256, i%256),
		srcNs: fmt.Sprintf("ns-%d", i%2), srcPod: fmt.Sprintf("client-%d", i), srcWorkload: fmt.Sprintf("client-wl-%d", i%7),
		srcService: fmt.Sprintf("client-svc-%d", i%5), srcLabels: []string{fmt.Sprintf("k8s:app=client-%d", i), "k8s:tier=front"},
		dstNs: fmt.Sprintf("ns-%d", i%3), dstPod: fmt.Sprintf("server-%d", i), dstWorkload: fmt.Sprintf("server-wl-%d", i%7),
		dstService: fmt.Sprintf("server-svc-%d", i%5), dstLabels: []string{fmt.Sprintf("k8s:app=server-%d", i)},
		summary: fmt.Sprintf("TCP Flags: SYN #%d", i),
	}
}

func stringsOfRow(r *pqsink.Row) strs {
	return strs{
		node: r.NodeName, srcIP: r.SourceIP, dstIP: r.DestinationIP,
		srcNs: r.SourceNamespace, srcPod: r.SourcePod, srcWorkload: r.SourceWorkload, srcService: r.SourceService, srcLabels: r.SourceLabels,
		dstNs: r.DestinationNamespace, dstPod: r.DestinationPod, dstWorkload: r.DestinationWorkload, dstService: r.DestinationService, dstLabels: r.DestinationLabels,
		summary: r.Summary,
	}
}

// addStoredFlow adds flow i to b, its strings (and its event's node name)
// in b's storage, as the hubble source stores them, and appends that
// storage to stored.
func addStoredFlow(b *pipeline.Batch, i int, stored *[][]byte) {
	own := func(s string) string {
		buf := b.Alloc(len(s))
		copy(buf, s)
		*stored = append(*stored, buf)
		return unsafe.String(unsafe.SliceData(buf), len(buf))
	}
	ownAll := func(l []string) []string {
		out := make([]string, len(l))
		for k, s := range l {
			out[k] = own(s)
		}
		return out
	}
	w := flowStrings(i)
	f := &flowpb.Flow{
		Time:     timestamppb.New(time.Unix(0, t0+int64(i)*int64(time.Millisecond))),
		NodeName: own(w.node),
		Verdict:  flowpb.Verdict_FORWARDED,
		Type:     flowpb.FlowType_L3_L4,
		IP:       &flowpb.IP{Source: own(w.srcIP), Destination: own(w.dstIP), IpVersion: flowpb.IPVersion_IPv4},
		L4: &flowpb.Layer4{Protocol: &flowpb.Layer4_TCP{TCP: &flowpb.TCP{SourcePort: 40000, DestinationPort: 8080,
			Flags: &flowpb.TCPFlags{SYN: true}}}},
		Source: &flowpb.Endpoint{Namespace: own(w.srcNs), PodName: own(w.srcPod), Labels: ownAll(w.srcLabels),
			Workloads: []*flowpb.Workload{{Name: own(w.srcWorkload), Kind: own("Deployment")}}},
		Destination: &flowpb.Endpoint{Namespace: own(w.dstNs), PodName: own(w.dstPod), Labels: ownAll(w.dstLabels),
			Workloads: []*flowpb.Workload{{Name: own(w.dstWorkload), Kind: own("Deployment")}}},
		SourceService:      &flowpb.Service{Name: own(w.srcService), Namespace: own(w.srcNs)},
		DestinationService: &flowpb.Service{Name: own(w.dstService), Namespace: own(w.dstNs)},
		Summary:            own(w.summary),
	}
	e := b.Next()
	e.Flow, e.Time = f, f.Time
	e.NodeName = own(w.node)
}
