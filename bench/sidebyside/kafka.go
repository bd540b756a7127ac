package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"syscall"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/protobuf/encoding/protowire"
)

// runKfake serves one kfake broker with the topic "flows" until stdin
// closes; it prints its address first.
func runKfake(args []string) error {
	fs := flag.NewFlagSet("kfake", flag.ExitOnError)
	parts := fs.Int("partitions", 6, "partitions of the topic flows")
	if err := fs.Parse(args); err != nil {
		return err
	}
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.Ports(0), kfake.SeedTopics(int32(*parts), "flows"),
		// kfake copies its growing in-memory segment; small segments keep
		// that copy from dominating.
		kfake.BrokerConfigs(map[string]string{"log.segment.bytes": "4194304"}))
	if err != nil {
		return err
	}
	defer c.Close()
	fmt.Println(c.ListenAddrs()[0])
	_, _ = io.Copy(io.Discard, os.Stdin)
	return nil
}

// runProduce produces the records of a length-delimited protobuf file (as
// the file sink writes them) to the topic flows, with the three headers
// flowbus sets, by a minimal kafka-go or franz-go producer, acks all. It
// prints the time from the first record to the last acknowledgement, and
// the process's CPU time in that window (reading the records file is not
// in it).
func runProduce(args []string) error {
	fs := flag.NewFlagSet("produce", flag.ExitOnError)
	client := fs.String("client", "kafka-go", "kafka-go (its Writer), kafka-go-client (its low-level Client) or franz-go")
	brokers := fs.String("brokers", "", "the broker's address")
	path := fs.String("records", "", "the records file")
	if err := fs.Parse(args); err != nil {
		return err
	}
	data, err := os.ReadFile(*path)
	if err != nil {
		return err
	}
	var values [][]byte
	for len(data) > 0 {
		v, n := protowire.ConsumeBytes(data)
		if n < 0 {
			return fmt.Errorf("%s: record %d: %w", *path, len(values), protowire.ParseError(n))
		}
		values = append(values, v)
		data = data[n:]
	}
	hk := []string{"content-type", "hubble-schema", "node"}
	hv := [][]byte{[]byte("application/x-protobuf"), []byte("flow.v1"), []byte("bench")}
	ctx := context.Background()
	var elapsed, cpu time.Duration
	switch *client {
	case "kafka-go":
		w := &kafka.Writer{Addr: kafka.TCP(*brokers), Topic: "flows", Balancer: &kafka.RoundRobin{},
			BatchSize: 512, BatchBytes: 1 << 20, BatchTimeout: time.Millisecond, RequiredAcks: kafka.RequireAll}
		msgs := make([]kafka.Message, len(values))
		hdrs := make([]kafka.Header, len(hk))
		for i := range hk {
			hdrs[i] = kafka.Header{Key: hk[i], Value: hv[i]}
		}
		for i, v := range values {
			msgs[i] = kafka.Message{Value: v, Headers: hdrs}
		}
		start, cpu0 := time.Now(), cpuTime()
		// One call per 6 batches: the writer fills every partition's
		// batch in parallel, as a pipeline batch of 3,072 would.
		for i := 0; i < len(msgs); i += 6 * 512 {
			if err := w.WriteMessages(ctx, msgs[i:min(i+6*512, len(msgs))]...); err != nil {
				return err
			}
		}
		elapsed, cpu = time.Since(start), cpuTime()-cpu0
		if err := w.Close(); err != nil {
			return err
		}
	case "kafka-go-client":
		// kafka-go's low-level Client, as flowbus's sink uses it: requests
		// of 512 records, one per partition, six at a time.
		cl := &kafka.Client{Addr: kafka.TCP(*brokers), Timeout: 10 * time.Second}
		hdrs := make([]kafka.Header, len(hk))
		for i := range hk {
			hdrs[i] = kafka.Header{Key: hk[i], Value: hv[i]}
		}
		recs := make([]kafka.Record, len(values))
		for i, v := range values {
			recs[i] = kafka.Record{Value: kafka.NewBytes(v), Headers: hdrs}
		}
		start, cpu0 := time.Now(), cpuTime()
		for i := 0; i < len(recs); i += 6 * 512 {
			errs := make(chan error, 6)
			n := 0
			for p := 0; p < 6 && i+p*512 < len(recs); p++ {
				chunk := recs[i+p*512 : min(i+(p+1)*512, len(recs))]
				n++
				go func() {
					res, err := cl.Produce(ctx, &kafka.ProduceRequest{Topic: "flows", Partition: p, RequiredAcks: kafka.RequireAll,
						Records: kafka.NewRecordReader(chunk...)})
					if err == nil && res.Error != nil {
						err = res.Error
					}
					errs <- err
				}()
			}
			for ; n > 0; n-- {
				if err := <-errs; err != nil {
					return err
				}
			}
		}
		elapsed, cpu = time.Since(start), cpuTime()-cpu0
	case "franz-go":
		cl, err := kgo.NewClient(kgo.SeedBrokers(*brokers), kgo.DefaultProduceTopic("flows"),
			kgo.RecordPartitioner(kgo.RoundRobinPartitioner()), kgo.ProducerBatchMaxBytes(1<<20),
			kgo.MaxBufferedRecords(1<<16))
		if err != nil {
			return err
		}
		hdrs := make([]kgo.RecordHeader, len(hk))
		for i := range hk {
			hdrs[i] = kgo.RecordHeader{Key: hk[i], Value: hv[i]}
		}
		recs := make([]kgo.Record, len(values))
		var failed error
		done := func(_ *kgo.Record, err error) {
			if err != nil && failed == nil {
				failed = err
			}
		}
		start, cpu0 := time.Now(), cpuTime()
		for i, v := range values {
			recs[i] = kgo.Record{Value: v, Headers: hdrs}
			cl.Produce(ctx, &recs[i], done)
		}
		if err := cl.Flush(ctx); err != nil {
			return err
		}
		elapsed, cpu = time.Since(start), cpuTime()-cpu0
		cl.Close()
		if failed != nil {
			return failed
		}
	default:
		return errors.New("-client: want kafka-go, kafka-go-client or franz-go")
	}
	fmt.Printf("records=%d elapsed=%s cpu=%s\n", len(values), elapsed, cpu)
	return nil
}

// cpuTime is the process's user and system CPU time so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
