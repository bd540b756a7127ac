package pipeline_test

import (
	"errors"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/flowbus/flowbus/pipeline"
)

func TestReadyState(t *testing.T) {
	down := errors.New("down")
	for _, tc := range []struct {
		name  string
		sets  []error
		want  error
		gauge float64
	}{
		{"zero value is ready", nil, nil, 0},
		{"unready", []error{down}, down, 0},
		{"ready again", []error{down, nil}, nil, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := prometheus.NewGauge(prometheus.GaugeOpts{Name: "g"})
			r := pipeline.ReadyState{Gauge: g}
			for _, err := range tc.sets {
				r.Set(err)
			}
			if r.Err() != tc.want || testutil.ToFloat64(g) != tc.gauge {
				t.Errorf("Err()=%v gauge=%v, want %v and %v", r.Err(), testutil.ToFloat64(g), tc.want, tc.gauge)
			}
		})
	}
}
