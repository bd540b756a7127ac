package deploy

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/flowbus/flowbus/bpf/bpftest"
)

// manifest is deploy/kubernetes/flowbus.yaml, rendered from the chart with
// its defaults (a CI step checks that it is fresh).
const manifest = "kubernetes/flowbus.yaml"

// probe is an httpGet probe of the DaemonSet's container, its port
// resolved to a number.
type probe struct {
	path                string
	port                int
	initialDelaySeconds int
	periodSeconds       int
	failureThreshold    int
}

// daemonSet is what the test takes from the rendered manifest.
type daemonSet struct {
	pipeline             string            // the ConfigMap's pipeline.yaml
	args                 []string          // the container's arguments
	fieldEnv             map[string]string // env from the downward API: name -> fieldPath
	liveness, readiness  probe
	hostNetwork          bool
	capabilities         []string
	gracePeriodSeconds   int
	configPath           string
	metricsContainerPort int
}

func loadDaemonSet(t *testing.T) daemonSet {
	t.Helper()
	raw, err := os.ReadFile(manifest)
	if err != nil {
		t.Fatal(err)
	}
	var ds daemonSet
	var foundCM, foundDS bool
	dec := yaml.NewDecoder(bytes.NewReader(raw))
	for {
		var obj struct {
			Kind string `yaml:"kind"`
			Data map[string]string
			Spec struct {
				Template struct {
					Spec struct {
						HostNetwork                   bool `yaml:"hostNetwork"`
						TerminationGracePeriodSeconds int  `yaml:"terminationGracePeriodSeconds"`
						Containers                    []struct {
							Name  string   `yaml:"name"`
							Args  []string `yaml:"args"`
							Ports []struct {
								Name          string `yaml:"name"`
								ContainerPort int    `yaml:"containerPort"`
							} `yaml:"ports"`
							Env []struct {
								Name      string `yaml:"name"`
								ValueFrom struct {
									FieldRef struct {
										FieldPath string `yaml:"fieldPath"`
									} `yaml:"fieldRef"`
								} `yaml:"valueFrom"`
							} `yaml:"env"`
							LivenessProbe   probeSpec `yaml:"livenessProbe"`
							ReadinessProbe  probeSpec `yaml:"readinessProbe"`
							SecurityContext struct {
								Privileged   bool `yaml:"privileged"`
								Capabilities struct {
									Add  []string `yaml:"add"`
									Drop []string `yaml:"drop"`
								} `yaml:"capabilities"`
							} `yaml:"securityContext"`
							VolumeMounts []struct {
								Name      string `yaml:"name"`
								MountPath string `yaml:"mountPath"`
								SubPath   string `yaml:"subPath"`
							} `yaml:"volumeMounts"`
						} `yaml:"containers"`
					} `yaml:"spec"`
				} `yaml:"template"`
			} `yaml:"spec"`
		}
		if err := dec.Decode(&obj); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatalf("%s: %v", manifest, err)
		}
		switch obj.Kind {
		case "ConfigMap":
			foundCM = true
			ds.pipeline = obj.Data["pipeline.yaml"]
		case "DaemonSet":
			foundDS = true
			ps := obj.Spec.Template.Spec
			ds.hostNetwork = ps.HostNetwork
			ds.gracePeriodSeconds = ps.TerminationGracePeriodSeconds
			if len(ps.Containers) != 1 {
				t.Fatalf("%s: %d containers, want 1", manifest, len(ps.Containers))
			}
			c := ps.Containers[0]
			ds.args = c.Args
			ports := map[string]int{}
			for _, p := range c.Ports {
				ports[p.Name] = p.ContainerPort
			}
			ds.metricsContainerPort = ports["metrics"]
			ds.fieldEnv = map[string]string{}
			for _, e := range c.Env {
				if e.ValueFrom.FieldRef.FieldPath != "" {
					ds.fieldEnv[e.Name] = e.ValueFrom.FieldRef.FieldPath
				}
			}
			ds.liveness = c.LivenessProbe.resolve(t, ports)
			ds.readiness = c.ReadinessProbe.resolve(t, ports)
			if c.SecurityContext.Privileged {
				t.Errorf("%s: the container is privileged", manifest)
			}
			if strings.Join(c.SecurityContext.Capabilities.Drop, ",") != "ALL" {
				t.Errorf("%s: capabilities dropped %v, want [ALL]", manifest, c.SecurityContext.Capabilities.Drop)
			}
			ds.capabilities = c.SecurityContext.Capabilities.Add
			for _, m := range c.VolumeMounts {
				if m.SubPath == "pipeline.yaml" {
					ds.configPath = m.MountPath
				}
			}
		}
	}
	if !foundCM || !foundDS || ds.pipeline == "" {
		t.Fatalf("%s: want a ConfigMap with pipeline.yaml and a DaemonSet (found ConfigMap %v, DaemonSet %v)", manifest, foundCM, foundDS)
	}
	return ds
}

