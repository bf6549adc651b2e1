package service_latency

import (
	"fmt"

	"github.com/service-latency/service_latency/plugins/inputs/service_latency/store"
)

// RedisConfig is the [inputs.service_latency.redis] table.
type RedisConfig struct {
	Address string `toml:"address"`
}

// initStore builds the store the config asks for. No network I/O.
func (p *ServiceLatency) initStore() error {
	switch p.State {
	case "", "memory":
		p.memStore = store.NewMemory()
		p.store = p.memStore
		return nil
	}
	return &ConfigError{Service: -1, Key: "state", Err: fmt.Errorf("unknown store %q (want \"memory\" or \"redis\")", p.State)}
}
