// Command flowbus runs a YAML-defined pipeline that turns kernel network
// events into Hubble flows and publishes them (see README.md).
//
// The component types it knows are registered by the packages imported in
// components.go.
package main

import "github.com/flowbus/flowbus/pipeline/cli"

func main() { cli.Run() }