type probeSpec struct {
	HTTPGet struct {
		Path string `yaml:"path"`
		Port any    `yaml:"port"`
	} `yaml:"httpGet"`
	InitialDelaySeconds int `yaml:"initialDelaySeconds"`
	PeriodSeconds       int `yaml:"periodSeconds"`
	FailureThreshold    int `yaml:"failureThreshold"`
}

func (p probeSpec) resolve(t *testing.T, ports map[string]int) probe {
	t.Helper()
	r := probe{path: p.HTTPGet.Path, initialDelaySeconds: p.InitialDelaySeconds, periodSeconds: p.PeriodSeconds, failureThreshold: p.FailureThreshold}
	switch v := p.HTTPGet.Port.(type) {
	case int:
		r.port = v
	case string:
		r.port = ports[v]
	}
	if r.path == "" || r.port == 0 {
		t.Fatalf("%s: probe %+v: want an httpGet probe with a path and a known port", manifest, p)
	}
	if r.periodSeconds == 0 {
		r.periodSeconds = 10 // Kubernetes' defaults
	}
	if r.failureThreshold == 0 {
		r.failureThreshold = 3
	}
	return r
}

// The manifest asks for what the BPF pipeline needs and no more.
func TestDaemonSetShape(t *testing.T) {
	ds := loadDaemonSet(t)
	if !ds.hostNetwork {
		t.Error("the DaemonSet is not on the host network: the BPF programs would watch the pod's interface only")
	}
	if got := strings.Join(ds.capabilities, ","); got != "BPF,NET_ADMIN,PERFMON" {
		t.Errorf("capabilities added: %s, want BPF,NET_ADMIN,PERFMON", got)
	}
	if ds.fieldEnv["NODE_NAME"] != "spec.nodeName" {
		t.Errorf("NODE_NAME comes from %q, want the downward API's spec.nodeName", ds.fieldEnv["NODE_NAME"])
	}
	if ds.liveness.path != "/healthz" || ds.readiness.path != "/readyz" {
		t.Errorf("probes: liveness %s, readiness %s; want /healthz and /readyz", ds.liveness.path, ds.readiness.path)
	}
	if ds.liveness.port != ds.metricsContainerPort || ds.readiness.port != ds.metricsContainerPort {
		t.Errorf("probes on ports %d and %d, metrics port %d", ds.liveness.port, ds.readiness.port, ds.metricsContainerPort)
	}
	if ds.metricsContainerPort == 9965 {
		t.Error("metrics on 9965, the port of Cilium's Hubble metrics on the same host network")
	}
	if !strings.Contains(ds.pipeline, `listen: ":`+strconv.Itoa(ds.metricsContainerPort)+`"`) {
		t.Errorf("the pipeline does not listen on the container's metrics port %d:\n%s", ds.metricsContainerPort, ds.pipeline)
	}
}

