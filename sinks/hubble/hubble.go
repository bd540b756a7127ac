// Package hubble is the `hubble` sink: it keeps the newest events in a ring
// and serves Hubble's observer.Observer gRPC API over it, with gRPC's health
// service and Hubble's peer.Peer service, so that Hubble's own tools see a
// flowbus node as a Hubble server: `hubble observe --server`, `hubble
// status`, Hubble Relay (through the Peer service) and Hubble UI through
// Relay.
//
// The ring (internal/observerserver) holds the newest max_flows events.
// Write keeps a batch's events without copying them (it takes a
// pipeline.Lease on the batch, given back when the last of its events
// leaves the ring or the sink closes), or copies them into storage of the
// ring's own when the batch is less than half full, and returns: the
// pipeline never waits for a client. Every event written counts as
// delivered when Write returns; events leaving the ring are not losses. A client that reads
// more slowly than flows arrive falls behind the ring and is told how many
// events it missed with a HUBBLE_RING_BUFFER LostEvent, as Hubble does.
//
// The Peer service lists this node (its node name, advertise_address, and
// with TLS the server name Hubble derives from the node name) and the
// nodes under `peers`, so one Hubble Relay can aggregate a group of
// flowbus nodes by pointing its --peer-service at any of them.
//
// Its keys: `flowbus components hubble`, or docs/components.md.
package hubble

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/flowbus/flowbus/internal/observerserver"
	"github.com/flowbus/flowbus/internal/sinkutil"
	"github.com/flowbus/flowbus/pipeline"
	"github.com/flowbus/flowbus/pipeline/cli"
	"github.com/flowbus/flowbus/pipeline/config"
)

func init() {
	pipeline.RegisterSink(pipeline.Spec{
		Type:        "hubble",
		Summary:     "serves Hubble's Observer API from a ring of the newest flows, for hubble observe, Hubble Relay and Hubble UI",
		Description: `The sink keeps the newest max_flows events in a ring and serves Hubble's observer.Observer gRPC service over it (GetFlows with number, first, follow, since, until, whitelist, blacklist and field_mask; ServerStatus; GetNodes; GetNamespaces; the other calls answer Unimplemented, as Hubble with those events off), gRPC's health service, and Hubble's peer.Peer service listing this node and peers, so Hubble Relay can aggregate flowbus nodes. Writing never waits for a client: a client that falls behind the ring gets a HUBBLE_RING_BUFFER lost event counting what it missed, as from Hubble. Every event written counts as delivered; events leaving the ring are not losses.`,
		Example: `type: hubble
inputs: [flows]
listen: 0.0.0.0:4244
advertise_address: 10.0.0.11:4244
tls:
  cert_file: /etc/flowbus/tls/server.crt
  key_file: /etc/flowbus/tls/server.key
  client_ca_files: [/etc/flowbus/tls/ca.crt]
max_flows: 65535
peers:
  - {name: node-2, address: 10.0.0.12:4244}
`,
	}, New)
}

// DefaultListen is where the sink listens by default.
const DefaultListen = "unix:///var/run/flowbus/hubble.sock"

// MaxFlowsLimit is the largest max_flows accepted.
const MaxFlowsLimit = 1<<24 - 1

// Options are the sink's keys.
type Options struct {
	Listen           string `yaml:"listen" default:"unix:///var/run/flowbus/hubble.sock" doc:"where the gRPC server listens: unix:///PATH or HOST:PORT (:4244 for every address)" example:"0.0.0.0:4244"`
	TLS              *TLS   `yaml:"tls" doc:"serve TLS; with client_ca_files, mutual TLS (clients must present a certificate those CAs signed); default: plaintext"`
	MaxFlows         int    `yaml:"max_flows" default:"65535" doc:"the events the ring keeps: a power of two minus one, as Hubble's hubble-event-buffer-capacity (about 1.5 KiB of memory each for typical flows, up to twice that when a filter upstream leaves batches half full)"`
	AdvertiseAddress string `yaml:"advertise_address" doc:"the address the Peer service gives for this node (HOST:PORT, or unix:///PATH); default: listen when it names a host or a socket, else none (Hubble Relay cannot reach the node)" example:"10.0.0.11:4244"`
	Peers            []Peer `yaml:"peers" doc:"other nodes the Peer service lists, so that one Hubble Relay pointed at this node reaches them too; they are taken to serve TLS as this node does"`
}

// TLS is the sink's server TLS configuration.
type TLS struct {
	CertFile      string   `yaml:"cert_file" required:"true" doc:"the server's PEM certificate"`
	KeyFile       string   `yaml:"key_file" required:"true" doc:"the PEM key of cert_file"`
	ClientCAFiles []string `yaml:"client_ca_files" doc:"PEM certificates of the CAs that sign client certificates; when given, clients must present one (mutual TLS)"`
}

