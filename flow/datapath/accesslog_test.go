package datapath

import (
	"errors"
	"net/http"
	"net/netip"
	"net/url"
	"reflect"
	"testing"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	flowpb "github.com/flowbus/flowbus/flow"
)

func l7ep(id, identity uint32, labels ...string) *flowpb.Endpoint {
	return &flowpb.Endpoint{ID: id, Identity: identity, Labels: labels}
}

func TestAccessLog(t *testing.T) {
	src := AccessLogEndpoint{ID: 12, IPv4: "10.0.0.1", IPv6: "fd00::1", Port: 41000, Identity: 1001,
		Labels: []AccessLogLabel{{Key: "app", Value: "web", Source: "k8s"}, {Key: clusterLabel, Value: "c1", Source: "k8s"}}}
	dst := AccessLogEndpoint{IPv4: "10.0.0.2", IPv6: "fd00::2", Port: 8080, Identity: 2002}
	u, _ := url.Parse("http://user:secret@svc:8080/path?q=1")
	traceparent := "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	reqHeaders := http.Header{"X-Request-Id": {"r1"}, "Traceparent": {traceparent}, "Accept": {"a", "b"}}

	srcWant := &flowpb.Endpoint{ID: 12, Identity: 1001, ClusterName: "c1",
		Labels: []string{"k8s:app=web", "k8s:io.cilium.k8s.policy.cluster=c1"}}
	cases := []struct {
		name string
		rec  *AccessLogRecord
		want *flowpb.Flow
		err  error
	}{
		{
			name: "HTTP request",
			rec: &AccessLogRecord{Type: "Request", Timestamp: "2026-11-25T05:00:00.000000000Z", ObservationPoint: "Egress",
				SourceEndpoint: src, DestinationEndpoint: dst, Verdict: "Forwarded", TransportProtocol: 6,
				HTTP: &AccessLogHTTP{Method: "GET", URL: u, Protocol: "HTTP/1.1", Headers: reqHeaders}},
			want: &flowpb.Flow{
				Verdict: flowpb.Verdict_FORWARDED, IP: ipv4f("10.0.0.1", "10.0.0.2"),
				L4:     &flowpb.Layer4{Protocol: &flowpb.Layer4_TCP{TCP: &flowpb.TCP{SourcePort: 41000, DestinationPort: 8080}}},
				Source: srcWant, Destination: l7ep(0, 2002), Type: flowpb.FlowType_L7,
				L7: &flowpb.Layer7{Type: flowpb.L7FlowType_REQUEST, Record: &flowpb.Layer7_Http{Http: &flowpb.HTTP{
					Method: "GET", Protocol: "HTTP/1.1", Url: "http://user:HUBBLE_REDACTED@svc:8080/path?q=1",
					Headers: []*flowpb.HTTPHeader{{Key: "Accept", Value: "a"}, {Key: "Accept", Value: "b"},
						{Key: "Traceparent", Value: traceparent}, {Key: "X-Request-Id", Value: "r1"}}}}},
				IsReply: boolp(false), EventType: et(129, 0), TrafficDirection: flowpb.TrafficDirection_EGRESS,
				TraceContext: &flowpb.TraceContext{Parent: &flowpb.TraceParent{TraceId: "4bf92f3577b34da6a3ce929d0e0e4736"}},
				Summary:      "HTTP/1.1 GET http://user:HUBBLE_REDACTED@svc:8080/path?q=1",
			},
		},
		{
			name: "HTTP response: latency and trace from the request",
			rec: &AccessLogRecord{Type: "Response", Timestamp: "2026-11-25T05:00:00.250000000Z", ObservationPoint: "Egress",
				SourceEndpoint: dst, DestinationEndpoint: src, Verdict: "Forwarded", TransportProtocol: 6,
				HTTP: &AccessLogHTTP{Code: 200, Method: "GET", URL: &url.URL{Scheme: "http", Host: "svc:8080", Path: "/path"}, Protocol: "HTTP/1.1",
					Headers: http.Header{"X-Request-Id": {"r1"}}}},
			want: &flowpb.Flow{
				Verdict: flowpb.Verdict_FORWARDED, IP: ipv4f("10.0.0.2", "10.0.0.1"),
				L4:     &flowpb.Layer4{Protocol: &flowpb.Layer4_TCP{TCP: &flowpb.TCP{SourcePort: 8080, DestinationPort: 41000}}},
				Source: l7ep(0, 2002), Destination: srcWant, Type: flowpb.FlowType_L7,
				L7: &flowpb.Layer7{Type: flowpb.L7FlowType_RESPONSE, LatencyNs: 250000000, Record: &flowpb.Layer7_Http{Http: &flowpb.HTTP{
					Code: 200, Method: "GET", Protocol: "HTTP/1.1", Url: "http://svc:8080/path",
					Headers: []*flowpb.HTTPHeader{{Key: "X-Request-Id", Value: "r1"}}}}},
				IsReply: boolp(true), Reply: true, EventType: et(129, 0), TrafficDirection: flowpb.TrafficDirection_EGRESS,
				TraceContext: &flowpb.TraceContext{Parent: &flowpb.TraceParent{TraceId: "4bf92f3577b34da6a3ce929d0e0e4736"}},
				Summary:      "HTTP/1.1 200 250ms (GET http://svc:8080/path)",
			},
		},
		{
			name: "DNS request over IPv6",
			rec: &AccessLogRecord{Type: "Request", Timestamp: "2026-11-25T05:00:01Z", ObservationPoint: "Egress",
				SourceEndpoint: src, DestinationEndpoint: dst, IPVersion: 1, Verdict: "Forwarded", TransportProtocol: 17,
				DNS: &AccessLogDNS{Query: "example.com.", ObservationSource: "proxy", QTypes: []uint16{1, 28}}},
			want: &flowpb.Flow{
				Verdict: flowpb.Verdict_FORWARDED, IP: ipv6f("fd00::1", "fd00::2"), L4: udpf(41000, 8080),
				Source: srcWant, Destination: l7ep(0, 2002), Type: flowpb.FlowType_L7,
				L7: &flowpb.Layer7{Type: flowpb.L7FlowType_REQUEST, Record: &flowpb.Layer7_Dns{Dns: &flowpb.DNS{
					Query: "example.com.", ObservationSource: "proxy", Qtypes: []string{"A", "AAAA"}}}},
				IsReply: boolp(false), EventType: et(129, 0), TrafficDirection: flowpb.TrafficDirection_EGRESS,
				Summary: "DNS Query example.com. A,AAAA",
			},
		},
		{
			name: "DNS response",
			rec: &AccessLogRecord{Type: "Response", Timestamp: "2026-11-25T05:00:01Z", ObservationPoint: "Ingress",
				SourceEndpoint: dst, DestinationEndpoint: src, Verdict: "Forwarded", TransportProtocol: 17,
				DNS: &AccessLogDNS{Query: "example.com.", IPs: []netip.Addr{netip.MustParseAddr("1.2.3.4"), netip.MustParseAddr("2001:db8::1")},
					TTL: 30, CNAMEs: []string{"a.example.com."}, ObservationSource: "proxy", QTypes: []uint16{1}, AnswerTypes: []uint16{5, 1, 999}}},
			want: &flowpb.Flow{
				Verdict: flowpb.Verdict_FORWARDED, IP: ipv4f("10.0.0.2", "10.0.0.1"), L4: udpf(8080, 41000),
				Source: l7ep(0, 2002), Destination: srcWant, Type: flowpb.FlowType_L7,
				L7: &flowpb.Layer7{Type: flowpb.L7FlowType_RESPONSE, Record: &flowpb.Layer7_Dns{Dns: &flowpb.DNS{
					Query: "example.com.", Ips: []string{"1.2.3.4", "2001:db8::1"}, Ttl: 30, Cnames: []string{"a.example.com."},
					ObservationSource: "proxy", Qtypes: []string{"A"}, Rrtypes: []string{"CNAME", "A", "Unknown"}}}},
				IsReply: boolp(true), Reply: true, EventType: et(129, 0), TrafficDirection: flowpb.TrafficDirection_INGRESS,
				Summary: `DNS Answer "1.2.3.4,2001:db8::1" CNAMEs: "a.example.com." TTL: 30 (Proxy example.com. A)`,
			},
		},
		{
			name: "DNS NXDOMAIN, denied",
			rec: &AccessLogRecord{Type: "Response", Timestamp: "2026-11-25T05:00:01Z",
				Verdict: "Denied", TransportProtocol: 17, DNS: &AccessLogDNS{Query: "nope.", RCode: 3}},
			want: &flowpb.Flow{
				Verdict: flowpb.Verdict_DROPPED, IP: ipv4f("", ""), L4: udpf(0, 0),
				Source: l7ep(0, 0), Destination: l7ep(0, 0), Type: flowpb.FlowType_L7,
				L7: &flowpb.Layer7{Type: flowpb.L7FlowType_RESPONSE, Record: &flowpb.Layer7_Dns{Dns: &flowpb.DNS{
					Query: "nope.", Rcode: 3}}},
				IsReply: boolp(true), Reply: true, EventType: et(129, 0),
				Summary: "DNS Answer RCode: Non-Existent Domain TTL: 0 (Query nope. )",
			},
		},
		{
			name: "Kafka request",
			rec: &AccessLogRecord{Type: "Request", Timestamp: "2026-11-25T05:00:01Z", Verdict: "Forwarded", TransportProtocol: 6,
				Kafka: &AccessLogKafka{APIVersion: 3, APIKey: "produce", CorrelationID: 7, ErrorCode: 9, Topic: struct{ Topic string }{"orders"}}},
			want: &flowpb.Flow{
				Verdict: flowpb.Verdict_FORWARDED, IP: ipv4f("", ""), L4: tcpf(0, 0, nil),
				Source: l7ep(0, 0), Destination: l7ep(0, 0), Type: flowpb.FlowType_L7,
				L7: &flowpb.Layer7{Type: flowpb.L7FlowType_REQUEST, Record: &flowpb.Layer7_Kafka{Kafka: &flowpb.Kafka{
					ApiVersion: 3, ApiKey: "produce", CorrelationId: 7, Topic: "orders"}}},
				IsReply: boolp(false), EventType: et(129, 0),
				Summary: "Kafka request produce correlation id 7 topic 'orders'",
			},
		},
		{
			name: "generic L7 sample",
			rec: &AccessLogRecord{Type: "Sample", Timestamp: "2026-11-25T05:00:01Z", Verdict: "Error", IPVersion: 7,
				L7: &AccessLogL7{Proto: "r2d2", Fields: map[string]string{"z": "1", "a": "2"}}},
			want: &flowpb.Flow{
				Verdict: flowpb.Verdict_ERROR, Source: l7ep(0, 0), Destination: l7ep(0, 0), Type: flowpb.FlowType_L7,
				L7:      &flowpb.Layer7{Type: flowpb.L7FlowType_SAMPLE},
				IsReply: boolp(false), EventType: et(129, 0), Summary: "r2d2 Fields: map[a:2 z:1]",
			},
		},
		{
			name: "bad timestamp",
			rec:  &AccessLogRecord{Type: "Request", Timestamp: "yesterday"},
			err:  ErrMalformed,
		},
	}
	d := testDecoder()
	reused := new(flowpb.Flow)
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			sample, err := EncodeAccessLog(c.rec)
			if err != nil {
				t.Fatal(err)
			}
			err = d.Decode(sample, reused)
			if c.err != nil {
				if !errors.Is(err, c.err) {
					t.Fatalf("err = %v, want %v", err, c.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			c.want.Time = timestamppb.New(testTime)
			if !proto.Equal(c.want, reused) {
				t.Errorf("flow mismatch\nwant: %s\ngot:  %s", text(c.want), text(reused))
			}
		})
	}
}

