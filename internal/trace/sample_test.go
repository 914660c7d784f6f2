package trace

import (
	"math"
	"math/rand"
	"testing"
	"time"
)

func TestQuantileKnots(t *testing.T) {
	d := Durations{P0: 0, P1: 10, P25: 20, P50: 30, P75: 40, P99: 50, P100: 60}
	tests := []struct{ q, want float64 }{
		{0, 0}, {0.5, 5}, {1, 10}, {13, 15}, {25, 20}, {37.5, 25}, {50, 30},
		{62.5, 35}, {75, 40}, {87, 45}, {99, 50}, {99.5, 55}, {100, 60},
	}
	for _, tt := range tests {
		if got := d.quantile(tt.q); math.Abs(got-tt.want) > 1e-9 {
			t.Errorf("quantile(%v) = %v, want %v", tt.q, got, tt.want)
		}
	}
}

// TestSampleDurationBounds samples every real function and checks that
// the draws stay within [P0, P100].
func TestSampleDurationBounds(t *testing.T) {
	tr := loadReal(t, "sample100-min480-959")
	r := rand.New(rand.NewSource(1))
	for i, f := range tr.Functions {
		lo, hi := msToDuration(f.Dur.P0), msToDuration(f.Dur.P100)
		for range 2000 {
			if s := SampleDuration(r, f.Dur); s < lo || s > hi {
				t.Fatalf("function %d: sample %v outside [%v, %v]", i, s, lo, hi)
			}
		}
	}
}

// TestSampleDurationDistribution checks that the share of draws below each
// knot matches its percentile, within 4 binomial standard deviations.
func TestSampleDurationDistribution(t *testing.T) {
	d := Durations{P0: 1, P1: 2, P25: 10, P50: 20, P75: 40, P99: 400, P100: 1000}
	const n = 200000
	knots := []struct{ p, v float64 }{{1, 2}, {25, 10}, {50, 20}, {75, 40}, {99, 400}}
	below := make([]int, len(knots))
	r := rand.New(rand.NewSource(9))
	for range n {
		s := SampleDuration(r, d)
		for k, kn := range knots {
			if s < msToDuration(kn.v) {
				below[k]++
			}
		}
	}
	for k, kn := range knots {
		p := kn.p / 100
		got := float64(below[k]) / n
		if sd := math.Sqrt(p * (1 - p) / n); math.Abs(got-p) > 4*sd {
			t.Errorf("P(sample < P%v) = %.4f, want %.4f", kn.p, got, p)
		}
	}
}

func TestSampleDurationDegenerate(t *testing.T) {
	r := rand.New(rand.NewSource(1))
	for _, tt := range []struct {
		d    Durations
		want time.Duration
	}{
		{Durations{}, 0},
		{Durations{P0: 200, P1: 200, P25: 200, P50: 200, P75: 200, P99: 200, P100: 200}, 200 * time.Millisecond},
		{Durations{P0: 0.0005, P1: 0.0005, P25: 0.0005, P50: 0.0005, P75: 0.0005, P99: 0.0005, P100: 0.0005}, 500},
	} {
		for range 100 {
			if got := SampleDuration(r, tt.d); got != tt.want {
				t.Fatalf("SampleDuration(%+v) = %v, want %v", tt.d, got, tt.want)
			}
		}
	}
}

// TestSamplerMatchesQuantile checks that the generator's precomputed
// sampler agrees with SampleDuration's interpolation to the nanosecond.
func TestSamplerMatchesQuantile(t *testing.T) {
	tr := loadReal(t, "sample100-min480-959")
	r := rand.New(rand.NewSource(2))
	qs := []float64{0, 0.999, 1, 24.5, 25, 49.99, 50, 74, 75, 98.9, 99, 99.999999}
	for i, f := range tr.Functions {
		s := newSampler(f.Dur)
		for k := range 500 {
			q := r.Float64() * 100
			if k < len(qs) {
				q = qs[k]
			}
			got, want := s.at(q), msToDuration(f.Dur.quantile(q))
			if d := got - want; d < -1 || d > 1 {
				t.Fatalf("function %d q=%v: sampler %v, quantile %v", i, q, got, want)
			}
		}
	}
}

// TestGeneratorExecBounds checks the generator's execution times on a
// real excerpt stay within each function's [P0, P100].
func TestGeneratorExecBounds(t *testing.T) {
	tr := loadReal(t, "sample100-min480-959")
	g := NewGenerator(tr, Uniform, 3)
	var inv Invocation
	for g.Next(&inv) {
		d := tr.Functions[inv.Func].Dur
		if inv.Exec < msToDuration(d.P0) || inv.Exec > msToDuration(d.P100) {
			t.Fatalf("exec %v outside [%v, %v] ms", inv.Exec, d.P0, d.P100)
		}
	}
}
