package trace

import (
	"errors"
	"math"
	"math/rand"
	"testing"
	"time"
)

// collect runs a generator to the end.
func collect(t *Trace, m Arrival, seed int64) []Invocation {
	g := NewGenerator(t, m, seed)
	var out []Invocation
	var inv Invocation
	for g.Next(&inv) {
		out = append(out, inv)
	}
	return out
}

func tiny(counts ...[]int32) *Trace {
	t := &Trace{FirstMinute: 7, Minutes: len(counts[0])}
	for _, c := range counts {
		t.Functions = append(t.Functions, Function{Counts: c, Dur: Durations{P0: 1, P1: 1, P25: 1, P50: 1, P75: 1, P99: 1, P100: 1}})
	}
	return t
}

func TestEquidistantExact(t *testing.T) {
	s := time.Second
	tests := []struct {
		name string
		tr   *Trace
		want []Invocation // Exec is checked separately
	}{
		{"one function", tiny([]int32{3, 0, 1}), []Invocation{
			{0, 0, 0}, {0, 20 * s, 0}, {0, 40 * s, 0}, {0, 120 * s, 0}}},
		{"ties go to lower index", tiny([]int32{2}, []int32{4}), []Invocation{
			{0, 0, 0}, {1, 0, 0}, {1, 15 * s, 0}, {0, 30 * s, 0}, {1, 30 * s, 0}, {1, 45 * s, 0}}},
		{"thirds are exact", tiny([]int32{0, 7}), []Invocation{
			{0, 60 * s, 0}, {0, 60*s + 8571428571, 0}, {0, 60*s + 17142857142, 0}, {0, 60*s + 25714285714, 0},
			{0, 60*s + 34285714285, 0}, {0, 60*s + 42857142857, 0}, {0, 60*s + 51428571428, 0}}},
		{"empty", tiny([]int32{0, 0}), nil},
		{"negative and extra counts ignored", &Trace{Minutes: 1, Functions: []Function{
			{Counts: []int32{-3}}, {Counts: []int32{1, 5}, Dur: tiny([]int32{0}).Functions[0].Dur}}},
			[]Invocation{{1, 0, 0}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := collect(tt.tr, Equidistant, 1)
			if len(got) != len(tt.want) {
				t.Fatalf("got %d invocations, want %d: %v", len(got), len(tt.want), got)
			}
			for i := range got {
				if got[i].Func != tt.want[i].Func || got[i].At != tt.want[i].At {
					t.Errorf("invocation %d = %+v, want func %d at %v", i, got[i], tt.want[i].Func, tt.want[i].At)
				}
				if got[i].Exec != time.Millisecond {
					t.Errorf("invocation %d Exec = %v, want 1ms (all percentiles are 1 ms)", i, got[i].Exec)
				}
			}
		})
	}
}

func TestSeededDeterminism(t *testing.T) {
	tr := loadReal(t, "sample100-min480-959")
	w, err := tr.Window(600, 660)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range []Arrival{Equidistant, Uniform, Exponential} {
		t.Run(m.String(), func(t *testing.T) {
			a, b, c := collect(w, m, 42), collect(w, m, 42), collect(w, m, 43)
			if len(a) != len(b) || len(a) != len(c) || int64(len(a)) != w.Invocations() {
				t.Fatalf("lengths %d %d %d, want %d", len(a), len(b), len(c), w.Invocations())
			}
			sameAt, sameExec := true, true
			for i := range a {
				if a[i] != b[i] {
					t.Fatalf("seed 42 runs differ at %d: %+v vs %+v", i, a[i], b[i])
				}
				sameAt = sameAt && a[i].At == c[i].At
				sameExec = sameExec && a[i].Exec == c[i].Exec
			}
			// Equidistant times do not depend on the seed; the rest do.
			if sameAt != (m == Equidistant) {
				t.Errorf("seeds 42 and 43 give same arrival times: %v", sameAt)
			}
			if sameExec {
				t.Error("seeds 42 and 43 give the same execution times")
			}
		})
	}
}

// TestArrivalMinutes checks on a real excerpt that every model yields each
// (function, minute) count exactly, in time order, with each minute's
// first arrival at the minute's start so the gaps, the last one running
// to the next minute, sum to 60 s.
func TestArrivalMinutes(t *testing.T) {
	tr := loadReal(t, "sample100-min480-959")
	for _, m := range []Arrival{Equidistant, Uniform, Exponential} {
		t.Run(m.String(), func(t *testing.T) {
			got := make([][]int32, len(tr.Functions))
			first := make([][]time.Duration, len(tr.Functions))
			for i := range got {
				got[i] = make([]int32, tr.Minutes)
				first[i] = make([]time.Duration, tr.Minutes)
			}
			g := NewGenerator(tr, m, 7)
			if g.Total() != 339657 {
				t.Fatalf("Total() = %d", g.Total())
			}
			var inv Invocation
			prev := time.Duration(-1)
			n := 0
			for g.Next(&inv) {
				if inv.At < prev {
					t.Fatalf("invocation %d at %v before %v", n, inv.At, prev)
				}
				prev = inv.At
				min := int(inv.At / Minute)
				if min >= tr.Minutes {
					t.Fatalf("invocation at %v beyond the trace", inv.At)
				}
				if got[inv.Func][min] == 0 {
					first[inv.Func][min] = inv.At
				}
				got[inv.Func][min]++
				n++
			}
			if n != 339657 {
				t.Fatalf("generated %d invocations, want 339657", n)
			}
			for i := range got {
				for k, c := range got[i] {
					if c != tr.Functions[i].Counts[k] {
						t.Fatalf("function %d minute %d: %d invocations, want %d", i, k, c, tr.Functions[i].Counts[k])
					}
					if c > 0 && first[i][k] != time.Duration(k)*Minute {
						t.Fatalf("function %d minute %d starts at %v", i, k, first[i][k])
					}
				}
			}
		})
	}
}