func TestAccessLogLegacyShape(t *testing.T) {
	// A record from an agent whose labels were strings and DNS IPs net.IP.
	type ep struct {
		ID       uint64
		IPv4     string
		Identity uint64
		Labels   []string
	}
	type dns struct {
		Query string
		IPs   [][]byte
	}
	rec := struct {
		Type, Timestamp string
		SourceEndpoint  ep
		Verdict         string
		DNS             *dns
	}{Type: "Response", Timestamp: "2026-11-25T05:00:01Z", SourceEndpoint: ep{ID: 1, IPv4: "10.0.0.9", Identity: 5, Labels: []string{"k8s:b=2", "k8s:a=1"}},
		Verdict: "Forwarded", DNS: &dns{Query: "x.", IPs: [][]byte{{9, 9, 9, 9}}}}
	var buf []byte
	{
		b, err := encodeGob(rec)
		if err != nil {
			t.Fatal(err)
		}
		buf = append([]byte{MessageTypeAccessLog}, b...)
	}
	f := new(flowpb.Flow)
	if err := testDecoder().Decode(buf, f); err != nil {
		t.Fatal(err)
	}
	if got := f.Source.Labels; len(got) != 2 || got[0] != "k8s:a=1" || got[1] != "k8s:b=2" {
		t.Errorf("labels = %v", got)
	}
	if got := f.L7.GetDns().GetIps(); len(got) != 1 || got[0] != "9.9.9.9" {
		t.Errorf("ips = %v", got)
	}
}

