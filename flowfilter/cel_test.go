package flowfilter

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/google/cel-go/cel"
	"github.com/google/cel-go/common/types"

	flowpb "github.com/flowbus/flowbus/flow"
	"github.com/flowbus/flowbus/internal/testflow"
)

// fastExprs are expressions the allocation-free evaluator must handle.
var fastExprs = []string{
	`_flow.verdict == Verdict.DROPPED`,
	`_flow.verdict == flow.Verdict.DROPPED || (has(_flow.l4.TCP) && _flow.l4.TCP.destination_port == 443u)`,
	`_flow.verdict != Verdict.FORWARDED && _flow.verdict != 2`,
	`has(_flow.l4.UDP) && _flow.l4.UDP.destination_port == uint(53)`,
	`_flow.l4.TCP.destination_port >= 443u && _flow.l4.TCP.destination_port < 8081u`,
	`_flow.IP.source == '1.1.1.1' || _flow.IP.destination.startsWith('10.')`,
	`_flow.IP.source.endsWith('::1') || _flow.IP.source.contains('168')`,
	`_flow.IP.source.matches('^10\\.0\\.')`,
	`matches(_flow.IP.destination, '^fd00')`,
	`_flow.IP.ipVersion == IPVersion.IPv6`,
	`_flow.IP.encrypted`,
	`!_flow.IP.encrypted && has(_flow.IP)`,
	`_flow.source.namespace in ['kube-system', 'prod']`,
	`_flow.source.identity in [1u, 2u]`,
	`_flow.verdict in [Verdict.DROPPED, Verdict.ERROR]`,
	`'k8s:app=web' in _flow.source.labels`,
	`_flow.source.labels.exists(l, l.startsWith('reserved:'))`,
	`_flow.destination.labels.all(l, l.startsWith('k8s:'))`,
	`_flow.source.labels.exists(l, _flow.destination.labels.exists(m, l == m))`,
	`size(_flow.source.labels) > 1 && size(_flow.source.pod_name) >= 3`,
	`_flow.source.pod_name.size() == 0`,
	`has(_flow.l7.dns) && _flow.l7.dns.query.endsWith('.com.')`,
	`has(_flow.l7.http) && _flow.l7.http.code >= 400u && _flow.l7.http.method == 'GET'`,
	`_flow.l4.TCP.flags.SYN && !_flow.l4.TCP.flags.ACK`,
	`has(_flow.is_reply)`,
	`_flow.node_name.startsWith('prod/') || 'zone=a' in _flow.node_labels`,
	`_flow.event_type.type == 4 && _flow.event_type.sub_type >= 1`,
	`_flow.interface.name == 'eth0' && _flow.interface.index == 1u`,
	`_flow.traffic_direction == TrafficDirection.INGRESS`,
	`_flow.drop_reason_desc == DropReason.POLICY_DENIED`,
	`_flow.source_names.exists(n, n.matches('example\\.com$'))`,
	`_flow.trace_context.parent.trace_id == 't1'`,
	`_flow.ip_trace_id.trace_id > 0u`,
	`true`,
	`false || _flow.uuid < 'u-2'`,
	`_flow.source.cluster_name != '' && _flow.source.cluster_name <= 'c1'`,
	`_flow.IP.encrypted == false`,
	`_flow.IP.encrypted in [true]`,
	`_flow.destination_service.name == 'kube-dns'`,
}

// slowExprs are evaluated by cel-go itself.
var slowExprs = []string{
	`_flow.is_reply == true`,
	`_flow.time > timestamp('2023-11-14T22:20:00Z')`,
	`_flow.source.labels[0] == 'k8s:app=web'`,
	`_flow.source.identity + 1u > 2u`,
	`_flow.source.workloads.exists(w, w.kind == 'Deployment')`,
	`_flow.source.workloads.size() > 0`,
	`_flow.source.labels.exists_one(l, l == 'k8s:app=web')`,
}

// TestCELFastEqualsCELGo evaluates every expression on many varied flows
// with the fast evaluator and with cel-go as Hubble runs it (a map
// activation, results converted to bool), and requires equal results.
func TestCELFastEqualsCELGo(t *testing.T) {
	env, err := environment()
	if err != nil {
		t.Fatal(err)
	}
	r := rand.New(rand.NewPCG(1, 2))
	flows := make([]*flowpb.Flow, 3000)
	for i := range flows {
		flows[i] = testflow.Random(r)
	}
	flows = append(flows, &flowpb.Flow{})
	for _, src := range append(append([]string{}, fastExprs...), slowExprs...) {
		p, err := compileCEL(src)
		if err != nil {
			t.Fatalf("%s: %v", src, err)
		}
		isFast := indexOf(fastExprs, src) >= 0
		if (p.fast != nil) != isFast {
			t.Errorf("%s: fast path %v, want %v", src, p.fast != nil, isFast)
		}
		ast, iss := env.Compile(src)
		if iss.Err() != nil {
			t.Fatal(iss.Err())
		}
		ref, err := env.Program(ast)
		if err != nil {
			t.Fatal(err)
		}
		trues := 0
		for _, fl := range flows {
			out, _, err := ref.Eval(map[string]any{celVariable: fl})
			want := err == nil && out == types.True
			if got := p.eval(fl); got != want {
				t.Fatalf("%s on %v: got %v, cel-go %v (err %v)", src, fl, got, want, err)
			}
			if want {
				trues++
			}
		}
		if trues == 0 || trues == len(flows) {
			t.Logf("%s: constant over the corpus (%d/%d true)", src, trues, len(flows))
		}
	}
}

