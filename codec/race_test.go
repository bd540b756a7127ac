//go:build race

package codec

// raceEnabled: the race detector makes sync.Pool drop some of what is put
// back, so the JSON encoder's pooled cache is sometimes made anew.
const raceEnabled = true
