package main

// The peer of the keeping-up part: a plain net/http loop with a fresh
// connection per request (DisableKeepAlives), the same N URLs as ours,
// at most Concurrency requests at once, each started at its own offset
// within the window, as the plugin's engine does with its spread (the
// workers take the requests in the order of their offsets and sleep until
// each one's time).

import (
	"math/rand/v2"
	"net"
	"net/http"
	"slices"
	"time"

	"github.com/service-latency/service_latency/benchmarks/internal/loopback"
)

type pacedPlain struct {
	client *http.Client
	tr     *http.Transport
	urls   []string
	// offsets are fractions of the window in [0, 1), sorted: uniformly
	// random with a fixed seed, like the plugin's hashed offsets.
	offsets []float64
	conc    int
}

func newPacedPlain(sp *keepupSpec) *pacedPlain {
	tr := &http.Transport{
		DialContext:       (&net.Dialer{Timeout: sp.Timeout, KeepAlive: -1}).DialContext,
		DisableKeepAlives: true,
	}
	p := &pacedPlain{client: &http.Client{Transport: tr, Timeout: sp.Timeout}, tr: tr, conc: max(1, sp.Concurrency)}
	r := rand.New(rand.NewPCG(uint64(sp.N), 17))
	for i := range sp.N {
		p.urls = append(p.urls, loopback.URL(sp.Hosts, i, sp.Delay))
		p.offsets = append(p.offsets, r.Float64())
	}
	slices.Sort(p.offsets)
	return p
}

// gather requests every URL once, URL i at window × offsets[i] after the
// start, and hands each result to acc once all are done.
func (p *pacedPlain) gather(acc *keepAcc, window time.Duration) {
	start := time.Now()
	begun := make([]time.Time, len(p.urls))
	took := make([]time.Duration, len(p.urls))
	errs := make([]error, len(p.urls))
	loopback.Each(len(p.urls), p.conc, func(i int) {
		time.Sleep(time.Until(start.Add(time.Duration(p.offsets[i] * float64(window)))))
		begun[i] = time.Now()
		took[i], errs[i] = p.get(p.urls[i])
	})
	for i := range p.urls {
		if errs[i] != nil {
			acc.AddError(errs[i])
		}
		acc.observe(begun[i], errs[i] == nil, took[i].Seconds())
	}
}

// get is one request: from before the request to the body read and
// closed (what ours's latency spans).
func (p *pacedPlain) get(u string) (time.Duration, error) {
	return loopback.TimedGet(p.client, u)
}

func (p *pacedPlain) close() { p.tr.CloseIdleConnections() }
