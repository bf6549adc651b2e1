package service_latency

import (
	"time"

	"github.com/influxdata/telegraf"

	"github.com/service-latency/service_latency/plugins/inputs/service_latency/probe"
	"github.com/service-latency/service_latency/plugins/inputs/service_latency/stats"
)

// emit adds the service's metric (and its histogram, when configured).
func (p *ServiceLatency) emit(acc telegraf.Accumulator, now time.Time, t *target, r *probe.Result, st *stats.State) {
	tags := make(map[string]string, 4+len(t.tags))
	for k, v := range t.tags {
		tags[k] = v
	}
	tags["service"] = t.name
	tags["probe"] = t.prober.Kind()
	tags["server"] = t.server
	tags["result"] = r.Outcome.String()

	// At most maxStateFields state fields besides the percentiles: an
	// exact bound keeps the map in the smallest table that holds them.
	fields := make(map[string]interface{}, maxStateFields+len(r.Fields)+2*len(t.percentiles))
	if r.Outcome == probe.Success {
		fields["latency"] = r.Latency.Seconds()
	}
	fields["result_code"] = int64(r.Outcome)
	for _, f := range r.Fields {
		fields[f.Key] = f.Value
	}
	snap := &p.snap
	st.Snapshot(t.percentiles, snap)
	stateFields(fields, snap, &t.fieldNames)
	acc.AddFields(Measurement, fields, tags, now)
	p.noteStatus(t, r, st, tags, fields, now)

	if len(snap.Cumulative) > 0 {
		for i, c := range snap.Cumulative {
			htags := map[string]string{"service": t.name, "probe": tags["probe"], "server": t.server, "le": t.le[i]}
			for k, v := range t.tags {
				htags[k] = v
			}
			acc.AddFields(HistogramMeasurement, map[string]interface{}{"count": c}, htags, now)
		}
	}
}

// maxStateFields is the most fields emit and stateFields add besides the
// probe's fields and the percentiles: latency, result_code, latency_count,
// probes, failures, consecutive_failures, latency_avg, latency_min,
// latency_max, latency_ewma, latency_stddev, availability, jitter.
const maxStateFields = 13

// stateFields adds the fields of a service's state. A statistic with no
// data yet (no successful sample, an empty window) is absent.
func stateFields(fields map[string]interface{}, s *stats.Snapshot, names *percentileNames) {
	fields["latency_count"] = s.Count
	fields["probes"] = s.Probes
	fields["failures"] = s.Failures
	fields["consecutive_failures"] = s.ConsecutiveFailures
	if s.Count > 0 {
		fields["latency_avg"] = s.Mean
		fields["latency_min"] = s.Min
		fields["latency_max"] = s.Max
		fields["latency_ewma"] = s.EWMA
		for i, v := range s.Lifetime {
			fields[names.lifetime[i]] = v
		}
	}
	if s.HasStddev {
		fields["latency_stddev"] = s.Stddev
	}
	if s.WindowProbes > 0 {
		fields["availability"] = s.Availability
	}
	if s.WindowSuccesses > 0 {
		for i, v := range s.Window {
			fields[names.window[i]] = v
		}
	}
	if s.WindowSuccesses >= 2 {
		fields["jitter"] = s.Jitter
	}
}
