package config

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/service-latency/service_latency/plugins/inputs/service_latency/store"
)

func TestStateSaveInterval(t *testing.T) {
	compile := func(body string) (*Spec, error) {
		f, err := Parse([]byte("[[inputs.service_latency]]\n" + body + "[[inputs.service_latency.service]]\n  url = \"http://127.0.0.1/\"\n"))
		require.NoError(t, err)
		s, err := Compile(&f.Config)
		if err != nil {
			return nil, f.Locate(err)
		}
		return s, nil
	}
	s, err := compile("  state_file = \"/tmp/x.state\"\n")
	require.NoError(t, err)
	require.Equal(t, store.DefaultSaveInterval, s.Store.SaveInterval, "the default")
	s, err = compile("  state_file = \"/tmp/x.state\"\n  state_save_interval = \"0s\"\n")
	require.NoError(t, err)
	require.Zero(t, s.Store.SaveInterval, "after every update")
	s, err = compile("  state_file = \"/tmp/x.state\"\n  state_save_interval = \"5m\"\n")
	require.NoError(t, err)
	require.Equal(t, 5*time.Minute, s.Store.SaveInterval)
	for body, want := range map[string]string{
		"  state_save_interval = \"1m\"\n":                             "2: state_save_interval: needs a state_file",
		"  state_file = \"/tmp/x\"\n  state_save_interval = \"-1s\"\n": "3: state_save_interval: must not be negative",
		"  state = \"redis\"\n  state_save_interval = \"1m\"\n  [inputs.service_latency.redis]\n    address = \"127.0.0.1:1\"\n": "3: state_save_interval: only for state = \"memory\"",
	} {
		_, err := compile(body)
		require.ErrorContains(t, err, want)
	}
	a, b := Default(), Default()
	d := a.Timeout
	b.StateSaveInterval = &d
	require.Equal(t, "state_save_interval", StoreDiff(&a, &b), "not applied on reload")
}
