package main

import (
	"github.com/service-latency/service_latency/plugins/inputs/service_latency"
	"github.com/service-latency/service_latency/plugins/inputs/service_latency/config"
	"github.com/service-latency/service_latency/plugins/inputs/service_latency/store"

	"github.com/service-latency/service_latency/benchmarks/internal/loopback"

	"fmt"
	"strings"
	"syscall"
	"time"
)

// genConfig is the plugin's config file for n services: service i is
// named "svc-i" and probes loopback.URL(hosts, i, 1ms) on one of the
// targets; every tenth service has a tag. extra is added to the plugin
// table (state_file, keep_alive, ...).
func genConfig(n int, hosts []string, extra string) []byte {
	var b strings.Builder
	b.Grow(n * 110)
	b.WriteString("[[inputs.service_latency]]\n  timeout = \"5s\"\n")
	b.WriteString(extra)
	for i := range n {
		fmt.Fprintf(&b, "  [[inputs.service_latency.service]]\n    name = \"svc-%d\"\n    url = %q\n", i, loopback.URL(hosts, i, time.Millisecond))
		if i%10 == 0 {
			fmt.Fprintf(&b, "    tags = { team = \"t%d\" }\n", i%7)
		}
	}
	return []byte(b.String())
}

// cpuTime is the process's user + system time.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// startup is what the binary does before its first gather.
func startup(path string) (*service_latency.ServiceLatency, error) {
	f, err := config.Load(path)
	if err != nil {
		return nil, err
	}
	p := service_latency.New()
	p.Config = f.Config
	p.Log = store.NopLogger{}
	if err := p.Init(); err != nil {
		return nil, f.Locate(err)
	}
	return p, nil
}