func indexOf(xs []string, s string) int {
	for i, x := range xs {
		if x == s {
			return i
		}
	}
	return -1
}

func TestCELRejects(t *testing.T) {
	for _, src := range []string{
		`_flow.verdict`,                        // not bool
		`_flow`,                                // not bool
		`dyn(_flow.verdict)`,                   // dyn, not bool
		`_flow.l4.TCP.destination_port == 443`, // uint vs int
		`_flow.unknown_field == 1`,
		`'a' +`,
		`something-invalid`, // Hubble's test cases
		``,
		// Quadratic over two lists of unbounded strings: too costly.
		`_flow.source.labels.exists(a, _flow.destination.labels.exists(b, _flow.source_names.exists(c, _flow.destination_names.exists(d, (a + b + c + d).matches('x')))))`,
	} {
		if _, err := compileCEL(src); err == nil {
			t.Errorf("%s: accepted", src)
		} else {
			t.Logf("%s: %v", src, err)
		}
	}
	long := make([]byte, CELMaxExpressionSize+10)
	for i := range long {
		long[i] = ' '
	}
	copy(long, "true")
	if _, err := compileCEL(string(long)); err == nil {
		t.Error("over-long expression accepted")
	}
}

var _ = cel.BoolType

// TestCELRuntimeCostLimit: expressions that pass the estimate (lists of
// at most celMaxListSize) but meet a flow with thousands of labels stop at
// CELMaxRuntimeCost and do not match, on the fast path and on cel-go's.
func TestCELRuntimeCostLimit(t *testing.T) {
	labels := func(prefix string, n int) []string {
		out := make([]string, n)
		for i := range out {
			out[i] = fmt.Sprintf("k8s:%s%d=v", prefix, i)
		}
		return out
	}
	big := func(n int) *flowpb.Flow {
		src, dst := labels("a", n), labels("b", n)
		dst[n-1] = src[n-1] // one common label, the last pair visited
		return &flowpb.Flow{Source: &flowpb.Endpoint{Labels: src}, Destination: &flowpb.Endpoint{Labels: dst}}
	}
	small := big(50)
	for _, tc := range []struct {
		expr string
		fast bool
		n    int
	}{
		{`_flow.source.labels.exists(a, _flow.destination.labels.exists(b, a == b))`, true, 20000},
		{`_flow.source.labels.exists(a, a in _flow.destination.labels)`, true, 20000},
		{`_flow.source.labels.exists(a, _flow.destination.labels.exists_one(b, a == b))`, false, 5000},
	} {
		p, err := compileCEL(tc.expr)
		if err != nil {
			t.Fatalf("%s: %v", tc.expr, err)
		}
		if (p.fast != nil) != tc.fast {
			t.Fatalf("%s: fast path %v, want %v", tc.expr, p.fast != nil, tc.fast)
		}
		if !p.eval(small) {
			t.Errorf("%s: no match on a small flow", tc.expr)
		}
		before := CELCostExceeded()
		if p.eval(big(tc.n)) {
			t.Errorf("%s: matched a flow of %d labels past the cost limit", tc.expr, tc.n)
		}
		if got := CELCostExceeded() - before; got != 1 {
			t.Errorf("%s: %d flows counted over the limit, want 1", tc.expr, got)
		}
		if !p.eval(small) {
			t.Errorf("%s: no match on a small flow after a costly one", tc.expr)
		}
	}
	// cel-go runs under a deadline only what can grow with the flow.
	for expr, want := range map[string]bool{
		`_flow.is_reply == true`:                                   false,
		`_flow.time > timestamp('2023-11-14T22:20:00Z')`:           false,
		`_flow.source.workloads.exists(w, w.kind == 'Deployment')`: true,
	} {
		if p, err := compileCEL(expr); err != nil || p.bounded != want {
			t.Errorf("%s: bounded %v, want %v (%v)", expr, p != nil && p.bounded, want, err)
		}
	}
}