func TestAccessLogGarbage(t *testing.T) {
	for _, b := range [][]byte{{129}, {129, 1, 2, 3}, {129, 0xff, 0xff, 0xff, 0xff}} {
		if err := testDecoder().Decode(b, new(flowpb.Flow)); !errors.Is(err, ErrMalformed) {
			t.Errorf("%v: err = %v", b, err)
		}
	}
}

func TestTraceParent(t *testing.T) {
	for in, want := range map[string]string{
		"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01":      "4bf92f3577b34da6a3ce929d0e0e4736",
		"01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what": "4bf92f3577b34da6a3ce929d0e0e4736",
		"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x":    "",
		"ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01":      "",
		"00-00000000000000000000000000000000-00f067aa0ba902b7-01":      "",
		"00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01":      "",
		"00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01":      "",
		"": "",
	} {
		if got := traceParentID(in); got != want {
			t.Errorf("traceParentID(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestAccessLogCache checks the cached gob decoder against a fresh decode
// per record, over records of both shapes, interleaved with garbage.
func TestAccessLogCache(t *testing.T) {
	u, _ := url.Parse("http://svc/x")
	var streams [][]byte
	add := func(r *AccessLogRecord) {
		b, err := EncodeAccessLog(r)
		if err != nil {
			t.Fatal(err)
		}
		streams = append(streams, b[1:])
	}
	add(&AccessLogRecord{Type: "Request", Timestamp: "2026-11-25T05:00:00Z", HTTP: &AccessLogHTTP{Method: "GET", URL: u}})
	add(&AccessLogRecord{Type: "Response", Timestamp: "2026-11-25T05:00:01Z", DNS: &AccessLogDNS{Query: "a.", IPs: []netip.Addr{netip.MustParseAddr("1.1.1.1")}}})
	legacy, err := encodeGob(struct {
		Type, Timestamp string
		SourceEndpoint  struct{ Labels []string }
	}{Type: "Request", Timestamp: "2026-11-25T05:00:02Z", SourceEndpoint: struct{ Labels []string }{[]string{"k8s:a=b"}}})
	if err != nil {
		t.Fatal(err)
	}
	streams = append(streams, legacy, []byte{1, 2, 3})
	add(&AccessLogRecord{Type: "Sample", Timestamp: "2026-11-25T05:00:03Z", L7: &AccessLogL7{Proto: "x", Fields: map[string]string{"a": "b"}}})
	streams = append(streams, legacy)
	add(&AccessLogRecord{Type: "Request", Timestamp: "2026-11-25T05:00:04Z", SourceEndpoint: AccessLogEndpoint{ID: 9}})
	var c gobCache
	for round := 0; round < 2; round++ {
		for i, s := range streams {
			got, gerr := c.parse(s)
			want, werr := ParseAccessLog(s)
			if (gerr != nil) != (werr != nil) {
				t.Fatalf("stream %d: cached err %v, fresh err %v", i, gerr, werr)
			}
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("stream %d: cached %+v, fresh %+v", i, got, want)
			}
		}
	}
}
