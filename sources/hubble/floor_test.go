package hubble_test

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/mem"

	"github.com/flowbus/flowbus/sources/hubble"
)

// bytesCodec is a gRPC codec of messages that are their bytes already: the
// floor benchmark's, so that no protobuf work is measured.
type bytesCodec struct{}

func (bytesCodec) Name() string { return "proto" }

func (bytesCodec) Marshal(v any) (mem.BufferSlice, error) {
	return mem.BufferSlice{mem.SliceBuffer(*v.(*[]byte))}, nil
}

func (bytesCodec) Unmarshal(data mem.BufferSlice, v any) error {
	switch v := v.(type) {
	case *floorCount:
		v.msgs++
		v.bytes += data.Len()
	case *[]byte:
		*v = data.Materialize()
	default:
		return fmt.Errorf("bytesCodec: cannot receive into %T", v)
	}
	return nil
}

// floorCount counts what the floor benchmark's client receives.
type floorCount struct{ msgs, bytes int }

// floorDesc is a service of one server stream: the request is the number
// of messages to send (8 bytes, little-endian), each of floorMessage bytes.
var floorDesc = grpc.ServiceDesc{
	ServiceName: "flowbus.bench.Floor",
	HandlerType: (*any)(nil),
	Streams: []grpc.StreamDesc{{
		StreamName:    "Stream",
		ServerStreams: true,
		Handler: func(_ any, st grpc.ServerStream) error {
			var req []byte
			if err := st.RecvMsg(&req); err != nil {
				return err
			}
			if len(req) != 8 {
				return fmt.Errorf("floor: request of %d bytes", len(req))
			}
			n := binary.LittleEndian.Uint64(req)
			msg := make([]byte, floorMessage)
			for i := range msg {
				msg[i] = byte(i)
			}
			for range n {
				if err := st.SendMsg(&msg); err != nil {
					return err
				}
			}
			return nil
		},
	}},
}

const floorMessage = 1100 // bytes, about an enriched flow in protobuf

// BenchmarkGRPCFloor is the ceiling the transport puts on the hubble
// source: one server stream of pre-marshalled messages of an enriched
// flow's size from a gRPC server over a unix socket, with a codec that
// neither copies nor decodes, server and client in this process.
// cpu-ns/msg is both sides together. default and large-windows receive
// with gRPC's client, large-windows with the client's flow control windows
// (1 MiB a stream, 2 MiB the connection, which turns off gRPC's BDP
// estimation) and read buffer (256 KiB) in place of gRPC's defaults.
// source-call receives with the source's own call: the source and its
// server cannot do better per flow than that, as Hubble sends one message
// per flow, and the difference from default is what the source saves per
// flow by not using gRPC's client.
func BenchmarkGRPCFloor(b *testing.B) {
	for _, c := range []struct {
		name string
		opts []grpc.DialOption
		call bool // the source's call instead of a gRPC client
	}{
		{"default", nil, false},
		{"large-windows", []grpc.DialOption{
			grpc.WithInitialWindowSize(1 << 20),
			grpc.WithInitialConnWindowSize(2 << 20),
			grpc.WithReadBufferSize(256 << 10),
		}, false},
		{"source-call", nil, true},
	} {
		b.Run(c.name, func(b *testing.B) {
			sock := socketPath(b)
			lis, err := net.Listen("unix", sock)
			if err != nil {
				b.Fatal(err)
			}
			g := grpc.NewServer(grpc.ForceServerCodecV2(bytesCodec{}))
			g.RegisterService(&floorDesc, nil)
			go func() { _ = g.Serve(lis) }()
			defer g.Stop()
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			req := binary.LittleEndian.AppendUint64(nil, uint64(b.N))
			var got floorCount
			count := func(m []byte) error {
				got.msgs++
				got.bytes += len(m)
				return nil
			}

			b.ReportAllocs()
			b.ResetTimer()
			cpu0, t0 := cpuTime(), time.Now()
			if c.call {
				err = hubble.Call(ctx, sock, "/flowbus.bench.Floor/Stream", req, count)
			} else {
				err = grpcFloorCall(ctx, sock, c.opts, req, &got)
			}
			if !errors.Is(err, io.EOF) {
				b.Fatal(err)
			}
			wall, cpu := time.Since(t0), cpuTime()-cpu0
			b.StopTimer()
			if got.msgs != b.N || got.bytes != b.N*floorMessage {
				b.Fatalf("received %d messages, %d bytes; want %d", got.msgs, got.bytes, b.N)
			}
			b.ReportMetric(float64(b.N)/wall.Seconds(), "msgs/s")
			b.ReportMetric(float64(cpu.Nanoseconds())/float64(b.N), "cpu-ns/msg")
		})
	}
}

// grpcFloorCall makes the floor's call with gRPC's client, counting what
// arrives into got; it returns io.EOF when the stream ended well.
func grpcFloorCall(ctx context.Context, sock string, opts []grpc.DialOption, req []byte, got *floorCount) error {
	conn, err := grpc.NewClient("unix://"+sock, append([]grpc.DialOption{
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.ForceCodecV2(bytesCodec{})),
	}, opts...)...)
	if err != nil {
		return err
	}
	defer conn.Close()
	st, err := conn.NewStream(ctx, &floorDesc.Streams[0], "/flowbus.bench.Floor/Stream")
	if err != nil {
		return err
	}
	if err := st.SendMsg(&req); err != nil {
		return err
	}
	if err := st.CloseSend(); err != nil {
		return err
	}
	for {
		if err := st.RecvMsg(got); err != nil {
			return err
		}
	}
}
