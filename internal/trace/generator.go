package trace

import (
	"math/rand"
	"time"
)

// Invocation is one generated invocation.
type Invocation struct {
	// Func is the index of the function in Trace.Functions.
	Func int32
	// At is the arrival time since the start of the trace's first minute.
	At time.Duration
	// Exec is the sampled warm execution time.
	Exec time.Duration
}

// Generator streams a Trace's invocations in arrival order across all
// functions, one minute at a time. It allocates only in NewGenerator; Next
// does not allocate. Ties in arrival time go to the lower function index.
// A Generator is not safe for concurrent use.
type Generator struct {
	t      *Trace
	model  Arrival
	arr    *rand.Rand // arrival gaps
	exec   *rand.Rand // execution times, separate so the models share them
	minute int        // next minute to expand
	total  int64

	samp    []sampler       // per function
	buf     []time.Duration // arrival times of the current minute, by function
	scratch []float64
	heap    []cursor // min-heap over the functions active this minute
}

// cursor walks one function's arrivals inside the current minute.
type cursor struct {
	at       time.Duration // == buf[pos]
	fn       int32
	pos, end int32
}

func (c cursor) less(d cursor) bool {
	return c.at < d.at || (c.at == d.at && c.fn < d.fn)
}

// execSalt separates the execution-time stream from the arrival stream
// derived from the same seed.
const execSalt = 0x5DEECE66D

// NewGenerator returns a Generator over t using the given arrival model
// and seed. The same trace, model and seed always give the same stream.
// Arrival times are relative to the start of minute t.FirstMinute. Counts
// beyond t.Minutes and negative counts in a hand-built Trace are ignored.
// t must not change while the Generator is in use.
func NewGenerator(t *Trace, model Arrival, seed int64) *Generator {
	g := &Generator{
		t:     t,
		model: model,
		arr:   rand.New(rand.NewSource(seed)),
		exec:  rand.New(rand.NewSource(seed ^ execSalt)),
	}
	// Size the buffers for the busiest minute so Next never allocates.
	peak := 0
	for m := 0; m < t.Minutes; m++ {
		n := 0
		for i := range t.Functions {
			if c := t.Functions[i].Counts; m < len(c) && c[m] > 0 {
				n += int(c[m])
			}
		}
		g.total += int64(n)
		peak = max(peak, n)
	}
	g.buf = make([]time.Duration, peak)
	maxCount := 0
	for i := range t.Functions {
		for _, c := range t.Functions[i].Counts {
			maxCount = max(maxCount, int(c))
		}
	}
	if model != Equidistant {
		g.scratch = make([]float64, maxCount)
	}
	g.heap = make([]cursor, 0, len(t.Functions))
	g.samp = make([]sampler, len(t.Functions))
	for i := range t.Functions {
		g.samp[i] = newSampler(t.Functions[i].Dur)
	}
	return g
}

// Total returns the number of invocations the Generator yields in all.
func (g *Generator) Total() int64 { return g.total }

// Next stores the next invocation in inv and reports whether there was
// one. After the last invocation it returns false and leaves inv alone.
func (g *Generator) Next(inv *Invocation) bool {
	for len(g.heap) == 0 {
		if g.minute >= g.t.Minutes {
			return false
		}
		g.expand()
	}
	h := g.heap
	top := h[0]
	inv.Func = top.fn
	inv.At = top.at
	inv.Exec = g.samp[top.fn].at(g.exec.Float64() * 100)

	if top.pos+1 < top.end {
		h[0].pos++
		h[0].at = g.buf[h[0].pos]
	} else {
		h[0] = h[len(h)-1]
		h = h[:len(h)-1]
		g.heap = h
	}
	if len(h) > 1 {
		g.down(0)
	}
	return true
}

// expand generates the arrivals of minute g.minute and builds the heap.
func (g *Generator) expand() {
	m := g.minute
	g.minute++
	base := time.Duration(m) * Minute
	off := 0
	for i := range g.t.Functions {
		c := g.t.Functions[i].Counts
		if m >= len(c) || c[m] <= 0 {
			continue
		}
		n := int(c[m])
		dst := g.buf[off : off+n]
		g.model.fill(g.arr, dst, g.scratch, base)
		g.heap = append(g.heap, cursor{at: dst[0], fn: int32(i), pos: int32(off), end: int32(off + n)})
		off += n
	}
	for i := len(g.heap)/2 - 1; i >= 0; i-- {
		g.down(i)
	}
}

// down restores the heap property below i.
func (g *Generator) down(i int) {
	h := g.heap
	n := len(h)
	x := h[i]
	for {
		l := 2*i + 1
		if l >= n {
			break
		}
		j := l
		if r := l + 1; r < n && h[r].less(h[l]) {
			j = r
		}
		if !h[j].less(x) {
			break
		}
		h[i] = h[j]
		i = j
	}
	h[i] = x
}
