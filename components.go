package main

// Component packages register their types from init.
import (
	_ "github.com/flowbus/flowbus/transforms/filter"
)
