package gather

import (
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/service-latency/service_latency/plugins/inputs/service_latency/probe"
)

func TestHistoryNewestFirstBounded(t *testing.T) {
	tg := &Target{}
	base := time.Unix(1_700_000_000, 0)
	var got []HistoryEntry
	for i := range 45 {
		r := probe.Result{Outcome: probe.Success, Latency: time.Duration(i+1) * time.Millisecond}
		msg := ""
		if i%3 == 0 {
			r = probe.Result{Outcome: probe.Timeout, Err: errors.New("late")}
			msg = "timeout: late"
		}
		tg.remember(base.Add(time.Duration(i)*time.Second), &r, msg)
		got = tg.recent()
		require.Len(t, got, min(i+1, HistoryLen))
		for k, h := range got {
			n := i - k
			require.True(t, base.Add(time.Duration(n)*time.Second).Equal(h.At), "entry %d after %d rounds", k, i+1)
			if n%3 == 0 {
				require.Equal(t, "timeout", h.Result)
				require.Equal(t, "timeout: late", h.Error)
				require.Zero(t, h.Latency)
			} else {
				require.Equal(t, "success", h.Result)
				require.InDelta(t, float64(n+1)/1000, h.Latency, 1e-12)
			}
		}
	}
}
