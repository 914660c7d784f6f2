package sim

import (
	"fmt"
	"math"
	"time"

	"github.com/hearth-run/hearth/internal/trace"
)

// MiB is a mebibyte in bytes.
const MiB = 1 << 20

// Func describes one function of a workload.
type Func struct {
	Size int64         // container memory in bytes
	Cold time.Duration // cold-start cost added to a cold invocation
	// Paused, if positive, is what a container is charged from the end
	// of its first invocation on; until then it is charged Size (or
	// Start). The live
	// worker charges a new sandbox its declared limit and, once it has
	// paused it, its measured memory: far less for a forked sandbox,
	// whose shared pages its zygote is charged. 0 keeps the charge it was admitted with.
	Paused int64
	// Start, if positive, is what a new container is charged until its
	// first invocation ends, instead of Size, once an invocation of the
	// function has ended: the live worker's start charge
	// (PoolConfig.Charge "peak"), learned from the peak memory of its
	// sandboxes after their calls. Size still routes the function.
	Start int64
	// Busy, if more than a container is charged, is what it is charged
	// while it serves an invocation: the live worker charges a call's
	// growth (sampled during the call, Config.BusyAfter) past its paused
	// size or its start charge, and measures it again at the pause, which
	// for a forked sandbox is a fraction of what its calls take.
	Busy int64
	// GrowAt, if positive, is how far into an invocation (its handler's
	// run, after any start) it is charged Busy, if it runs that long: the
	// live worker's mean time from a call's start to its last growth
	// charge, which in a burst comes late (the calls share the CPUs as
	// they touch their memory). Otherwise an invocation that runs at
	// least Config.BusyAfter is charged Busy from its start.
	GrowAt time.Duration
	// Kin, if positive, groups the functions that need the same
	// packages: one whose own first invocation has not ended is charged,
	// once one of its kin's has, the highest Start among those (at most
	// its Size), as the live worker charges a new function like its kin.
	Kin int32
}

// Source yields invocations in non-decreasing arrival order;
// *trace.Generator is one.
type Source interface {
	Next(inv *trace.Invocation) bool
}

// Workload is what a simulation replays.
type Workload struct {
	Funcs []Func
	// Open returns a fresh Source positioned at the first invocation; it is
	// called once per simulated point, possibly concurrently.
	Open func() Source
	// Total is the number of invocations a Source yields, for progress and
	// checks; 0 if unknown.
	Total int64
	// Duration is the trace's length; memory samples cover it. 0 means up
	// to the last arrival.
	Duration time.Duration
}

// ColdModel chooses each function's cold-start cost.
type ColdModel struct {
	// Fixed, if positive, is the cold cost of every function. Otherwise the
	// cost is FaasCache-style: maximum minus average execution time.
	Fixed time.Duration
}

// Cost returns the cold cost of a function with durations d.
func (m ColdModel) Cost(d trace.Durations) time.Duration {
	if m.Fixed > 0 {
		return m.Fixed
	}
	return time.Duration(max(d.Max-d.Avg, 0) * float64(time.Millisecond))
}

// FromTrace builds a workload from a 2019-format trace: sizes from the
// average allocated memory (at least 1 MiB), cold costs from m, arrivals
// from the trace generator with the given model and seed.
func FromTrace(t *trace.Trace, model trace.Arrival, seed int64, m ColdModel) (Workload, error) {
	if t == nil || len(t.Functions) == 0 {
		return Workload{}, fmt.Errorf("empty trace: %w", ErrConfig)
	}
	w := Workload{
		Funcs:    make([]Func, len(t.Functions)),
		Open:     func() Source { return trace.NewGenerator(t, model, seed) },
		Total:    t.Invocations(),
		Duration: time.Duration(t.Minutes) * time.Minute,
	}
	for i := range t.Functions {
		f := &t.Functions[i]
		if math.IsNaN(f.MemMB) || f.MemMB < 0 {
			return Workload{}, fmt.Errorf("function %s: memory %v MB: %w", f.Hash, f.MemMB, ErrConfig)
		}
		w.Funcs[i] = Func{Size: max(int64(math.Round(f.MemMB*MiB)), MiB), Cold: m.Cost(f.Dur)}
	}
	return w, nil
}

// sliceSource replays a fixed list of invocations.
type sliceSource struct {
	invs []trace.Invocation
	i    int
}

// Next implements Source.
func (s *sliceSource) Next(inv *trace.Invocation) bool {
	if s.i >= len(s.invs) {
		return false
	}
	*inv = s.invs[s.i]
	s.i++
	return true
}

// FromInvocations builds a workload replaying invs (sorted by At), for
// hand-made traces and the 2021 invocation-level trace.
func FromInvocations(funcs []Func, invs []trace.Invocation) (Workload, error) {
	for i := range invs {
		if f := invs[i].Func; f < 0 || int(f) >= len(funcs) {
			return Workload{}, fmt.Errorf("invocation %d: function %d of %d: %w", i, f, len(funcs), ErrConfig)
		}
		if i > 0 && invs[i].At < invs[i-1].At {
			return Workload{}, fmt.Errorf("invocation %d at %v before the previous one: %w", i, invs[i].At, ErrConfig)
		}
		if invs[i].Exec < 0 {
			return Workload{}, fmt.Errorf("invocation %d: negative execution time: %w", i, ErrConfig)
		}
	}
	var d time.Duration
	if n := len(invs); n > 0 {
		d = invs[n-1].At
	}
	return Workload{
		Funcs:    funcs,
		Open:     func() Source { return &sliceSource{invs: invs} },
		Total:    int64(len(invs)),
		Duration: d,
	}, nil
}
