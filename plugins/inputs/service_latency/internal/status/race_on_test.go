//go:build race

package status

// raceEnabled is true when the tests run under the race detector.
const raceEnabled = true
