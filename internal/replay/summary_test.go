package replay

import (
	"encoding/csv"
	"fmt"
	"strings"
	"testing"
	"time"
)

func twoFuncs() *Plan {
	return &Plan{Speed: 1, Minutes: 1, Funcs: []Func{{Name: "a", Hash: "ha"}, {Name: "b", Hash: "hb"}, {Name: "c", Hash: "hc"}}}
}

func ms(v float64) time.Duration { return time.Duration(v * 1e6) }

func TestParsecCold(t *testing.T) {
	tests := []struct {
		name string
		r    Record
		want bool
	}{
		{"warm, 1 ms overhead", Record{Status: 200, Response: ms(101), RunMs: 100}, false},
		{"exactly 30 ms over", Record{Status: 200, Response: ms(130), RunMs: 100}, false},
		{"30.001 ms over", Record{Status: 200, Response: ms(130.001), RunMs: 100}, true},
		{"cold", Record{Status: 200, Response: ms(400), RunMs: 100, Path: "cold"}, true},
		{"fast fork is not PARSEC cold", Record{Status: 200, Response: ms(120), RunMs: 100, Path: "fork"}, false},
		{"failed call is not judged", Record{Status: 500, Response: ms(900), RunMs: 1}, false},
		{"transport error is not judged", Record{Err: "refused", Response: ms(900)}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := ParsecCold(tt.r); got != tt.want {
				t.Errorf("ParsecCold = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestSummarize(t *testing.T) {
	p := twoFuncs()
	var recs []Record
	// a: 100 calls with responses 1..100 ms and run 0.5 ms; the first
	// is a cold start, the second a fork, the rest warm.
	for i := 1; i <= 100; i++ {
		path := "warm"
		switch i {
		case 1:
			path = "cold"
		case 2:
			path = "fork"
		}
		recs = append(recs, Record{Func: 0, Status: 200, Response: ms(float64(i)), RunMs: 0.5, Path: path})
	}
	// b: two successes, a handler error (with a path) and a throttle
	// (without).
	recs = append(recs,
		Record{Func: 1, Status: 200, Response: ms(10), RunMs: 5, Path: "cold"},
		Record{Func: 1, Status: 200, Response: ms(50), RunMs: 5, Path: "warm"},
		Record{Func: 1, Status: 500, Response: ms(700), RunMs: 1, Path: "warm", Err: "Unhandled"},
		Record{Func: 1, Status: 429, Response: ms(1), Err: "throttled"},
	)
	s := Summarize(p, recs)
	if len(s) != 3 {
		t.Fatalf("%d summaries", len(s))
	}
	a, b, c := s[0], s[1], s[2]
	// Mean of 1..100 ms is 50.5 ms; the nearest-rank p99 of 100 values
	// is the 99th.
	if a.N != 100 || a.Errors != 0 || a.Mean != ms(50.5) || a.P99 != ms(99) {
		t.Errorf("a: n=%d errors=%d mean=%v p99=%v", a.N, a.Errors, a.Mean, a.P99)
	}
	// Responses above 30.5 ms: 31..100.
	if a.ColdPath != 2 || a.ColdParsec != 70 {
		t.Errorf("a: cold by path %d (want 2), by PARSEC %d (want 70)", a.ColdPath, a.ColdParsec)
	}
	if fmt.Sprint(a.Paths) != "map[cold:1 fork:1 warm:98]" {
		t.Errorf("a: paths %v", a.Paths)
	}
	// b: failed calls count as calls and errors but not in latency; the
	// 50 ms call is PARSEC-cold though warm.
	if b.N != 4 || b.Errors != 2 || b.Mean != ms(30) || b.P99 != ms(50) || b.ColdPath != 1 || b.ColdParsec != 1 {
		t.Errorf("b: %+v", b)
	}
	if fmt.Sprint(b.Paths) != "map[:1 cold:1 warm:2]" {
		t.Errorf("b: paths %v", b.Paths)
	}
	if c.N != 0 || c.Mean != 0 || c.P99 != 0 || c.Name != "c" {
		t.Errorf("c: %+v", c)
	}
	if got := fmt.Sprint(PathCounts(recs)); got != "map[:1 cold:2 fork:1 warm:100]" {
		t.Errorf("PathCounts %s", got)
	}
}

func TestMeanP99(t *testing.T) {
	tests := []struct {
		in        []float64
		mean, p99 float64
	}{
		{nil, 0, 0},
		{[]float64{7}, 7, 7},
		{[]float64{3, 1, 2}, 2, 3},
		// 101..1 ms: rank ceil(0.99*101) = 100 is 100 ms.
		{make101(), 51, 100},
	}
	for i, tt := range tests {
		t.Run(fmt.Sprint(i), func(t *testing.T) {
			d := make([]time.Duration, len(tt.in))
			for k, v := range tt.in {
				d[k] = ms(v)
			}
			m, p := meanP99(d)
			if m != ms(tt.mean) || p != ms(tt.p99) {
				t.Errorf("got mean %v p99 %v, want %v %v", m, p, ms(tt.mean), ms(tt.p99))
			}
		})
	}
}

func make101() []float64 {
	v := make([]float64, 101)
	for i := range v {
		v[i] = float64(101 - i)
	}
	return v
}

func TestStats(t *testing.T) {
	s := Stats{Calls: 3, Fired: 3, MaxInFlight: 2, LateTolerance: 50 * time.Millisecond}
	if s.Behind() || strings.Contains(s.String(), "BEHIND") {
		t.Errorf("on time but %q", s)
	}
	s.BoundHits = 1
	if !s.Behind() || !strings.Contains(s.String(), "in-flight bound (2) hit 1 times") {
		t.Errorf("bound hit but %q", s)
	}
	s.BoundHits, s.Late = 0, 2
	if !s.Behind() || !strings.Contains(s.String(), "2 calls fired more than 50ms late") {
		t.Errorf("late but %q", s)
	}
}

func TestWriteCSV(t *testing.T) {
	p := twoFuncs()
	recs := []Record{
		{Func: 1, Name: "b", At: 2 * time.Second, Scheduled: time.Second, Fired: time.Second + ms(1.5),
			Response: ms(12.25), Path: "cold", WaitMs: 0.25, TurnWaitMs: 0.125, InitMs: 10, RunMs: 1.5, Exec: ms(1), Status: 200},
		{Func: 0, Name: "a", Status: 0, Err: `dial tcp: refused, "quoted"`},
	}
	var b strings.Builder
	if err := WriteCSV(&b, p, recs); err != nil {
		t.Fatal(err)
	}
	rows, err := csv.NewReader(strings.NewReader(b.String())).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	want := [][]string{
		CSVHeader,
		{"b", "hb", "2000.000", "1000.000", "1001.500", "1.500", "12.250", "cold", "0.250", "10.000", "1.500", "1.000", "200", "", "0.125"},
		{"a", "ha", "0.000", "0.000", "0.000", "0.000", "0.000", "", "0.000", "0.000", "0.000", "0.000", "0", `dial tcp: refused, "quoted"`, "0.000"},
	}
	if fmt.Sprint(rows) != fmt.Sprint(want) {
		t.Errorf("csv\n got %q\nwant %q", rows, want)
	}
}
