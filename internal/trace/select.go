package trace

import (
	"fmt"
	"math/rand"
	"slices"
)

// clone returns a deep copy of t restricted to the functions at idx, in
// that order.
func (t *Trace) clone(idx []int) *Trace {
	out := &Trace{FirstMinute: t.FirstMinute, Minutes: t.Minutes, Skipped: t.Skipped, Report: t.Report,
		Functions: make([]Function, len(idx))}
	for k, i := range idx {
		f := t.Functions[i]
		f.Counts = slices.Clone(f.Counts)
		out.Functions[k] = f
	}
	return out
}

// Window returns a copy of t restricted to the trace minutes [from, to),
// numbered as in the file (so from >= t.FirstMinute). Time 0 of the result
// is minute from. Functions without invocations in the window are kept,
// so function indexes stay the same.
func (t *Trace) Window(from, to int) (*Trace, error) {
	end := t.FirstMinute + t.Minutes
	if from < t.FirstMinute || to > end || from >= to {
		return nil, fmt.Errorf("minutes [%d, %d) outside trace minutes [%d, %d): %w",
			from, to, t.FirstMinute, end, ErrBadSelection)
	}
	out := &Trace{FirstMinute: from, Minutes: to - from, Skipped: t.Skipped, Report: t.Report,
		Functions: make([]Function, len(t.Functions))}
	lo, hi := from-t.FirstMinute, to-t.FirstMinute
	for i, f := range t.Functions {
		f.Counts = slices.Clone(f.Counts[lo:hi])
		out.Functions[i] = f
	}
	return out, nil
}

// Sample returns a copy of t with n functions chosen uniformly at random
// without replacement, using seed; they keep their relative order from t.
func (t *Trace) Sample(n int, seed int64) (*Trace, error) {
	if n <= 0 || n > len(t.Functions) {
		return nil, fmt.Errorf("sampling %d of %d functions: %w", n, len(t.Functions), ErrBadSelection)
	}
	idx := rand.New(rand.NewSource(seed)).Perm(len(t.Functions))[:n]
	slices.Sort(idx)
	return t.clone(idx), nil
}

// Select returns a copy of t with the functions whose Hash is listed, in
// the order given. It fails on an unknown or repeated hash.
func (t *Trace) Select(hashes ...string) (*Trace, error) {
	if len(hashes) == 0 {
		return nil, fmt.Errorf("selecting no functions: %w", ErrBadSelection)
	}
	pos := make(map[string]int, len(t.Functions))
	for i := range t.Functions {
		pos[t.Functions[i].Hash] = i
	}
	idx := make([]int, 0, len(hashes))
	seen := map[string]bool{}
	for _, h := range hashes {
		i, ok := pos[h]
		if !ok {
			return nil, fmt.Errorf("function %q not in trace: %w", h, ErrBadSelection)
		}
		if seen[h] {
			return nil, fmt.Errorf("function %q selected twice: %w", h, ErrBadSelection)
		}
		seen[h] = true
		idx = append(idx, i)
	}
	return t.clone(idx), nil
}

// Rates returns each function's mean invocations per minute, indexed like
// t.Functions.
func (t *Trace) Rates() []float64 {
	out := make([]float64, len(t.Functions))
	for i := range t.Functions {
		out[i] = t.Functions[i].Rate()
	}
	return out
}
