// Command monitorparse is Hubble's side of the datapath benchmark: it reads
// a recorded Cilium monitor stream (protocol 1.2, one gob stream of
// payloads) and decodes every perf sample with Hubble's L3/L4 parser, as the
// agent's Hubble observer does (one new Flow per event, no enrichment:
// every getter answers nothing), then discards the flows. It prints the
// number of flows decoded and of samples the parser refused.
//
//	monitorparse FILE
package main

import (
	"bufio"
	"encoding/gob"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"

	flowpb "github.com/cilium/cilium/api/v1/flow"
	"github.com/cilium/cilium/pkg/hubble/parser/threefour"
	"github.com/cilium/cilium/pkg/hubble/testutils"
	"github.com/cilium/cilium/pkg/monitor/payload"
)

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: monitorparse FILE")
		os.Exit(2)
	}
	if err := run(os.Args[1]); err != nil {
		fmt.Fprintln(os.Stderr, "monitorparse:", err)
		os.Exit(1)
	}
}

func run(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	log := slog.New(slog.DiscardHandler)
	p, err := threefour.New(log, &testutils.NoopEndpointGetter, &testutils.NoopIdentityGetter,
		&testutils.NoopDNSGetter, &testutils.NoopIPGetter, &testutils.NoopServiceGetter, &testutils.NoopLinkGetter)
	if err != nil {
		return err
	}
	dec := gob.NewDecoder(bufio.NewReaderSize(f, 1<<20))
	var flows, refused int
	for {
		var pl payload.Payload
		if err := dec.Decode(&pl); err != nil {
			if errors.Is(err, io.EOF) {
				break
			}
			return fmt.Errorf("payload %d: %w", flows+refused, err)
		}
		if pl.Type != payload.EventSample {
			continue
		}
		fl := &flowpb.Flow{}
		if err := p.Decode(pl.Data, fl); err != nil {
			refused++
			continue
		}
		flows++
	}
	fmt.Printf("flows=%d refused=%d\n", flows, refused)
	return nil
}
