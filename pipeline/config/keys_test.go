package config

import (
	"reflect"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"
)

type tlsOpts struct {
	CAFile string `yaml:"ca_file" doc:"the CA"`
}

type backoffOpts struct {
	Min Duration `yaml:"min" default:"100ms" doc:"first wait"`
	Max Duration `yaml:"max" default:"5s" doc:"longest wait"`
}

type routeOpts struct {
	Subject string `yaml:"subject" required:"true" doc:"where"`
	Weight  int    `yaml:"weight" default:"1" doc:"how much"`
}

type specOpts struct {
	Brokers []string          `yaml:"brokers" required:"true" doc:"host:port"`
	Acks    string            `yaml:"acks" default:"all" doc:"all, one or none"`
	Size    int               `yaml:"size" default:"10000" doc:"records"`
	Create  *bool             `yaml:"create" default:"true" doc:"create topics"`
	Backoff backoffOpts       `yaml:"backoff" doc:"retry waits"`
	TLS     *tlsOpts          `yaml:"tls" doc:"TLS"`
	Routes  []routeOpts       `yaml:"routes" doc:"routes"`
	Filters *yaml.Node        `yaml:"filters" type:"list of FlowFilter" doc:"filters"`
	Secret  string            `yaml:"secret" hidden:"true"`
	Timeout Duration          `yaml:"timeout" example:"30s" doc:"a wait"`
	Tags    map[string]string `yaml:"tags" doc:"labels"`
}

func TestDefaults(t *testing.T) {
	for _, tc := range []struct {
		name, src string
		check     func(o specOpts) bool
	}{
		{"missing keys", "brokers: [a:1]", func(o specOpts) bool {
			return o.Acks == "all" && o.Size == 10000 && o.Create != nil && *o.Create &&
				o.Backoff.Min.D() == 100*time.Millisecond && o.Backoff.Max.D() == 5*time.Second && o.TLS == nil
		}},
		{"null keys", "brokers: [a:1]\nacks: ~\nsize:\nbackoff:", func(o specOpts) bool {
			return o.Acks == "all" && o.Size == 10000 && o.Backoff.Max.D() == 5*time.Second
		}},
		{"set keys", "brokers: [a:1]\nacks: one\nsize: 0\ncreate: false\nbackoff: {min: 1s}", func(o specOpts) bool {
			return o.Acks == "one" && o.Size == 0 && !*o.Create && o.Backoff.Min.D() == time.Second && o.Backoff.Max.D() == 5*time.Second
		}},
		{"list items", "brokers: [a:1]\nroutes: [{subject: x}, {subject: y, weight: 3}]", func(o specOpts) bool {
			return len(o.Routes) == 2 && o.Routes[0].Weight == 1 && o.Routes[1].Weight == 3
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var o specOpts
			if err := Decode(parse(t, tc.src), &o); err != nil {
				t.Fatal(err)
			}
			if !tc.check(o) {
				t.Errorf("decoded %+v", o)
			}
		})
	}
	// Without a node, the defaults still apply.
	var o specOpts
	if err := Decode(nil, &o); err != nil || o.Acks != "all" || o.Backoff.Max.D() != 5*time.Second {
		t.Errorf("Decode(nil): %+v, %v", o, err)
	}
}

func TestRequiredKeys(t *testing.T) {
	var o specOpts
	err := Decode(parse(t, "acks: one\nroutes: [{weight: 2}]"), &o)
	if err == nil {
		t.Fatal("no error")
	}
	for _, want := range []string{`1:1: missing required key "brokers": host:port`, `2:10: missing required key "subject": where`} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("errors %q lack %q", err, want)
		}
	}
}

func TestBadDefault(t *testing.T) {
	var o struct {
		N int `yaml:"n" default:"many"`
	}
	err := Decode(parse(t, "{}"), &o)
	if err == nil || !strings.Contains(err.Error(), `1:1: key "n": default "many": expected an integer`) {
		t.Errorf("got %v", err)
	}
}

func TestKeys(t *testing.T) {
	got := Keys(&specOpts{})
	want := []Key{
		{Path: "brokers", Type: "list of strings", Required: true, Doc: "host:port"},
		{Path: "acks", Type: "string", Default: "all", Doc: "all, one or none"},
		{Path: "size", Type: "integer", Default: "10000", Doc: "records"},
		{Path: "create", Type: "boolean", Default: "true", Doc: "create topics"},
		{Path: "backoff", Type: "mapping", Doc: "retry waits"},
		{Path: "backoff.min", Type: "duration", Default: "100ms", Doc: "first wait"},
		{Path: "backoff.max", Type: "duration", Default: "5s", Doc: "longest wait"},
		{Path: "tls", Type: "mapping", Doc: "TLS"},
		{Path: "tls.ca_file", Type: "string", Doc: "the CA"},
		{Path: "routes", Type: "list of mappings", Doc: "routes"},
		{Path: "routes[].subject", Type: "string", Required: true, Doc: "where"},
		{Path: "routes[].weight", Type: "integer", Default: "1", Doc: "how much"},
		{Path: "filters", Type: "list of FlowFilter", Doc: "filters"},
		{Path: "timeout", Type: "duration", Example: "30s", Doc: "a wait"},
		{Path: "tags", Type: "mapping of string to string", Doc: "labels"},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Keys:\n%+v\nwant\n%+v", got, want)
	}
}