// TestArrivalShape checks the gap distributions: within a minute of n
// arrivals the scaled gaps have mean 60s/n and the coefficient of
// variation of their model (0 equidistant, 1/sqrt(3) uniform, 1
// exponential).
func TestArrivalShape(t *testing.T) {
	const n = 20000
	tests := []struct {
		m      Arrival
		wantCV float64
	}{{Equidistant, 0}, {Uniform, 1 / math.Sqrt(3)}, {Exponential, 1}}
	for _, tt := range tests {
		t.Run(tt.m.String(), func(t *testing.T) {
			dst := make([]time.Duration, n)
			tt.m.fill(rand.New(rand.NewSource(3)), dst, make([]float64, n), Minute)
			var sum, sq float64
			for k := range dst {
				next := 2 * Minute // the last gap runs to the next minute
				if k+1 < n {
					next = dst[k+1]
				}
				g := float64(next - dst[k])
				if g < 0 {
					t.Fatalf("gap %d negative", k)
				}
				sum += g
				sq += g * g
			}
			if math.Abs(sum-float64(Minute)) > 0 {
				t.Errorf("gaps sum to %v, want 60s", time.Duration(sum))
			}
			mean := sum / n
			cv := math.Sqrt(sq/n-mean*mean) / mean
			if math.Abs(cv-tt.wantCV) > 0.03 {
				t.Errorf("gap CV = %.4f, want %.4f", cv, tt.wantCV)
			}
		})
	}
}

func TestParseArrival(t *testing.T) {
	tests := []struct {
		in   string
		want Arrival
		err  bool
	}{
		{"equidistant", Equidistant, false},
		{"Uniform", Uniform, false},
		{" exponential ", Exponential, false},
		{"poisson", Exponential, false},
		{"", 0, true},
		{"gaussian", 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParseArrival(tt.in)
			if tt.err {
				if !errors.Is(err, ErrUnknownArrival) {
					t.Fatalf("error = %v, want ErrUnknownArrival", err)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("ParseArrival(%q) = %v, %v", tt.in, got, err)
			}
			var a Arrival
			if err := a.Set(got.String()); err != nil || a != got {
				t.Fatalf("round trip through String/Set: %v, %v", a, err)
			}
		})
	}
}

func TestNextDoesNotAllocate(t *testing.T) {
	tr := loadReal(t, "sample10-day")
	w, err := tr.Window(600, 620)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range []Arrival{Equidistant, Uniform, Exponential} {
		g := NewGenerator(w, m, 1)
		var inv Invocation
		allocs := testing.AllocsPerRun(1000, func() {
			for range 100 {
				g.Next(&inv)
			}
		})
		if allocs != 0 {
			t.Errorf("%v: %v allocations per 100 Next calls", m, allocs)
		}
	}
}

// TestFullDay generates the whole 13 M-invocation day, the simulator's
// speed target, and checks the count and the time budget with a wide
// margin (the target is the simulator's 5 s including generation).
func TestFullDay(t *testing.T) {
	tr := loadReal(t, "sample10-day")
	start := time.Now()
	g := NewGenerator(tr, Exponential, 1)
	var inv Invocation
	var n int64
	for g.Next(&inv) {
		n++
	}
	el := time.Since(start)
	if n != 13037064 {
		t.Fatalf("generated %d, want 13037064", n)
	}
	t.Logf("generated %d invocations in %v (%.1f M/s)", n, el, float64(n)/el.Seconds()/1e6)
	if el > 5*time.Second {
		t.Errorf("generation alone took %v, over the 5 s budget", el)
	}
}

func benchGenerate(b *testing.B, name string, m Arrival) {
	tr := loadReal(b, name)
	var inv Invocation
	var n int64
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		g := NewGenerator(tr, m, int64(i))
		for g.Next(&inv) {
			n++
		}
	}
	b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "inv/s")
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(n), "ns/inv")
}

func BenchmarkGenerate(b *testing.B) {
	for _, m := range []Arrival{Equidistant, Uniform, Exponential} {
		b.Run("day10/"+m.String(), func(b *testing.B) { benchGenerate(b, "sample10-day", m) })
		b.Run("sample100/"+m.String(), func(b *testing.B) { benchGenerate(b, "sample100-min480-959", m) })
	}
}
