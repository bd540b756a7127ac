// Command flowbus runs a YAML-defined pipeline that turns kernel network
// events into Hubble flows and publishes them (see README.md).
//
// The component types it knows are registered by components/all.
package main

import (
	_ "github.com/flowbus/flowbus/components/all"
	"github.com/flowbus/flowbus/pipeline/cli"
)

func main() { cli.Run() }
