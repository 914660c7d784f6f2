package policy

import (
	"fmt"
	"math"
	"time"

	"github.com/hearth-run/hearth/internal/pool"
)

// HistOptions configures the hybrid histogram policy. Zero fields take the
// defaults of "Serverless in the Wild" noted on each field. Its yaml tags
// are the keys of hearth.yaml's hist section; fields tagged "-" are not
// settings of the file.
type HistOptions struct {
	Bin   time.Duration `yaml:"bin"`   // histogram bin width; 1 minute
	Range time.Duration `yaml:"range"` // histogram range; 4 hours (idle times beyond are out of bounds)
	Head  float64       `yaml:"-"`     // pre-warm percentile; 0.05
	Tail  float64       `yaml:"-"`     // keep-alive percentile; 0.99
	// Margin widens both windows: pre-warm earlier by Margin, keep alive
	// longer by Margin; 0.10.
	Margin float64 `yaml:"margin"`
	// MinCV is the coefficient of variation of the bin counts at or above
	// which the histogram is representative; 2.
	MinCV float64 `yaml:"min_cv"`
	// MinSamples is the number of observed idle times below which a
	// histogram is never representative (the paper leaves it open; a
	// single sample would give a huge CV); 10.
	MinSamples int `yaml:"min_samples"`
	// Fixed is the keep-alive used while the histogram is not
	// representative, with no pre-warm; the paper's conservative choice,
	// the histogram Range (4 hours).
	Fixed time.Duration `yaml:"fixed"`
	// Refresh bounds how often a function's windows are recomputed from
	// its histogram (an O(bins) scan); one Bin, since windows move by
	// whole bins.
	Refresh time.Duration `yaml:"-"`
	// SeriesMin is how many out-of-bounds idle times a function needs,
	// when they outnumber those in bounds, before its next idle time is
	// forecast as a time series instead of given the fixed keep-alive
	// (the paper's fallback, there with ARIMA); 3. Negative: never.
	SeriesMin int `yaml:"series_min"`
	// SeriesMargin places the windows around a forecast idle time f:
	// pre-warm at f*(1-SeriesMargin), keep alive until f*(1+SeriesMargin);
	// 0.15.
	SeriesMargin float64 `yaml:"series_margin"`
}

func (o HistOptions) withDefaults() HistOptions {
	if o.Bin == 0 {
		o.Bin = time.Minute
	}
	if o.Range == 0 {
		o.Range = 4 * time.Hour
	}
	if o.Head == 0 {
		o.Head = 0.05
	}
	if o.Tail == 0 {
		o.Tail = 0.99
	}
	if o.Margin == 0 {
		o.Margin = 0.10
	}
	if o.MinCV == 0 {
		o.MinCV = 2
	}
	if o.MinSamples == 0 {
		o.MinSamples = 10
	}
	if o.Fixed == 0 {
		o.Fixed = o.Range
	}
	if o.Refresh == 0 {
		o.Refresh = o.Bin
	}
	if o.SeriesMin == 0 {
		o.SeriesMin = 3
	}
	if o.SeriesMargin == 0 {
		o.SeriesMargin = 0.15
	}
	return o
}

func (o HistOptions) validate() error {
	switch {
	case o.Bin < 0, o.Range < 0, o.Fixed < 0, o.Refresh < 0, o.MinSamples < 0, o.MinCV < 0:
		return fmt.Errorf("hist options %+v: negative value: %w", o, pool.ErrConfig)
	case o.Head < 0 || o.Head >= 1, o.Tail < 0 || o.Tail > 1, o.Margin < 0 || o.Margin >= 1, o.SeriesMargin < 0 || o.SeriesMargin >= 1:
		return fmt.Errorf("hist options: head %v, tail %v, margins %v, %v out of range: %w", o.Head, o.Tail, o.Margin, o.SeriesMargin, pool.ErrConfig)
	}
	d := o.withDefaults()
	if d.Range < d.Bin {
		return fmt.Errorf("hist range %v shorter than bin %v: %w", d.Range, d.Bin, pool.ErrConfig)
	}
	if d.Head > d.Tail {
		return fmt.Errorf("hist head %v above tail %v: %w", d.Head, d.Tail, pool.ErrConfig)
	}
	return nil
}

// Hist is the hybrid histogram policy. For each function it records the
// idle time before every invocation (time since its last container became
// idle, 0 if one was running) in a histogram of Bin-wide bins over Range.
// When the histogram is representative (at least MinSamples idle times, at
// most as many out of bounds as in bounds, and a coefficient of variation
// of bin counts >= MinCV), a container is unloaded right after use and
// pre-warmed at the Head percentile minus Margin, then kept until the Tail
// percentile plus Margin; if the head percentile is the first bin there is
// no pre-warm and the container just stays for the keep-alive window.
// When out-of-bounds idle times outnumber the others (at least SeriesMin
// of them), the next idle time is forecast from the recent out-of-bounds
// ones as a time series, and the container is unloaded at release,
// pre-warmed SeriesMargin before the forecast and kept SeriesMargin after
// it. The paper fits ARIMA; this forecast is simple exponential smoothing
// of the log idle times (ARIMA(0,1,1)), its smoothing factor chosen by
// the smallest one-step error over the last seriesLen idle times. Otherwise
// it uses a fixed keep-alive. Under memory pressure it evicts in LRU
// order.
type Hist struct {
	o   HistOptions
	nb  int
	fns []histFn
}

