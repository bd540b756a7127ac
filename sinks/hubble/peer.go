package hubble

import (
	"strings"
	"sync"

	"google.golang.org/grpc"

	"github.com/flowbus/flowbus/flow/peer"
	"github.com/flowbus/flowbus/internal/observerserver"
)

// peerService is Hubble's peer.Peer service: Notify sends this node and the
// configured peers as PEER_ADDED, then holds the stream open (the list never
// changes) until the client leaves or the sink closes.
type peerService struct {
	peer.UnimplementedPeerServer
	list []*peer.ChangeNotification
	srv  *observerserver.Server

	once sync.Once
	done chan struct{}
}

func newPeerService(node, address string, withTLS bool, peers []Peer, srv *observerserver.Server) *peerService {
	p := &peerService{srv: srv, done: make(chan struct{})}
	add := func(name, address string) {
		cn := &peer.ChangeNotification{Name: name, Address: address, Type: peer.ChangeNotificationType_PEER_ADDED}
		if withTLS {
			cn.Tls = &peer.TLS{ServerName: TLSServerName(name)}
		}
		p.list = append(p.list, cn)
	}
	add(node, address)
	for _, o := range peers {
		add(o.Name, o.Address)
	}
	return p
}

func (p *peerService) register(g *grpc.Server) { peer.RegisterPeerServer(g, p) }

func (p *peerService) close() { p.once.Do(func() { close(p.done) }) }

// Notify implements peer.PeerServer.
func (p *peerService) Notify(_ *peer.NotifyRequest, stream grpc.ServerStreamingServer[peer.ChangeNotification]) error {
	for _, cn := range p.list {
		if err := stream.Send(cn); err != nil {
			return err
		}
	}
	select {
	case <-stream.Context().Done():
		return stream.Context().Err()
	case <-p.done:
		return nil
	}
}

// TLSServerName is the name a node's Hubble server certificate is for, as
// Hubble derives it (and Relay expects it): NODE.default.hubble-grpc.cilium.io,
// with the dots of the node name replaced by hyphens (flowbus nodes are in
// Cilium's default cluster).
func TLSServerName(node string) string {
	if node == "" {
		return ""
	}
	return strings.ReplaceAll(node, ".", "-") + ".default.hubble-grpc.cilium.io"
}
