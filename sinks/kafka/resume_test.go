package kafka

import (
	"context"
	"fmt"
	"net"
	"strconv"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/flowbus/flowbus/internal/sinktest"
)

// TestResumeWhenBrokerReturns: a Write that waits out a long backoff while
// the broker is away resumes as soon as the broker is back (a new broker on
// the same port), not when the backoff ends. The backoff is 3s (at least
// 2.4s with jitter); the broker returns 300ms into it. (Three attempts: the
// first one after the broker's return may still fail on a connection of
// before the outage; the next follows one poll later.)
func TestResumeWhenBrokerReturns(t *testing.T) {
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(1, "o"))
	if err != nil {
		t.Fatal(err)
	}
	broker := c.ListenAddrs()[0]
	_, ps, _ := net.SplitHostPort(broker)
	port, _ := strconv.Atoi(ps)
	s := newSink(t, "json", fmt.Sprintf("brokers: [%s]\ntopic: o\nmax_attempts: 3\nbatch_timeout: 1s\nbackoff: {min: 3s, max: 3s}\n", broker))
	b := sinktest.Batch(0, 20)
	defer b.Release()
	if failed, err := s.Write(context.Background(), b); failed != 0 || err != nil {
		t.Fatal(failed, err)
	}
	c.Close()
	back := make(chan time.Time, 1)
	go func() {
		time.Sleep(300 * time.Millisecond)
		newCluster(t, kfake.SeedTopics(1, "o"), kfake.Ports(port))
		back <- time.Now()
	}()
	failed, err := s.Write(context.Background(), b)
	resumed := time.Since(<-back)
	t.Logf("the Write resumed %v after the broker returned", resumed)
	if failed != 0 || err != nil {
		t.Fatalf("failed=%d err=%v", failed, err)
	}
	if resumed > 2*time.Second {
		t.Errorf("the Write waited out its backoff: resumed %v after the broker returned", resumed)
	}
	// One retry once the broker is back, and a second one a poll later
	// when the first found a connection of before the outage.
	if r := counter(s.m.Retried); r != 20 && r != 40 {
		t.Errorf("retried %v, want one or two retries of the 20 records", r)
	}
}
