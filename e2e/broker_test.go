package e2e

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/flowbus/flowbus/internal/cputime"
)

// brokerEnv names the broker a re-executed test binary runs instead of
// its tests: the benchmarks of the consuming and producing paths start
// their broker in another process, so that the process's CPU time is
// flowbus's alone and the broker's is reported apart.
const brokerEnv = "FLOWBUS_E2E_BROKER"

// brokerProfileEnv, when set in a benchmark's environment, names the file
// the broker's process writes its CPU profile to, as -cpuprofile does for
// the benchmark's own process.
const brokerProfileEnv = "FLOWBUS_E2E_BROKER_CPUPROFILE"

// Brokers a child process runs.
const (
	brokerKfake          = "kfake"           // 1 broker, topic flows with 3 partitions, 4 MiB segments
	brokerKfakeBlackhole = "kfake-blackhole" // the same, acknowledging produce requests without storing
	brokerNATS           = "nats"            // nats-server with JetStream, memory and file store
)

// runBroker is the child's main: it starts the broker named in brokerEnv,
// writes its address as the first line of stdout, and runs until stdin
// closes.
func runBroker(kind string) int {
	var addr string
	var stop func()
	switch kind {
	case brokerKfake, brokerKfakeBlackhole:
		opts := []kfake.Opt{kfake.NumBrokers(1), kfake.Ports(0), kfake.SeedTopics(3, "flows"),
			kfake.BrokerConfigs(map[string]string{"log.segment.bytes": "4194304"})}
		if kind == brokerKfakeBlackhole {
			opts = append(opts, kfake.BlackholeProduce())
		}
		c, err := kfake.NewCluster(opts...)
		if err != nil {
			fmt.Fprintln(os.Stderr, "kfake:", err)
			return 1
		}
		addr, stop = c.ListenAddrs()[0], c.Close
	case brokerNATS:
		dir, err := os.MkdirTemp("", "flowbus-e2e-nats-")
		if err != nil {
			fmt.Fprintln(os.Stderr, "nats-server:", err)
			return 1
		}
		defer os.RemoveAll(dir)
		srv, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, NoLog: true, NoSigs: true, JetStream: true, StoreDir: dir})
		if err != nil {
			fmt.Fprintln(os.Stderr, "nats-server:", err)
			return 1
		}
		go srv.Start()
		if !srv.ReadyForConnections(10 * time.Second) {
			fmt.Fprintln(os.Stderr, "nats-server: not ready in 10s")
			return 1
		}
		addr, stop = srv.ClientURL(), func() { srv.Shutdown(); srv.WaitForShutdown() }
	default:
		fmt.Fprintf(os.Stderr, "%s=%q: want %s, %s or %s\n", brokerEnv, kind, brokerKfake, brokerKfakeBlackhole, brokerNATS)
		return 2
	}
	err := cputime.Profiled(brokerProfileEnv, os.Getenv(brokerProfileEnv), func() error {
		fmt.Println(addr)
		_, err := io.Copy(io.Discard, os.Stdin)
		stop()
		return err
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, "broker:", err)
		return 1
	}
	return 0
}

// broker is a broker running in a child process.
type broker struct {
	Addr string
	pid  int
}

// startBroker runs the broker kind in a child process (this test binary,
// re-executed) until the test ends.
func startBroker(tb testing.TB, kind string) *broker {
	tb.Helper()
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), brokerEnv+"="+kind)
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		tb.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		tb.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		tb.Fatalf("broker %s: %v", kind, err)
	}
	tb.Cleanup(func() {
		stdin.Close()
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		select {
		case err := <-done:
			if err != nil {
				tb.Errorf("broker %s: %v", kind, err)
			}
		case <-time.After(30 * time.Second):
			cmd.Process.Kill()
			<-done
			tb.Errorf("broker %s: still running 30s after its stdin closed; killed", kind)
		}
	})
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil {
		tb.Fatalf("broker %s: reading its address: %v", kind, err)
	}
	return &broker{Addr: strings.TrimSpace(line), pid: cmd.Process.Pid}
}

// CPUTime returns the user and system CPU time the broker's process used
// so far (at the kernel's clock-tick resolution, 10 ms).
func (b *broker) CPUTime(tb testing.TB) time.Duration {
	tb.Helper()
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", b.pid))
	if err != nil {
		tb.Fatalf("broker CPU time: %v", err)
	}
	// The command (field 2) is in parentheses and may hold spaces: the
	// fields are counted from the last ')'; utime and stime are fields 14
	// and 15.
	s := string(raw)
	fields := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(fields) < 13 {
		tb.Fatalf("broker CPU time: /proc/%d/stat: %d fields after the command", b.pid, len(fields))
	}
	var ticks int64
	for _, f := range fields[11:13] {
		n, err := strconv.ParseInt(f, 10, 64)
		if err != nil {
			tb.Fatalf("broker CPU time: /proc/%d/stat: %v", b.pid, err)
		}
		ticks += n
	}
	const clockTicks = 100 // USER_HZ, 100 on every Linux architecture Go supports
	return time.Duration(ticks) * time.Second / clockTicks
}
