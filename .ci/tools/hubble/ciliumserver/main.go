// Command ciliumserver runs Cilium's own Hubble server (the agent's
// observer: pkg/hubble/observer's LocalObserverServer with its ring,
// GetFlows, filters and field masks) on a unix socket, outside the agent,
// for interoperability tests.
//
// It reads Hubble export lines (GetFlowsResponse in JSON: flows and lost
// events) from -input, feeds each one to the server as a monitor event,
// serves the socket and prints "ready N" on stdout once the server has put
// the N events in its ring. Then it feeds the export lines it reads from
// stdin as they come, and runs until it is killed.
//
// In the agent a parser turns the datapath's monitor events into flows.
// Here the events already are flows, so a parser that hands them on as they
// are stands in for it; everything after the parser is the agent's code.
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"os"
	"sync/atomic"

	observerpb "github.com/cilium/cilium/api/v1/observer"
	v1 "github.com/cilium/cilium/pkg/hubble/api/v1"
	"github.com/cilium/cilium/pkg/hubble/container"
	"github.com/cilium/cilium/pkg/hubble/observer"
	"github.com/cilium/cilium/pkg/hubble/observer/namespace"
	"github.com/cilium/cilium/pkg/hubble/observer/observeroption"
	observerTypes "github.com/cilium/cilium/pkg/hubble/observer/types"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/encoding/protojson"
)

// passParser is the parser.Decoder of this server: a monitor event's
// payload is already a Hubble event.
type passParser struct{}

func (passParser) Decode(ev *observerTypes.MonitorEvent) (*v1.Event, error) {
	r, ok := ev.Payload.(*observerpb.GetFlowsResponse)
	if !ok {
		return nil, fmt.Errorf("unexpected payload %T", ev.Payload)
	}
	switch {
	case r.GetFlow() != nil:
		return &v1.Event{Timestamp: r.GetFlow().GetTime(), Event: r.GetFlow()}, nil
	case r.GetLostEvents() != nil:
		return &v1.Event{Timestamp: r.GetTime(), Event: r.GetLostEvents()}, nil
	}
	return nil, errors.New("neither a flow nor lost events")
}

func main() {
	socket := flag.String("socket", "", "unix socket to serve")
	input := flag.String("input", "", "file of Hubble export lines (GetFlowsResponse JSON)")
	maxFlows := flag.Int("max-flows", 4095, "ring capacity (2^n-1)")
	flag.Parse()
	if *socket == "" || *input == "" {
		log.Fatal("ciliumserver: -socket and -input are required")
	}
	capacity, err := container.NewCapacity(*maxFlows)
	if err != nil {
		log.Fatalf("ciliumserver: -max-flows: %v", err)
	}

	f, err := os.Open(*input)
	if err != nil {
		log.Fatalf("ciliumserver: %v", err)
	}
	var events []*observerpb.GetFlowsResponse
	if err := readLines(f, *input, func(r *observerpb.GetFlowsResponse) { events = append(events, r) }); err != nil {
		log.Fatalf("ciliumserver: %v", err)
	}
	f.Close()

	var ringed atomic.Int64
	done := make(chan struct{})
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	srv, err := observer.NewLocalServer(passParser{}, namespace.NewManager(), logger,
		observeroption.WithMaxFlows(capacity),
		observeroption.WithMonitorBuffer(len(events)+1),
		observeroption.WithOnDecodedEventFunc(func(context.Context, *v1.Event) (bool, error) {
			if ringed.Add(1) == int64(len(events)) {
				close(done)
			}
			return false, nil
		}))
	if err != nil {
		log.Fatalf("ciliumserver: %v", err)
	}
	go srv.Start()

	_ = os.Remove(*socket)
	ln, err := net.Listen("unix", *socket)
	if err != nil {
		log.Fatalf("ciliumserver: %v", err)
	}
	gs := grpc.NewServer()
	observerpb.RegisterObserverServer(gs, srv)
	go func() {
		if err := gs.Serve(ln); err != nil {
			log.Fatalf("ciliumserver: serve: %v", err)
		}
	}()

	ch := srv.GetEventsChannel()
	for _, r := range events {
		ch <- &observerTypes.MonitorEvent{NodeName: r.GetNodeName(), Payload: r}
	}
	if len(events) > 0 {
		<-done
	}
	fmt.Printf("ready %d\n", len(events))
	err = readLines(os.Stdin, "stdin", func(r *observerpb.GetFlowsResponse) {
		ch <- &observerTypes.MonitorEvent{NodeName: r.GetNodeName(), Payload: r}
	})
	if err != nil {
		log.Fatalf("ciliumserver: %v", err)
	}
	select {}
}

// readLines decodes each export line of r.
func readLines(r io.Reader, name string, each func(*observerpb.GetFlowsResponse)) error {
	sc := bufio.NewScanner(r)
	sc.Buffer(nil, 64<<20)
	for line := 1; sc.Scan(); line++ {
		resp := new(observerpb.GetFlowsResponse)
		if err := protojson.Unmarshal(sc.Bytes(), resp); err != nil {
			return fmt.Errorf("%s:%d: %w", name, line, err)
		}
		each(resp)
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	return nil
}
