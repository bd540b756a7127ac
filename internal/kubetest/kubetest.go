// Package kubetest runs a real Kubernetes API server (etcd and
// kube-apiserver on loopback, token authentication, RBAC) for tests,
// through the repository's .ci/kube-apiserver script, which builds the
// server once and caches it.
package kubetest

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

// Server is a running API server.
type Server struct {
	// Dir holds the logs, the kubeconfig and the state.
	Dir string
	// Kubeconfig is the admin's kubeconfig file (group system:masters).
	Kubeconfig string
	// URL is the server's address, CA its certificate file.
	URL, CA string
	// Config and Client are the admin's.
	Config *rest.Config
	Client kubernetes.Interface
}

func repoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..")
}

// Start starts a server for the test and stops it at its end. It skips
// the test only when etcd is missing and cannot be installed here.
func Start(tb testing.TB) *Server {
	tb.Helper()
	if _, err := exec.LookPath("etcd"); err != nil {
		if _, aptErr := exec.LookPath("apt-get"); aptErr != nil || os.Geteuid() != 0 {
			tb.Skip("kubetest: etcd is not installed and cannot be installed here (apt-get install etcd-server)")
		}
		out, err := exec.Command("sh", "-c", "apt-get install -y -qq etcd-server || (apt-get update -qq && apt-get install -y -qq etcd-server)").CombinedOutput()
		if err != nil {
			tb.Skipf("kubetest: etcd is not installed and apt-get install etcd-server failed: %v\n%s", err, out)
		}
	}
	dir := tb.TempDir()
	script := filepath.Join(repoRoot(), ".ci", "kube-apiserver")
	cmd := exec.Command(script, "start", dir)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		_ = exec.Command(script, "stop", dir).Run()
		tb.Fatalf("kubetest: %s start: %v\n%s", script, err, out.String())
	}
	tb.Cleanup(func() {
		if err := exec.Command(script, "stop", dir).Run(); err != nil {
			tb.Errorf("kubetest: stop: %v", err)
		}
	})
	env, err := readEnv(filepath.Join(dir, "env"))
	if err != nil {
		tb.Fatal(err)
	}
	s := &Server{Dir: dir, Kubeconfig: env["KUBECONFIG"], URL: env["KUBE_APISERVER"], CA: env["KUBE_CA"]}
	s.Config, err = clientcmd.BuildConfigFromFlags("", s.Kubeconfig)
	if err != nil {
		tb.Fatal(err)
	}
	s.Client, err = kubernetes.NewForConfig(s.Config)
	if err != nil {
		tb.Fatal(err)
	}
	return s
}

func readEnv(path string) (map[string]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("kubetest: %w", err)
	}
	defer f.Close()
	env := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), "=")
		if ok {
			env[k] = strings.Trim(v, "'")
		}
	}
	return env, sc.Err()
}

// KubeconfigFor writes a kubeconfig for this server with the given bearer
// token and returns its path.
func (s *Server) KubeconfigFor(tb testing.TB, token string) string {
	tb.Helper()
	path := filepath.Join(tb.TempDir(), "kubeconfig")
	text := fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
  - name: test
    cluster: {server: %q, certificate-authority: %q}
users:
  - name: u
    user: {token: %q}
contexts:
  - name: test
    context: {cluster: test, user: u}
current-context: test
`, s.URL, s.CA, token)
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		tb.Fatal(err)
	}
	return path
}

// RestartAPIServer stops kube-apiserver (etcd keeps running), waits down
// seconds and starts it again with the same arguments: same address, same
// tokens, same data.
func (s *Server) RestartAPIServer(tb testing.TB, down time.Duration) {
	tb.Helper()
	pidFile := filepath.Join(s.Dir, "apiserver.pid")
	b, err := os.ReadFile(pidFile)
	if err != nil {
		tb.Fatal(err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		tb.Fatal(err)
	}
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil {
		tb.Fatal(err)
	}
	args := strings.Split(strings.TrimRight(string(raw), "\x00"), "\x00")
	if err := syscall.Kill(pid, syscall.SIGTERM); err != nil {
		tb.Fatal(err)
	}
	for i := 0; i < 100 && syscall.Kill(pid, 0) == nil; i++ {
		time.Sleep(100 * time.Millisecond)
	}
	time.Sleep(down)
	log, err := os.OpenFile(filepath.Join(s.Dir, "apiserver.log"), os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		tb.Fatal(err)
	}
	defer log.Close()
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Stdout, cmd.Stderr = log, log
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	go func() { _ = cmd.Wait() }()
	if err := os.WriteFile(pidFile, []byte(strconv.Itoa(cmd.Process.Pid)+"\n"), 0o644); err != nil {
		tb.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for {
		if _, err := s.Client.Discovery().RESTClient().Get().AbsPath("/readyz").DoRaw(ctx); err == nil {
			return
		}
		select {
		case <-ctx.Done():
			tb.Fatalf("kubetest: kube-apiserver not ready again after a restart")
		case <-time.After(200 * time.Millisecond):
		}
	}
}