// Peer is another node listed by the Peer service.
type Peer struct {
	Name    string `yaml:"name" required:"true" doc:"the node's name"`
	Address string `yaml:"address" required:"true" doc:"where its Observer service listens: HOST:PORT or unix:///PATH"`
}

// Sink serves the Observer, health and Peer services over its ring.
type Sink struct {
	name    string
	listen  string // as configured
	network string // "unix" or "tcp"
	addr    string // the path or host:port
	creds   credentials.TransportCredentials
	log     *slog.Logger

	srv   *observerserver.Server
	peers *peerService
	grpc  *grpc.Server

	mu       sync.Mutex
	lis      net.Listener
	served   chan struct{} // closed when Serve returned
	serveErr error

	events prometheus.Counter
}

// New builds the sink from its options.
func New(b *pipeline.Build, o *Options) (*Sink, error) {
	var errs config.Errors
	add := func(err error) {
		switch e := err.(type) {
		case config.Errors:
			errs = append(errs, e...)
		case *config.Error:
			errs = append(errs, e)
		}
	}
	if o == nil {
		o = &Options{Listen: DefaultListen, MaxFlows: 65535}
	}
	s := &Sink{name: b.Name, listen: o.Listen, log: b.Log}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	var err error
	if s.network, s.addr, err = parseListen(o.Listen); err != nil {
		add(b.Errorf("listen", "listen %q: %v", o.Listen, err))
	}
	if n := o.MaxFlows; n < 1 || n > MaxFlowsLimit || n&(n+1) != 0 {
		add(b.Errorf("max_flows", "max_flows %d: want a power of two minus one (1, 3, 7, ... 65535, ...) up to %d", n, MaxFlowsLimit))
	}
	if o.TLS != nil {
		c, err := o.TLS.config(b)
		if err != nil {
			add(err)
		} else {
			s.creds = credentials.NewTLS(c)
		}
	}
	advertise := o.AdvertiseAddress
	if advertise == "" && err == nil {
		advertise = defaultAdvertise(s.network, s.addr)
	} else if advertise != "" {
		if err := checkAddress(advertise); err != nil {
			add(b.Errorf("advertise_address", "advertise_address %q: %v", advertise, err))
		}
	}
	for i, p := range o.Peers {
		if err := checkAddress(p.Address); err != nil {
			add(b.Errorf("peers", "peers[%d].address %q: %v", i, p.Address, err))
		}
	}
	if len(errs) > 0 {
		return nil, errs
	}
	s.srv = observerserver.New(observerserver.Options{
		Capacity: o.MaxFlows,
		NodeName: b.NodeName,
		Version:  "flowbus " + cli.Version(),
	})
	s.peers = newPeerService(b.NodeName, advertise, o.TLS != nil, o.Peers, s.srv)
	s.events = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "flowbus_hubble_sink_events_total",
		Help: "Events the hubble sink put in its ring.",
	})
	clientLost := prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: "flowbus_hubble_sink_client_lost_events_total",
		Help: "Events that GetFlows clients missed because they fell behind the ring (sent to them as HUBBLE_RING_BUFFER lost events).",
	}, func() float64 { return float64(s.srv.ClientLost()) })
	if b.Metrics != nil {
		for _, c := range []prometheus.Collector{s.events, clientLost} {
			if err := b.Metrics.Register(c); err != nil {
				return nil, fmt.Errorf("hubble sink %s: register metrics: %w", b.Name, err)
			}
		}
	}
	return s, nil
}

// parseListen splits a listen address into a network and an address.
func parseListen(l string) (network, addr string, err error) {
	if p, ok := strings.CutPrefix(l, "unix://"); ok {
		if p == "" || !filepath.IsAbs(p) {
			return "", "", errors.New("want unix:///ABSOLUTE/PATH")
		}
		return "unix", p, nil
	}
	if strings.Contains(l, "://") {
		return "", "", errors.New("want unix:///PATH or HOST:PORT")
	}
	if _, _, err := net.SplitHostPort(l); err != nil {
		return "", "", fmt.Errorf("want unix:///PATH or HOST:PORT: %w", err)
	}
	return "tcp", l, nil
}

// checkAddress checks an address announced by the Peer service.
func checkAddress(a string) error {
	if strings.HasPrefix(a, "unix://") {
		_, _, err := parseListen(a)
		return err
	}
	host, _, err := net.SplitHostPort(a)
	if err != nil {
		return fmt.Errorf("want HOST:PORT or unix:///PATH: %w", err)
	}
	if host == "" {
		return errors.New("want HOST:PORT with a host")
	}
	return nil
}

