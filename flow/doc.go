// Package flow owns flowbus's event schema: Go types generated from
// flow.proto, which is wire- and JSON-identical to Cilium Hubble's flow API
// (proto package "flow"). Subpackages hold the observer envelope
// (observer.GetFlowsResponse) and the relay node-status messages it refers to.
package flow

// SchemaVersion names the Hubble API release whose flow.proto this schema
// matches field for field (it is a superset of Cilium v1.16.2).
const SchemaVersion = "cilium-v1.20.2"
