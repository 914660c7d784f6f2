package trace

import (
	"fmt"
	"math/rand"
	"strings"
	"time"
)

// Arrival is a model for placing a minute's invocations inside the minute.
// The zero value is Equidistant.
type Arrival int

const (
	// Equidistant places n invocations at start + k*60s/n, k = 0..n-1.
	// It is deterministic.
	Equidistant Arrival = iota
	// Uniform draws n gaps uniformly from [0,1) and scales them so they
	// sum to 60 s.
	Uniform
	// Exponential draws n gaps from Exp(1) and scales them so they sum to
	// 60 s, which gives Poisson-like arrivals with exactly n per minute.
	Exponential
)

// String returns the model's name as accepted by ParseArrival.
func (a Arrival) String() string {
	switch a {
	case Equidistant:
		return "equidistant"
	case Uniform:
		return "uniform"
	case Exponential:
		return "exponential"
	}
	return fmt.Sprintf("Arrival(%d)", int(a))
}

// Set parses s into a, so an Arrival can be used as a flag value.
func (a *Arrival) Set(s string) error {
	v, err := ParseArrival(s)
	if err != nil {
		return err
	}
	*a = v
	return nil
}

// Type names the flag value type.
func (a *Arrival) Type() string { return "arrival" }

// ParseArrival parses "equidistant", "uniform" or "exponential"
// (case-insensitive; "poisson" is accepted for exponential).
func ParseArrival(s string) (Arrival, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "equidistant":
		return Equidistant, nil
	case "uniform":
		return Uniform, nil
	case "exponential", "poisson":
		return Exponential, nil
	}
	return 0, fmt.Errorf("arrival model %q (want equidistant, uniform or exponential): %w", s, ErrUnknownArrival)
}

// Minute is the length of a trace minute.
const Minute = time.Minute

// fill writes len(dst) sorted arrival offsets inside one minute, starting
// at base, into dst, as the In-Vitro loader does: gaps g_1..g_n are drawn
// and scaled to sum to 60 s, and invocation k (from 0) arrives at
// base + g_1+...+g_k, so the first arrives at the minute's start and the
// last gap runs to the next minute. Every offset is in [base, base+60s).
// scratch must be at least as long as dst; it avoids allocating.
func (a Arrival) fill(r *rand.Rand, dst []time.Duration, scratch []float64, base time.Duration) {
	n := len(dst)
	if n == 0 {
		return
	}
	if a == Equidistant {
		for k := range dst {
			// Integer arithmetic keeps equidistant times exact.
			dst[k] = base + time.Duration(int64(k)*int64(Minute)/int64(n))
		}
		return
	}
	prefix := scratch[:n]
	sum := 0.0
	for k := range prefix {
		prefix[k] = sum
		if a == Exponential {
			sum += r.ExpFloat64()
		} else {
			sum += r.Float64()
		}
	}
	if sum <= 0 {
		// Every gap was zero (only possible for Uniform, with odds
		// near 2^-53n): fall back to equidistant.
		Equidistant.fill(r, dst, scratch, base)
		return
	}
	scale := float64(Minute) / sum
	last := base + Minute - 1
	for k, p := range prefix {
		// Rounding could in theory reach the next minute; clamp.
		dst[k] = min(base+time.Duration(p*scale), last)
	}
}
