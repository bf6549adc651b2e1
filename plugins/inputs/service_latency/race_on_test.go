//go:build race

package service_latency

// raceEnabled is true when the tests run under the race detector.
const raceEnabled = true
