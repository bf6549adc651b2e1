package main

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"time"

	"github.com/service-latency/service_latency/benchmarks/internal/loopback"
)

// targets are latency_target processes (cmd/latency_target), one per
// loopback address 127.0.0.1, 127.0.0.2, ...: separate processes, so their
// CPU is not counted as the prober's, and several addresses, so the
// 4-tuples of 10,000 fresh connections per gather (and their TIME_WAIT)
// spread over several destinations instead of exhausting one's ephemeral
// ports.
type targets struct {
	*loopback.Targets
	logs []*bytes.Buffer
}

func startTargets(path string, n, gomaxprocs int, extra ...string) (*targets, error) {
	t := &targets{}
	o := loopback.Options{
		Args:   append([]string{"-delay", "0s"}, extra...),
		Output: func(int) *bytes.Buffer { b := &bytes.Buffer{}; t.logs = append(t.logs, b); return b },
	}
	if gomaxprocs > 0 {
		o.Env = []string{"GOMAXPROCS=" + strconv.Itoa(gomaxprocs)}
	}
	lt, err := loopback.Start(path, n, o)
	if err != nil {
		return nil, err
	}
	t.Targets = lt
	return t, nil
}

// urls returns n distinct URLs spread over the targets, each asking for
// the given delay.
func (t *targets) urls(n int, delay time.Duration) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = loopback.URL(t.Hosts, i, delay)
	}
	return out
}

// arrivals returns (and makes the targets forget) the arrival times of
// the requests they received since the last call, sorted; the targets
// must run with -record-arrivals.
func (t *targets) arrivals() ([]time.Time, error) {
	c := &http.Client{Timeout: 10 * time.Second}
	var out []time.Time
	for _, h := range t.Hosts {
		resp, err := c.Get("http://" + h + "/_arrivals")
		if err != nil {
			return nil, err
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			return nil, err
		}
		if resp.StatusCode != http.StatusOK {
			return nil, fmt.Errorf("%s: status %d", h, resp.StatusCode)
		}
		for f := range bytes.FieldsSeq(body) {
			ns, err := strconv.ParseInt(string(f), 10, 64)
			if err != nil {
				return nil, fmt.Errorf("%s: bad arrival %q (is it run with -record-arrivals?)", h, f)
			}
			out = append(out, time.Unix(0, ns))
		}
	}
	slices.SortFunc(out, func(a, b time.Time) int { return a.Compare(b) })
	return out, nil
}

// burstSlice is the slice of time in which a burst is counted.
const burstSlice = 100 * time.Millisecond

// burst is what the targets saw of one gather: the requests that arrived
// between its start and its end, over how long (first to last), and the
// most of them that arrived within any slice of the given length (a
// sliding window).
type burst struct {
	Arrived int
	Span    time.Duration
	Max     int
}

// bursts matches the sorted arrivals to each gather.
func bursts(gathers []gatherSample, at []time.Time, slice time.Duration) []burst {
	out := make([]burst, 0, len(gathers))
	for _, g := range gathers {
		lo, _ := slices.BinarySearchFunc(at, g.Start, func(a, b time.Time) int { return a.Compare(b) })
		hi, _ := slices.BinarySearchFunc(at, g.End, func(a, b time.Time) int { return a.Compare(b) })
		in := at[lo:hi]
		b := burst{Arrived: len(in)}
		if len(in) > 0 {
			b.Span = in[len(in)-1].Sub(in[0])
		}
		i := 0
		for j := range in {
			for in[j].Sub(in[i]) >= slice {
				i++
			}
			b.Max = max(b.Max, j-i+1)
		}
		out = append(out, b)
	}
	return out
}

func (t *targets) overshoot(d time.Duration, n int) (time.Duration, error) {
	return loopback.Overshoot(t.Hosts[0], d, n)
}
