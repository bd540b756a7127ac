package discard

import (
	"context"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"gopkg.in/yaml.v3"

	"github.com/flowbus/flowbus/pipeline"
)

func TestDiscard(t *testing.T) {
	reg := prometheus.NewRegistry()
	sk, err := New(&pipeline.Build{Name: "null", Metrics: reg}, nil)
	if err != nil {
		t.Fatal(err)
	}
	s := sk
	b := pipeline.NewBatch()
	defer b.Release()
	for range 3 {
		b.Next().FlowStorage()
	}
	for range 2 {
		if failed, err := s.Write(context.Background(), b); failed != 0 || err != nil {
			t.Fatalf("Write = %d, %v", failed, err)
		}
	}
	if s.Events() != 6 {
		t.Errorf("Events = %d, want 6", s.Events())
	}
	var m dto.Metric
	s.counter.Write(&m)
	if m.GetCounter().GetValue() != 6 {
		t.Errorf("counter = %v", m.GetCounter().GetValue())
	}
	if err := s.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
}

func TestDiscardRejectsKeys(t *testing.T) {
	var node yaml.Node
	yaml.Unmarshal([]byte("path: x"), &node)
	_, err := pipeline.Make(&pipeline.Build{Name: "null"}, node.Content[0], New)
	if err == nil || !strings.Contains(err.Error(), "path") {
		t.Fatalf("err = %v, want an error about the unknown key", err)
	}
}