// defaultAdvertise is the address announced for this node when
// advertise_address is not set: the listen address, unless it has no host
// or the unspecified one.
func defaultAdvertise(network, addr string) string {
	if network == "unix" {
		return "unix://" + addr
	}
	host, _, _ := net.SplitHostPort(addr)
	if ip := net.ParseIP(host); host == "" || ip != nil && ip.IsUnspecified() {
		return ""
	}
	return addr
}

func (t *TLS) config(b *pipeline.Build) (*tls.Config, error) {
	var errs config.Errors
	c := &tls.Config{MinVersion: tls.VersionTLS12}
	cert, err := tls.LoadX509KeyPair(sinkutil.Path(b.Dir, t.CertFile), sinkutil.Path(b.Dir, t.KeyFile))
	if err != nil {
		errs = append(errs, b.Errorf("tls.cert_file", "tls certificate (cert_file, key_file): %v", err))
	} else {
		c.Certificates = []tls.Certificate{cert}
	}
	if len(t.ClientCAFiles) > 0 {
		pool := x509.NewCertPool()
		for i, f := range t.ClientCAFiles {
			pem, err := os.ReadFile(sinkutil.Path(b.Dir, f))
			if err != nil {
				errs = append(errs, b.Errorf("tls.client_ca_files", "tls.client_ca_files[%d]: %v", i, err))
				continue
			}
			if !pool.AppendCertsFromPEM(pem) {
				errs = append(errs, b.Errorf("tls.client_ca_files", "tls.client_ca_files[%d] %s: no PEM certificate", i, f))
			}
		}
		c.ClientCAs = pool
		c.ClientAuth = tls.RequireAndVerifyClientCert
	}
	if len(errs) > 0 {
		return nil, errs
	}
	return c, nil
}

// Start listens and serves. A unix socket's directory is created, and a
// socket left by an earlier run is replaced.
func (s *Sink) Start(context.Context) error {
	if s.network == "unix" {
		if err := os.MkdirAll(filepath.Dir(s.addr), 0o755); err != nil {
			return fmt.Errorf("hubble sink %s: listen %s: %w", s.name, s.listen, err)
		}
		if fi, err := os.Lstat(s.addr); err == nil && fi.Mode()&os.ModeSocket != 0 {
			os.Remove(s.addr)
		}
	}
	lis, err := net.Listen(s.network, s.addr)
	if err != nil {
		return fmt.Errorf("hubble sink %s: listen %s: %w", s.name, s.listen, err)
	}
	opts := observerserver.ServerOptions()
	if s.creds != nil {
		opts = append(opts, grpc.Creds(s.creds))
	}
	g := grpc.NewServer(opts...)
	s.srv.Register(g)
	s.peers.register(g)
	s.mu.Lock()
	s.grpc, s.lis, s.served = g, lis, make(chan struct{})
	s.mu.Unlock()
	go func() {
		err := g.Serve(lis)
		s.mu.Lock()
		s.serveErr = err
		s.mu.Unlock()
		if err != nil {
			s.log.Error("hubble sink stopped serving", "listen", s.listen, "err", err)
		}
		close(s.served)
	}()
	s.log.Info("serving Hubble's Observer and Peer services", "listen", lis.Addr().String(), "max_flows", s.srv.Capacity(), "tls", s.creds != nil)
	return nil
}

// Addr is the address the sink listens on, once started (with the port
// chosen when listen gave port 0).
func (s *Sink) Addr() net.Addr {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.lis == nil {
		return nil
	}
	return s.lis.Addr()
}

// Ready reports an error when the server stopped serving.
func (s *Sink) Ready() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.lis == nil {
		return errors.New("not started")
	}
	if s.serveErr != nil {
		return fmt.Errorf("stopped serving: %w", s.serveErr)
	}
	return nil
}

// Write puts the events of b into the ring, keeping b with a Lease or
// copying its events (see observerserver.Server.PutBatch). It never fails
// and never waits for a client.
func (s *Sink) Write(_ context.Context, b *pipeline.Batch) (int, error) {
	s.srv.PutBatch(b)
	s.events.Add(float64(len(b.Events)))
	return 0, nil
}

// Server is the sink's Observer server (tests and benchmarks).
func (s *Sink) Server() *observerserver.Server { return s.srv }

// Close ends the clients' streams and stops the server, at once when ctx
// ends first, then gives back the batches the ring keeps.
func (s *Sink) Close(ctx context.Context) error {
	s.srv.Close()
	s.peers.close()
	defer s.srv.Clear()
	s.mu.Lock()
	g, served := s.grpc, s.served
	s.mu.Unlock()
	if g == nil {
		return nil
	}
	stopped := make(chan struct{})
	go func() {
		g.GracefulStop()
		close(stopped)
	}()
	select {
	case <-stopped:
	case <-ctx.Done():
		g.Stop()
		<-stopped
	}
	<-served
	return nil
}
