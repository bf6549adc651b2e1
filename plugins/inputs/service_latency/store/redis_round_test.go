package store

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/service-latency/service_latency/internal/redistest"
	"github.com/service-latency/service_latency/plugins/inputs/service_latency/stats"
)

// A round of several samples is several observations of one service in
// one Update, each with its own time: every one is applied once, in
// order, by every store (the Redis script skips an observation whose
// sequence number it has seen, so each needs its own).
func TestSeveralObservationsOfAServiceInOneUpdate(t *testing.T) {
	rs := redistest.Start(t)
	params := stats.Params{Window: 10, HalfLife: time.Minute}
	r, _ := newRedis(t, rs)
	stores := map[string]Store{"memory": NewMemory(), "redis": r}
	for name, st := range stores {
		t.Run(name, func(t *testing.T) {
			base := time.Unix(1_700_000_000, 0)
			for u := range 3 {
				var obs []Observation
				for k := range 5 {
					obs = append(obs, Observation{Service: "api", Params: params, OK: k != 2, Latency: 0.01 * float64(k+1), At: base.Add(time.Duration(u*10+k) * time.Second)})
				}
				obs = append(obs, Observation{Service: "other", Params: params, OK: true, Latency: 0.5})
				res, err := st.Update(context.Background(), base.Add(time.Duration(u*10)*time.Second), obs)
				require.NoError(t, err)
				require.Len(t, res, 6)
				s := res[4].State
				require.Equal(t, int64(4*(u+1)), s.Count, "every successful sample counted once")
				require.Equal(t, int64(5*(u+1)), s.Probes)
				require.Equal(t, int64(u+1), s.Failures)
				require.Equal(t, base.Add(time.Duration(u*10+4)*time.Second).UnixNano(), s.LastSuccess, "the sample's own time")
				require.Equal(t, int64(u+1), res[5].State.Count)
			}
		})
	}
}
