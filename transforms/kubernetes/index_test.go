package kubernetes

import (
	"context"
	"net/netip"
	"slices"
	"testing"
	"unsafe"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

var parseIPv4Cases = []string{
	"0.0.0.0", "10.0.3.17", "255.255.255.255", "1.2.3.4", "192.168.100.200", "10.0.0.1", "100.64.0.10",
	"", "1.2.3", "1.2.3.4.5", "256.1.1.1", "1.2.3.256", "01.2.3.4", "1.2.3.04", "1..2.3", ".1.2.3", "1.2.3.",
	"1.2.3.4 ", "a.b.c.d", "::ffff:1.2.3.4", "fd00::1", "1.2.3.4%eth0", "1000.1.1.1", "1.2.3.-4",
	"00.1.2.3", "1.2.3.00", "1.2.3.0x", "299.1.1.1", "1.2.3.4/", "1.2.3.4.", "9.9.9.9999", "1.2.3.4:80",
}

// checkParseIPv4 compares parseIPv4 with netip.ParseAddr on s.
func checkParseIPv4(t *testing.T, s string) {
	v, ok := parseIPv4(s)
	a, err := netip.ParseAddr(s)
	wantOK := err == nil && a.Is4() && a.Zone() == ""
	if ok != wantOK {
		t.Errorf("%q: ok = %v, want %v", s, ok, wantOK)
		return
	}
	if ok && v != v4Key(a) {
		t.Errorf("%q = %#x, want %#x", s, v, v4Key(a))
	}
}

func TestParseIPv4(t *testing.T) {
	for _, s := range parseIPv4Cases {
		checkParseIPv4(t, s)
	}
}

func FuzzParseIPv4(f *testing.F) {
	for _, s := range parseIPv4Cases {
		f.Add(s)
	}
	f.Fuzz(checkParseIPv4)
}

func BenchmarkParseIPv4(b *testing.B) {
	addrs := make([]string, 512)
	for i := range addrs {
		addrs[i] = benchIP(i * 97 % benchPods)
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, ok := parseIPv4(addrs[i&511]); !ok {
			b.Fatal(addrs[i&511])
		}
	}
}

func TestPodRanges(t *testing.T) {
	x := newIndex("c")
	for i, cidrs := range [][]string{
		{"10.0.0.0/24"},
		{"10.0.1.0/24"},   // adjacent: merged with the one above
		{"10.0.0.128/25"}, // inside another
		{"10.2.0.0/16", "fd00:10::/64"},
		{"fd00:10:0:0:8000::/65", "fd00:20::/64"},
		{"255.255.255.0/24"}, // ends at the last IPv4 address
		{"invalid"},
	} {
		n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: string(rune('a' + i))}, Spec: corev1.NodeSpec{PodCIDRs: cidrs}}
		x.setNode(n, false)
	}
	tests := []struct {
		addr string
		in   bool
	}{
		{"10.0.0.0", true}, {"10.0.0.255", true}, {"10.0.1.0", true}, {"10.0.1.255", true},
		{"10.0.2.0", false}, {"9.255.255.255", false}, {"10.1.255.255", false},
		{"10.2.0.0", true}, {"10.2.255.255", true}, {"10.3.0.0", false},
		{"255.255.255.255", true}, {"255.255.254.255", false},
		{"fd00:10::1", true}, {"fd00:10::ffff:ffff:ffff:ffff", true}, {"fd00:10:0:1::", false},
		{"fd00:20::5", true}, {"fd00:1f::5", false}, {"::", false}, {"0.0.0.0", false},
	}
	for _, tc := range tests {
		if got := x.inPodRangeLocked(netip.MustParseAddr(tc.addr)); got != tc.in {
			t.Errorf("%s in a pod range = %v, want %v (ranges %v)", tc.addr, got, tc.in, x.podRanges)
		}
	}
	if len(x.podRanges) != 5 {
		t.Errorf("ranges = %v, want 5 after merging", x.podRanges)
	}
}