type histFn struct {
	bins      []uint32
	n, oob    uint32
	dirty     bool
	computed  bool
	at        time.Duration   // when the windows were last computed
	rep       bool            // the histogram is representative
	series    bool            // windows come from the time-series forecast
	pre, keep time.Duration   // pre-warm delay after release; keep-alive end after release
	last      []time.Duration // the last seriesLen out-of-bounds idle times, oldest first
}

// seriesLen is how many recent out-of-bounds idle times the forecast
// looks at.
const seriesLen = 8

var (
	_ pool.Policy    = (*Hist)(nil)
	_ pool.Forgetter = (*Hist)(nil)
)

// NewHist returns a hybrid histogram policy; zero options take defaults.
func NewHist(o HistOptions) *Hist {
	o = o.withDefaults()
	return &Hist{o: o, nb: int(o.Range / o.Bin)}
}

func (h *Hist) fn(fn pool.Fn) *histFn {
	if int(fn) >= len(h.fns) {
		h.fns = append(h.fns, make([]histFn, int(fn)+1-len(h.fns))...)
	}
	return &h.fns[fn]
}

// Forget drops fn's histogram and forecast: fn was removed.
func (h *Hist) Forget(fn pool.Fn) {
	if int(fn) < len(h.fns) {
		h.fns[fn] = histFn{}
	}
}

// Arrive records fn's idle time.
func (h *Hist) Arrive(fn pool.Fn, _, idle time.Duration) {
	if idle < 0 {
		return
	}
	f := h.fn(fn)
	f.n++
	f.dirty = true
	b := int(idle / h.o.Bin)
	if b >= h.nb {
		f.oob++
		if len(f.last) == seriesLen {
			copy(f.last, f.last[1:])
			f.last = f.last[:seriesLen-1]
		}
		f.last = append(f.last, idle)
		return
	}
	if f.bins == nil {
		f.bins = make([]uint32, h.nb)
	}
	f.bins[b]++
}

// Priority is the release time in seconds (LRU order).
func (*Hist) Priority(e pool.Entry, _ float64) float64 { return e.Now.Seconds() }

// Evicted leaves the clock alone.
func (*Hist) Evicted(_, clock float64) float64 { return clock }

// KeepAlive implements pool.Policy.
func (h *Hist) KeepAlive(fn pool.Fn, now time.Duration) time.Duration {
	f := h.windows(fn, now)
	switch {
	case !f.rep && !f.series:
		return h.o.Fixed
	case f.pre > 0:
		return 0 // unloaded now, pre-warmed later
	default:
		return f.keep
	}
}

// Prewarm implements pool.Policy.
func (h *Hist) Prewarm(fn pool.Fn, now time.Duration) (time.Duration, time.Duration, bool) {
	f := h.windows(fn, now)
	if (!f.rep && !f.series) || f.pre <= 0 {
		return 0, 0, false
	}
	return now + f.pre, f.keep - f.pre, true
}

// Windows reports fn's current state: whether its histogram is
// representative, its pre-warm delay and its keep-alive end, both measured
// from the moment a container becomes idle. With rep false, non-zero
// windows come from the time-series forecast.
func (h *Hist) Windows(fn pool.Fn, now time.Duration) (rep bool, pre, keep time.Duration) {
	f := h.windows(fn, now)
	return f.rep, f.pre, f.keep
}

func (h *Hist) windows(fn pool.Fn, now time.Duration) *histFn {
	f := h.fn(fn)
	if !f.dirty || (f.computed && now-f.at < h.o.Refresh) {
		return f
	}
	f.dirty, f.computed, f.at = false, true, now
	f.rep, f.series, f.pre, f.keep = false, false, 0, 0
	in := f.n - f.oob
	if f.oob > in && h.o.SeriesMin > 0 && int(f.oob) >= h.o.SeriesMin {
		next := forecast(f.last)
		f.series = true
		f.pre = time.Duration(float64(next) * (1 - h.o.SeriesMargin))
		f.keep = time.Duration(float64(next) * (1 + h.o.SeriesMargin))
		return f
	}
	if int(f.n) < h.o.MinSamples || in == 0 || f.oob > in {
		return f
	}
	mean := float64(in) / float64(h.nb)
	var ss float64
	for _, c := range f.bins {
		d := float64(c) - mean
		ss += d * d
	}
	if cv := math.Sqrt(ss/float64(h.nb)) / mean; cv < h.o.MinCV {
		return f
	}
	head, tail := -1, -1
	var cum float64
	for i, c := range f.bins {
		cum += float64(c)
		if head < 0 && cum >= h.o.Head*float64(in) {
			head = i
		}
		if cum >= h.o.Tail*float64(in) {
			tail = i
			break
		}
	}
	f.rep = true
	f.pre = time.Duration(float64(time.Duration(head)*h.o.Bin) * (1 - h.o.Margin))
	f.keep = time.Duration(float64(time.Duration(tail+1)*h.o.Bin) * (1 + h.o.Margin))
	return f
}

// forecast predicts the idle time after xs (oldest first, at least one) by
// simple exponential smoothing of their logarithms, with the smoothing
// factor of smallest one-step squared error among a few.
func forecast(xs []time.Duration) time.Duration {
	logs := make([]float64, len(xs))
	for i, x := range xs {
		logs[i] = math.Log(max(x.Seconds(), 1))
	}
	best, bestErr := 0.0, math.Inf(1)
	for _, a := range []float64{0.2, 0.5, 0.8, 1} {
		level, sse := logs[0], 0.0
		for _, v := range logs[1:] {
			sse += (v - level) * (v - level)
			level = a*v + (1-a)*level
		}
		if sse < bestErr {
			best, bestErr = level, sse
		}
	}
	return time.Duration(math.Exp(best) * float64(time.Second))
}
