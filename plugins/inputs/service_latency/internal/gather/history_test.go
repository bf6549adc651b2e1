package gather

import (
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestHistoryNewestFirstBounded(t *testing.T) {
	tg := &Target{}
	base := time.Unix(1_700_000_000, 0)
	var got []HistoryEntry
	for i := range 45 {
		got = tg.remember(HistoryEntry{At: base.Add(time.Duration(i) * time.Second), Result: fmt.Sprint(i)})
		require.Len(t, got, min(i+1, HistoryLen))
		for k, h := range got {
			require.Equal(t, fmt.Sprint(i-k), h.Result, "entry %d after %d rounds", k, i+1)
		}
	}
}
