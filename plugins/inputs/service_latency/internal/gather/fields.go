package gather

import (
	"time"

	"github.com/service-latency/service_latency/plugins/inputs/service_latency/probe"
	"github.com/service-latency/service_latency/plugins/inputs/service_latency/stats"
)

// fieldsOf turns a probe result and the service's state snapshot into the
// tags and fields of its service_latency metric. It is a pure function.
func fieldsOf(t *Target, r *probe.Result, snap *stats.Snapshot, shape Shape) (map[string]string, map[string]any) {
	tags := baseTags(t, 1)
	if !shape.NoResultTag {
		tags["result"] = r.Outcome.String()
	}

	// At most maxStateFields state fields besides the percentiles: an
	// exact bound keeps the map in the smallest table that holds them.
	fields := make(map[string]any, maxStateFields+len(r.Fields)+2*len(t.Percentiles))
	if r.Outcome == probe.Success {
		fields["latency"] = r.Latency.Seconds()
	}
	fields["result_code"] = int64(r.Outcome)
	for _, f := range r.Fields {
		if _, isString := f.Value.(string); isString && shape.NoStringFields {
			continue
		}
		fields[f.Key] = f.Value
	}
	stateFields(fields, snap, &t.fieldNames)
	return tags, fields
}

// verdictFields adds the service's status: status (string: dropped with
// string_fields = false), status_code (fixed numbers, see stats.Status)
// and status_since (seconds in the status at the round's time at).
func verdictFields(fields map[string]any, v *stats.Verdict, at time.Time, shape Shape) {
	if !shape.NoStringFields {
		fields["status"] = v.Status.String()
	}
	fields["status_code"] = int64(v.Status)
	fields["status_since"] = v.SinceAt(at.UnixNano())
}

// Shape is how metrics are shaped for the output they go to.
// Telegraf's prometheus_client turns every tag and every string field into
// a label, and a label whose value changes starts a new series while the
// old one stays exposed (until its expiration_interval): a service that
// went from result=timeout back to success would show both, and a rule on
// consecutive_failures would still see the failing one. With both set, a
// service is one series; result_code carries the result.
type Shape struct {
	NoResultTag    bool // result_tag = false: no `result` tag
	NoStringFields bool // string_fields = false: no string fields
}

// histogram returns the service's cumulative buckets and the tags of its
// service_latency_histogram metrics (less "le").
func histogram(t *Target, snap *stats.Snapshot) ([]Bucket, map[string]string) {
	if len(snap.Cumulative) == 0 {
		return nil, nil
	}
	buckets := make([]Bucket, len(snap.Cumulative))
	for i, c := range snap.Cumulative {
		buckets[i] = Bucket{LE: t.le[i], Count: c}
	}
	return buckets, baseTags(t, 0)
}

// baseTags are the tags every metric of a service carries: its own and
// service, probe, server; room is left for extra more.
func baseTags(t *Target, extra int) map[string]string {
	tags := make(map[string]string, 3+extra+len(t.Tags))
	for k, v := range t.Tags {
		tags[k] = v
	}
	tags["service"] = t.Name
	tags["probe"] = t.Prober.Kind()
	tags["server"] = t.Server
	return tags
}

// maxStateFields is the most fields metric and stateFields add besides the
// probe's fields and the percentiles: latency, result_code, latency_count,
// probes, failures, consecutive_failures, latency_avg, latency_min,
// latency_max, latency_ewma, latency_stddev, availability, jitter, and
// the verdict's status, status_code, status_since.
const maxStateFields = 16

// stateFields adds the fields of a service's state. A statistic with no
// data yet (no successful sample, an empty window) is absent.
func stateFields(fields map[string]any, s *stats.Snapshot, names *percentileNames) {
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
