package trace

import (
	"math/rand"
	"time"
)

// SampleDuration draws one execution time from d by inverse-transform
// sampling: a uniform quantile in [0, 100) is mapped through the
// piecewise-linear CDF whose knots are (0,P0), (1,P1), (25,P25), (50,P50),
// (75,P75), (99,P99) and (100,P100). The result therefore lies in
// [P0, P100]. Durations are in milliseconds; the result is rounded to the
// nearest nanosecond. Percentiles that decrease, which LoadAzure2019
// rejects, give a result between the neighbouring knots.
func SampleDuration(r *rand.Rand, d Durations) time.Duration {
	return msToDuration(d.quantile(r.Float64() * 100))
}

// quantile returns the interpolated percentile q in [0, 100].
func (d Durations) quantile(q float64) float64 {
	// Unrolled: this runs once per simulated invocation.
	switch {
	case q < 1:
		return d.P0 + (d.P1-d.P0)*q
	case q < 25:
		return d.P1 + (d.P25-d.P1)*(q-1)/24
	case q < 50:
		return d.P25 + (d.P50-d.P25)*(q-25)/25
	case q < 75:
		return d.P50 + (d.P75-d.P50)*(q-50)/25
	case q < 99:
		return d.P75 + (d.P99-d.P75)*(q-75)/24
	default:
		return d.P99 + (d.P100-d.P99)*(q-99)
	}
}

// msToDuration converts milliseconds to a Duration, rounding to the
// nearest nanosecond.
func msToDuration(ms float64) time.Duration {
	return time.Duration(ms*1e6 + 0.5)
}
