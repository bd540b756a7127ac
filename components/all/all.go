// Package all links every component type into the binary: importing it
// registers each source, transform and sink with the pipeline runtime. It
// is the only package that imports every component; the binary and the
// end-to-end tests import it, nothing under pipeline/ does.
package all

import (
	_ "github.com/flowbus/flowbus/sinks/discard"
	_ "github.com/flowbus/flowbus/sinks/file"
	_ "github.com/flowbus/flowbus/sinks/hubble"
	_ "github.com/flowbus/flowbus/sinks/kafka"
	_ "github.com/flowbus/flowbus/sinks/nats"
	_ "github.com/flowbus/flowbus/sinks/parquet"
	_ "github.com/flowbus/flowbus/sources/ciliummonitor"
	_ "github.com/flowbus/flowbus/sources/ebpf"
	_ "github.com/flowbus/flowbus/sources/file"
	_ "github.com/flowbus/flowbus/sources/generate"
	_ "github.com/flowbus/flowbus/sources/hubble"
	_ "github.com/flowbus/flowbus/sources/kafka"
	_ "github.com/flowbus/flowbus/sources/nats"
	_ "github.com/flowbus/flowbus/transforms/fieldmask"
	_ "github.com/flowbus/flowbus/transforms/filter"
	_ "github.com/flowbus/flowbus/transforms/kubernetes"
	_ "github.com/flowbus/flowbus/transforms/ratelimit"
	_ "github.com/flowbus/flowbus/transforms/redact"
	_ "github.com/flowbus/flowbus/transforms/sample"
)
