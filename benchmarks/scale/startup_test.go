package main

import (
	"os"
	"path/filepath"
	"strconv"
	"testing"
)

// benchServices is the number of services of BenchmarkStartup
// (SCALE_SERVICES, default 1,000 so that `go test -bench` stays quick;
// the profile of issue 17 is taken at 100,000).
func benchServices() int {
	if n, err := strconv.Atoi(os.Getenv("SCALE_SERVICES")); err == nil && n > 0 {
		return n
	}
	return 1000
}

// hosts8 are 8 loopback targets' addresses (none runs: start-up only).
var hosts8 = []string{"127.0.0.1:18080", "127.0.0.2:18080", "127.0.0.3:18080", "127.0.0.4:18080",
	"127.0.0.5:18080", "127.0.0.6:18080", "127.0.0.7:18080", "127.0.0.8:18080"}

// BenchmarkStartup is the binary's start-up: config.Load of a generated
// file, then the plugin's Init with the memory store (no gather).
func BenchmarkStartup(b *testing.B) {
	n := benchServices()
	path := filepath.Join(b.TempDir(), "scale.conf")
	if err := os.WriteFile(path, genConfig(n, hosts8, ""), 0o600); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	cpu0 := cpuTime()
	for b.Loop() {
		p, err := startup(path)
		if err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		p.Stop()
		b.StartTimer()
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(n), "ns/service")
	b.ReportMetric(float64(cpuTime()-cpu0)/float64(b.N)/1e9, "cpu-s/op")
}
