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

// knots are the percentiles that Durations gives, in order.
var knots = [7]float64{0, 1, 25, 50, 75, 99, 100}

// segOf maps floor(q) for q in [0, 100) to the index of the CDF segment
// that contains q. It is a constant lookup table.
var segOf = func() (s [100]uint8) {
	for q := range s {
		for k := 1; k < len(knots); k++ {
			if float64(q) >= knots[k] {
				s[q] = uint8(k)
			}
		}
	}
	return s
}()

// sampler is a Durations precomputed for fast inverse-CDF sampling: on
// segment k the value in ns is a[k] + b[k]*q. It gives the same result as
// quantile up to floating-point rounding, without branches that the CPU
// would mispredict on random quantiles.
type sampler struct {
	a, b   [6]float64
	lo, hi float64 // P0 and P100 in ns, to clamp rounding
}

func newSampler(d Durations) sampler {
	v := [7]float64{d.P0, d.P1, d.P25, d.P50, d.P75, d.P99, d.P100}
	var s sampler
	for k := range 6 {
		slope := (v[k+1] - v[k]) * 1e6 / (knots[k+1] - knots[k])
		s.b[k] = slope
		s.a[k] = v[k]*1e6 - slope*knots[k]
	}
	s.lo, s.hi = v[0]*1e6, max(v[0], v[6])*1e6
	return s
}

// at returns the execution time at quantile q in [0, 100).
func (s *sampler) at(q float64) time.Duration {
	i := min(int(q), 99)
	k := segOf[i]
	ns := s.a[k] + s.b[k]*q
	return time.Duration(min(max(ns, s.lo), s.hi) + 0.5)
}
