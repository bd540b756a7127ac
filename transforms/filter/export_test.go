package filter

// RandomFlowForTest exposes the varied-flow generator to the external
// tests and benchmarks.
var RandomFlowForTest = randomFlow
