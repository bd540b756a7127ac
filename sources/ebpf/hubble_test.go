//go:build linux

package ebpf

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/flowbus/flowbus/bpf/bpftest"
	flowpb "github.com/flowbus/flowbus/flow"
	"github.com/flowbus/flowbus/flow/flowjson"
)

// hubbleCLI returns the path of the hubble CLI that .ci/tools/build
// builds (and caches), or skips the test when it cannot be built here.
func hubbleCLI(t *testing.T) string {
	t.Helper()
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(filepath.Join(root, ".ci/tools/build"), "hubble")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Skipf("the hubble CLI cannot be built here (.ci/tools/build hubble: %v): %s", err, lastLines(stderr.String(), 5))
	}
	return strings.TrimSpace(string(out))
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return strings.Join(lines[max(len(lines)-n, 0):], "\n")
}

// Kernel flows written as Hubble export JSON read like Hubble's own in
// Hubble's printer: TCP and ICMP requests print `->` from the client,
// replies `<-` with the client still on the left, and drops print their
// Cilium reason (never "Success"), as `hubble observe` shows them.
func TestHubblePrintsKernelFlows(t *testing.T) {
	bpftest.RequireRoot(t)
	hubble := hubbleCLI(t)
	for _, hook := range hooks {
		t.Run(hook, func(t *testing.T) { testHubblePrints(t, hubble, hook) })
	}
}

func testHubblePrints(t *testing.T, hubble, hook string) {
	p := bpftest.NewPair(t)
	r := startSource(t, ifaceYAML(p, "aggregation: connection", "hook: "+hook))

	tcp := listenTCP(t, p, p.PeerIP)
	conn, err := net.DialTCP("tcp", nil, tcp)
	if err != nil {
		t.Fatal(err)
	}
	client := conn.LocalAddr().(*net.TCPAddr)
	conn.Close()
	if err := bpftest.Ping(p.PeerIP, 1); err != nil {
		t.Fatal(err)
	}
	if err := p.InNS(func() error {
		c, err := net.DialUDP("udp4", nil, &net.UDPAddr{IP: p.HostIP, Port: 9})
		if err != nil {
			return err
		}
		defer c.Close()
		_, err = c.Write([]byte("to a closed port"))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	spoofed := sendSpoofed(t, p)

	// Endpoints as Hubble prints them: address (and port), then the
	// security identity, unknown for kernel flows.
	ep := func(ip net.IP, port int) string {
		if port == 0 {
			return ip.String() + " (unknown)"
		}
		return net.JoinHostPort(ip.String(), fmt.Sprint(port)) + " (unknown)"
	}
	hostPort, peerPort := ep(p.HostIP, client.Port), ep(p.PeerIP, tcp.Port)
	cases := []struct {
		name  string
		match func(*flowpb.Flow) bool
		want  string // how the line hubble prints ends
	}{
		{"SYN", func(f *flowpb.Flow) bool {
			tc := f.GetL4().GetTCP()
			return tc.GetSourcePort() == uint32(client.Port) && tc.GetFlags().GetSYN() && !tc.GetFlags().GetACK()
		}, ": " + hostPort + " -> " + peerPort + " to-network FORWARDED (TCP Flags: SYN)"},
		{"SYN-ACK", func(f *flowpb.Flow) bool {
			tc := f.GetL4().GetTCP()
			return tc.GetDestinationPort() == uint32(client.Port) && tc.GetFlags().GetSYN() && tc.GetFlags().GetACK()
		}, ": " + hostPort + " <- " + peerPort + " from-network FORWARDED (TCP Flags: SYN, ACK)"},
		{"echo request", func(f *flowpb.Flow) bool {
			return f.GetL4().GetICMPv4() != nil && f.L4.GetICMPv4().Type == 8 && is(f, p.HostIP, p.PeerIP)
		}, ": " + ep(p.HostIP, 0) + " -> " + ep(p.PeerIP, 0) + " to-network FORWARDED (ICMPv4 EchoRequest)"},
		{"echo reply", func(f *flowpb.Flow) bool {
			return f.GetL4().GetICMPv4() != nil && f.L4.GetICMPv4().Type == 0 && is(f, p.PeerIP, p.HostIP)
		}, ": " + ep(p.HostIP, 0) + " <- " + ep(p.PeerIP, 0) + " from-network FORWARDED (ICMPv4 EchoReply)"},
		// Hubble leaves is_reply unset on drops (`<>`); an unknown reason
		// prints as its number.
		{"NO_SOCKET drop", func(f *flowpb.Flow) bool {
			return f.Verdict == flowpb.Verdict_DROPPED && is(f, p.PeerIP, p.HostIP) && f.GetL4().GetUDP().GetDestinationPort() == 9
		}, " <> " + ep(p.HostIP, 9) + " 255, 0 DROPPED (UDP)"},
		{"IP_RPFILTER drop", func(f *flowpb.Flow) bool {
			return f.Verdict == flowpb.Verdict_DROPPED && is(f, spoofed, p.HostIP)
		}, " <> " + ep(p.HostIP, 9) + " Invalid source ip DROPPED (UDP)"},
	}
	var file []byte
	for _, c := range cases {
		f := r.out.waitFlow(t, c.name, c.match)
		line, err := flowjson.AppendExport(nil, f, nil, f.NodeName, f.Time)
		if err != nil {
			t.Fatal(err)
		}
		file = append(append(file, line...), '\n')
	}
	path := filepath.Join(t.TempDir(), "flows.json")
	if err := os.WriteFile(path, file, 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(hubble, "observe", "--input-file", path, "-o", "compact", "--color", "never").CombinedOutput()
	if err != nil {
		t.Fatalf("hubble observe: %v\n%s", err, out)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	if len(lines) != len(cases) {
		t.Fatalf("hubble printed %d lines for %d flows:\n%s", len(lines), len(cases), out)
	}
	for i, c := range cases {
		if !strings.HasSuffix(lines[i], c.want) {
			t.Errorf("%s: hubble printed\n\t%s\nwant it to end with\n\t%s", c.name, lines[i], c.want)
		}
		if strings.Contains(lines[i], "Success") {
			t.Errorf("%s: hubble printed %q", c.name, lines[i])
		}
	}
}
