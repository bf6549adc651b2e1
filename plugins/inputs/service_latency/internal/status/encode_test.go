package status

import (
	"encoding/json"
	"math"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/service-latency/service_latency/plugins/inputs/service_latency/internal/gather"
)

// marshalService is what encoding/json writes for sv at its place in the
// document (legacyService is today's serviceStatus).
func marshalService(t *testing.T, sv *gather.Service, le *serviceError) string {
	l := legacyService{Name: sv.Name, Tags: sv.Tags}
	if sv.Fields != nil {
		l.Fields = map[string]any{}
		for k, v := range sv.Fields {
			if f, ok := v.(float64); ok && (math.IsNaN(f) || math.IsInf(f, 0)) {
				v = nil
			}
			l.Fields[k] = v
		}
	}
	if len(sv.Histogram) > 0 {
		l.Histogram = map[string]int64{}
		for _, h := range sv.Histogram {
			l.Histogram[h.LE] = h.Count
		}
	}
	if !sv.LastSuccess.IsZero() {
		u := sv.LastSuccess.UTC()
		l.LastSuccess = &u
	}
	if !sv.LastFailure.IsZero() {
		u := sv.LastFailure.UTC()
		l.LastFailure = &u
	}
	if le != nil {
		l.LastError = le.msg
		at := le.at
		l.LastErrorAt = &at
	}
	b, err := json.MarshalIndent(&l, "    ", "  ")
	require.NoError(t, err)
	return string(b)
}

func randString(r *rand.Rand) string {
	const alphabet = "ab<>&\"\\/\n\r\t\b\f\x00\x1f\x7f é€\u2028\u2029😀"
	runes := []rune(alphabet)
	n := r.IntN(12)
	var b []byte
	for range n {
		switch r.IntN(10) {
		case 0:
			b = append(b, byte(0x80+r.IntN(0x80))) // invalid UTF-8
		default:
			b = append(b, string(runes[r.IntN(len(runes))])...)
		}
	}
	return string(b)
}

func randValue(r *rand.Rand) any {
	switch r.IntN(14) {
	case 0:
		return nil
	case 1:
		return math.NaN()
	case 2:
		return math.Inf(r.IntN(2)*2 - 1)
	case 3:
		return r.Int64() - r.Int64()
	case 4:
		return uint64(r.Uint64())
	case 5:
		return r.IntN(2) == 0
	case 6:
		return randString(r)
	case 7:
		return r.IntN(1000)
	case 8:
		return float32(r.NormFloat64())
	case 9:
		return []int{1, 2}
	case 10:
		return map[string]any{"x": 1.5, "y": []string{"a"}}
	case 11:
		return math.Float64frombits(r.Uint64()) // any exponent
	case 12:
		return []float64{1e-7, 1e21, 0, -0.0, 123456789.125, 5e-324}[r.IntN(6)]
	default:
		return r.NormFloat64() * math.Pow(10, float64(r.IntN(50)-25))
	}
}

// The hand-written encoder writes what encoding/json does, for any tags,
// field values, histogram and times.
func TestServiceEncoderMatchesEncodingJSON(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	var e serviceEncoder
	for n := range 3000 {
		sv := gather.Service{Name: randString(r)}
		if r.IntN(8) > 0 {
			sv.Tags = map[string]string{}
			for range r.IntN(5) {
				sv.Tags[randString(r)] = randString(r)
			}
		}
		if r.IntN(8) > 0 {
			sv.Fields = map[string]any{}
			for range r.IntN(8) {
				sv.Fields[randString(r)] = randValue(r)
			}
		}
		for range r.IntN(4) {
			sv.Histogram = append(sv.Histogram, gather.Bucket{LE: []string{"0.1", "+Inf", "1", "0.1"}[r.IntN(4)], Count: r.Int64N(1000)})
		}
		loc := time.FixedZone("X", 3600*(r.IntN(25)-12))
		if r.IntN(2) == 0 {
			sv.LastSuccess = time.Unix(r.Int64N(4e9), r.Int64N(1e9)).In(loc)
		}
		if r.IntN(2) == 0 {
			sv.LastFailure = time.Unix(r.Int64N(4e9), 0).In(loc)
		}
		var le *serviceError
		if r.IntN(3) == 0 {
			le = &serviceError{msg: "x" + randString(r), at: time.Unix(r.Int64N(4e9), r.Int64N(1e9)).UTC()}
		}
		got, err := e.appendService(nil, &sv, le)
		require.NoError(t, err)
		require.Equal(t, marshalService(t, &sv, le), string(got), "case %d: %#v", n, sv)
	}
}

func TestAppendJSONStringMatchesEncodingJSON(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	cases := []string{
		"ok: the last gather ended 1.5s ago (gather interval 10s)",
		"late: the last gather ended 2m1s ago, more than 2 × the gather interval (1m0s)",
		"q\"b\\s/<>&\n\r\t\b\f\x01\x1f\u2028\u2029é\xff\xe2\x80",
	}
	for range 5000 {
		cases = append(cases, randString(r))
	}
	for _, s := range cases {
		want, err := json.Marshal(s)
		require.NoError(t, err)
		require.Equal(t, string(want), string(appendJSONString(nil, s)), "%q", s)
	}
}

func FuzzAppendJSONString(f *testing.F) {
	f.Add("a<b>\u2028\xff")
	f.Fuzz(func(t *testing.T, s string) {
		want, _ := json.Marshal(s)
		if got := appendJSONString(nil, s); string(got) != string(want) {
			t.Fatalf("%q: got %s, want %s", s, got, want)
		}
	})
}

// A value encoding/json cannot write is the render's error; a year
// outside 0–9999 too.
func TestServiceEncoderErrors(t *testing.T) {
	var e serviceEncoder
	_, err := e.appendService(nil, &gather.Service{Fields: map[string]any{"c": complex(1, 2)}}, nil)
	require.ErrorContains(t, err, "unsupported type")
	_, err = e.appendService(nil, &gather.Service{LastSuccess: time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC)}, nil)
	require.Error(t, err)
}
