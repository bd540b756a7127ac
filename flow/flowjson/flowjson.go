// Package flowjson encodes and decodes Hubble export JSON lines
// (observer.GetFlowsResponse / observer.ExportEvent) without reflection.
//
// The encoder writes byte for byte what Hubble's exporter writes: protojson
// with proto field names, re-encoded by encoding/json (compact, with <, >, &,
// U+2028 and U+2029 escaped). The decoder accepts what protojson accepts for
// these messages; lines outside its fast path (an Any extension, agent or
// debug events, unusual number or time forms, escapes in keys) are decoded by
// protojson itself, so results never differ. It is fastest on the
// canonical form the exporter writes (members in field order, compact), and
// a Decoder keeps the strings of consecutive lines in shared blocks.
//
// The per-message code is generated from flow.proto's descriptors by
// internal/gen (zz_generated.go); protojson stays the reference in tests.
package flowjson

//go:generate go run ./internal/gen zz_generated.go
