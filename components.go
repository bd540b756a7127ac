package main

// Component packages register their types from init.
import (
	_ "github.com/flowbus/flowbus/sinks/discard"
	_ "github.com/flowbus/flowbus/sinks/file"
	_ "github.com/flowbus/flowbus/sinks/kafka"
	_ "github.com/flowbus/flowbus/sinks/nats"
	_ "github.com/flowbus/flowbus/sources/ciliummonitor"
	_ "github.com/flowbus/flowbus/sources/ebpf"
	_ "github.com/flowbus/flowbus/sources/file"
	_ "github.com/flowbus/flowbus/sources/generate"
	_ "github.com/flowbus/flowbus/transforms/fieldmask"
	_ "github.com/flowbus/flowbus/transforms/filter"
	_ "github.com/flowbus/flowbus/transforms/ratelimit"
	_ "github.com/flowbus/flowbus/transforms/redact"
	_ "github.com/flowbus/flowbus/transforms/sample"
)
