// The side-by-side benchmarks (go run ./sidebyside): a module of their
// own, so that their peers (kfake, franz-go's producer) never become
// dependencies of flowbus.
module flowbus.test/bench

go 1.26.0

require (
	github.com/flowbus/flowbus v0.0.0
	github.com/segmentio/kafka-go v0.4.51
	github.com/twmb/franz-go v1.22.3
	github.com/twmb/franz-go/pkg/kfake v0.0.0-20260918054303-01f206a7e32c
	google.golang.org/protobuf v1.36.12
)

require (
	github.com/klauspost/compress v1.20.4 // indirect
	github.com/pierrec/lz4/v4 v4.1.33 // indirect
	github.com/twmb/franz-go/pkg/kmsg v1.15.1 // indirect
)

replace github.com/flowbus/flowbus => ../