// TestProbesAnswer runs the binary with the chart's default pipeline and the
// container's arguments and environment, on a network namespace that stands
// for the node (hostNetwork: the pipeline's BPF programs watch its
// interfaces), and checks that the probes answer as the kubelet expects:
// /healthz and /readyz 200 on the metrics port before the kubelet would give
// up, flows of the namespace's traffic on stdout, and a drained exit 0 on
// SIGTERM within the pod's grace period.
func TestProbesAnswer(t *testing.T) {
	bpftest.RequireRoot(t)
	ds := loadDaemonSet(t)

	dir := t.TempDir()
	bin := filepath.Join(dir, "flowbus")
	build := exec.Command("go", "build", "-o", bin, ".")
	build.Dir = ".."
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	config := filepath.Join(dir, "pipeline.yaml")
	if err := os.WriteFile(config, []byte(ds.pipeline), 0o644); err != nil {
		t.Fatal(err)
	}
	args := make([]string, 0, len(ds.args))
	for _, a := range ds.args {
		if ds.configPath != "" {
			a = strings.ReplaceAll(a, ds.configPath, config)
		}
		args = append(args, a)
	}
	if strings.Join(args, " ") == strings.Join(ds.args, " ") {
		t.Fatalf("the container's args %q do not name the pipeline's mount %s", ds.args, ds.configPath)
	}

	node := bpftest.NewPair(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	cmd := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", node.NS, bin}, args...)...)
	cmd.Env = append(os.Environ(), "NODE_NAME=node-a", "POD_NAME=flowbus-x1", "POD_NAMESPACE=flowbus")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	lines := make(chan string, 1024)
	go func() {
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			select {
			case lines <- sc.Text():
			default:
			}
		}
		exited <- cmd.Wait()
	}()

	// The kubelet restarts the container when liveness fails
	// failureThreshold times after initialDelaySeconds, and keeps it out of
	// the Service until readiness passes: both must pass in that window.
	get := func(p probe) (int, string, error) {
		var conn net.Conn
		err := node.InNS(func() error {
			var err error
			conn, err = net.DialTimeout("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(p.port)), time.Second)
			return err
		})
		if err != nil {
			return 0, "", err
		}
		c := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{
			DialContext: func(context.Context, string, string) (net.Conn, error) { return conn, nil },
		}}
		resp, err := c.Get("http://node" + p.path)
		if err != nil {
			return 0, "", err
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body), nil
	}
	for _, p := range []probe{ds.liveness, ds.readiness} {
		window := time.Duration(p.initialDelaySeconds+p.periodSeconds*p.failureThreshold) * time.Second
		deadline := time.Now().Add(window)
		for {
			code, body, err := get(p)
			if err == nil && code == http.StatusOK {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s on port %d: %d %q %v after %s (the kubelet's window); stderr:\n%s", p.path, p.port, code, body, err, window, stderr.String())
			}
			time.Sleep(100 * time.Millisecond)
		}
	}

	// Traffic on the node's interface becomes flows on stdout (kubectl
	// logs), stamped with the node's name from the downward API.
	if err := bpftest.Ping(node.PeerIP, 3); err != nil {
		t.Fatal(err)
	}
	timeout := time.After(10 * time.Second)
	for found := false; !found; {
		select {
		case line := <-lines:
			var rec struct {
				Flow struct {
					NodeName string `json:"node_name"`
					IP       struct {
						Source, Destination string
					} `json:"IP"`
				} `json:"flow"`
			}
			if err := json.Unmarshal([]byte(line), &rec); err != nil {
				t.Fatalf("stdout line is not Hubble JSON: %q: %v", line, err)
			}
			if rec.Flow.IP.Destination == node.PeerIP.String() || rec.Flow.IP.Source == node.PeerIP.String() {
				if rec.Flow.NodeName != "node-a" {
					t.Errorf("flow node_name %q, want NODE_NAME's node-a", rec.Flow.NodeName)
				}
				found = true
			}
		case <-timeout:
			t.Fatalf("no flow of the ping to %s on stdout; stderr:\n%s", node.PeerIP, stderr.String())
		}
	}

	// Kubernetes stops a pod with SIGTERM and kills it after the grace period.
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		if err != nil {
			t.Fatalf("exit after SIGTERM: %v; stderr:\n%s", err, stderr.String())
		}
	case <-time.After(time.Duration(ds.gracePeriodSeconds) * time.Second):
		t.Fatalf("still running %ds after SIGTERM (the pod's grace period); stderr:\n%s", ds.gracePeriodSeconds, stderr.String())
	}
	// --log-format=json from the container's args: every log line is JSON.
	for _, line := range strings.Split(strings.TrimSpace(stderr.String()), "\n") {
		if line == "" || strings.HasPrefix(line, "flowbus: ") {
			continue
		}
		if !json.Valid([]byte(line)) {
			t.Errorf("log line is not JSON (args %q): %q", ds.args, line)
		}
	}
	if !strings.Contains(stderr.String(), "flowbus: received=") {
		t.Errorf("no summary line after SIGTERM; stderr:\n%s", stderr.String())
	}
}