// TestAddressForms: an address a source writes in another form than the
// canonical one (IPv4-mapped, upper-case IPv6, with a zone) finds its pod.
func TestAddressForms(t *testing.T) {
	tr, _ := startFake(t, Options{ClusterName: "c"},
		mkNode("node-a", "192.168.0.1", "10.0.0.0/16"),
		mkPod("shop", "v4", "10.0.3.17", nil, nil),
		mkPod("shop", "v6", "fd00::a:17", nil, nil))
	eventually(t, "synced", func() bool { return tr.Ready() == nil })
	for addr, want := range map[string]string{
		"10.0.3.17": "v4", "::ffff:10.0.3.17": "v4", "::FFFF:10.0.3.17": "v4",
		"fd00::a:17": "v6", "FD00::A:17": "v6", "fd00:0:0:0:0:0:a:17": "v6", "fd00::a:17%eth0": "v6",
	} {
		if got := process(tr, flowOf(addr, "")).Source.GetPodName(); got != want {
			t.Errorf("%s: pod %q, want %q", addr, got, want)
		}
	}
	if s := process(tr, flowOf("::ffff:10.0.9.9", "")).Source; s != nil {
		t.Errorf("an unknown address in a pod range: %v", s)
	}
}

// TestOwnerLater: a pod stored before its ReplicaSet or Job gets its
// Deployment or CronJob when they arrive, and loses it when they go; a
// ReplicaSet and a Job of one name in one namespace are not confused.
func TestOwnerLater(t *testing.T) {
	tr, cs := startFake(t, Options{ClusterName: "c"},
		mkPod("shop", "cart-x", "10.0.3.17", nil, ctrl("ReplicaSet", "cart")),
		mkPod("shop", "cart-job", "10.0.3.18", nil, ctrl("Job", "cart")))
	eventually(t, "synced", func() bool { return tr.Ready() == nil })
	ctx := context.Background()
	wl := func(ip string) []string { return workloads(process(tr, flowOf(ip, "")).Source) }
	if got := wl("10.0.3.17"); !slices.Equal(got, []string{"ReplicaSet/cart"}) {
		t.Fatalf("before the ReplicaSet: %v", got)
	}
	rs := &appsv1.ReplicaSet{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "cart", OwnerReferences: ctrl("Deployment", "cart-deploy")}}
	if _, err := cs.AppsV1().ReplicaSets("shop").Create(ctx, rs, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the Deployment", func() bool { return slices.Equal(wl("10.0.3.17"), []string{"Deployment/cart-deploy"}) })
	if got := wl("10.0.3.18"); !slices.Equal(got, []string{"Job/cart"}) {
		t.Errorf("the Job's pod took the ReplicaSet's Deployment: %v", got)
	}
	job := &batchv1.Job{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "cart", OwnerReferences: ctrl("CronJob", "nightly")}}
	if _, err := cs.BatchV1().Jobs("shop").Create(ctx, job, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the CronJob", func() bool { return slices.Equal(wl("10.0.3.18"), []string{"CronJob/nightly"}) })
	if got := wl("10.0.3.17"); !slices.Equal(got, []string{"Deployment/cart-deploy"}) {
		t.Errorf("the ReplicaSet's pod took the Job's CronJob: %v", got)
	}
	if err := cs.AppsV1().ReplicaSets("shop").Delete(ctx, "cart", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "back to the ReplicaSet", func() bool { return slices.Equal(wl("10.0.3.17"), []string{"ReplicaSet/cart"}) })
}

// TestEntriesImmutable: a change replaces an address's entry and never
// edits what an earlier entry refers to, and a flow's labels are its own
// copy, never the index's array.
func TestEntriesImmutable(t *testing.T) {
	x := newIndex("c")
	p := mkPod("shop", "a", "10.0.3.17", map[string]string{"app": "one"}, nil)
	x.setPod(p)
	e1 := *x.lookupLocked("10.0.3.17")
	labels := slices.Clone(e1.labels)
	p2 := p.DeepCopy()
	p2.Labels = map[string]string{"app": "two"}
	x.setPod(p2)
	if e2 := x.lookupLocked("10.0.3.17"); e2.labels[0] != "k8s:app=two" {
		t.Errorf("entry after the update: %+v", e2)
	}
	if !slices.Equal(e1.labels, labels) {
		t.Errorf("the old entry changed: %v", e1.labels)
	}
	tr := &Transform{idx: x}
	ep := tr.applyEndpoint(nil, x.lookupLocked("10.0.3.17"))
	ep.Labels[0] = "changed"
	if e := x.lookupLocked("10.0.3.17"); e.labels[0] != "k8s:app=two" {
		t.Error("a flow's labels share the index's array")
	}
}

// TestEntrySize: an entry is at most two cache lines, so a lookup reads
// the table's slot and at most two lines of the dense entries.
func TestEntrySize(t *testing.T) {
	if n := unsafe.Sizeof(entry{}); n > 128 {
		t.Errorf("entry is %d bytes, more than two cache lines", n)
	}
}
