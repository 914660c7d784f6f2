package trace

import (
	"errors"
	"reflect"
	"slices"
	"testing"
)

func TestWindow(t *testing.T) {
	tr := loadReal(t, "sample100-min480-959")
	w, err := tr.Window(500, 510)
	if err != nil {
		t.Fatal(err)
	}
	// 6447 invocations in minutes 500..509, counted with Python.
	if w.FirstMinute != 500 || w.Minutes != 10 || len(w.Functions) != 100 || w.Invocations() != 6447 {
		t.Fatalf("window: %d+%d, %d functions, %d invocations", w.FirstMinute, w.Minutes, len(w.Functions), w.Invocations())
	}
	if !reflect.DeepEqual(w.Functions[0].Counts, tr.Functions[0].Counts[20:30]) {
		t.Errorf("counts differ from the source")
	}
	w.Functions[0].Counts[0] = 999
	if tr.Functions[0].Counts[20] == 999 {
		t.Error("Window shares counts with its source")
	}
	for _, r := range [][2]int{{479, 500}, {500, 961}, {600, 600}, {700, 600}} {
		if _, err := tr.Window(r[0], r[1]); !errors.Is(err, ErrBadSelection) {
			t.Errorf("Window(%d, %d) error = %v", r[0], r[1], err)
		}
	}
	// The full range is allowed.
	if _, err := tr.Window(480, 960); err != nil {
		t.Errorf("full window: %v", err)
	}
}

func TestSample(t *testing.T) {
	tr := loadReal(t, "sample100-min480-959")
	pos := map[string]int{}
	for i, f := range tr.Functions {
		pos[f.Hash] = i
	}
	hashes := func(t *Trace) []string {
		var out []string
		for _, f := range t.Functions {
			out = append(out, f.Hash)
		}
		return out
	}
	a, err := tr.Sample(10, 5)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := tr.Sample(10, 5)
	c, _ := tr.Sample(10, 6)
	if !slices.Equal(hashes(a), hashes(b)) {
		t.Error("same seed gave different samples")
	}
	if slices.Equal(hashes(a), hashes(c)) {
		t.Error("seeds 5 and 6 gave the same sample")
	}
	prev := -1
	for _, h := range hashes(a) {
		i, ok := pos[h]
		if !ok || i <= prev {
			t.Fatalf("sample %v not a strictly ordered subset", hashes(a))
		}
		prev = i
	}
	if a.Minutes != tr.Minutes || a.FirstMinute != tr.FirstMinute {
		t.Error("sample changed the minute range")
	}
	for _, n := range []int{0, -1, 101} {
		if _, err := tr.Sample(n, 1); !errors.Is(err, ErrBadSelection) {
			t.Errorf("Sample(%d) error = %v", n, err)
		}
	}
}

func TestSelectAndRates(t *testing.T) {
	tr, err := LoadAzure2019("testdata/ordered")
	if err != nil {
		t.Fatal(err)
	}
	s, err := tr.Select("f2", "f1")
	if err != nil {
		t.Fatal(err)
	}
	if s.Functions[0].Hash != "f2" || s.Functions[1].Hash != "f1" {
		t.Errorf("order = %s, %s", s.Functions[0].Hash, s.Functions[1].Hash)
	}
	if got := s.Rates(); !reflect.DeepEqual(got, []float64{1, 1}) {
		t.Errorf("Rates() = %v, want [1 1]", got)
	}
	s.Functions[0].Counts[1] = 0
	if tr.Functions[1].Counts[1] != 3 {
		t.Error("Select shares counts with its source")
	}
	for _, hs := range [][]string{nil, {"nope"}, {"f1", "f1"}} {
		if _, err := tr.Select(hs...); !errors.Is(err, ErrBadSelection) {
			t.Errorf("Select(%v) error = %v", hs, err)
		}
	}
	if r := (&Function{}).Rate(); r != 0 {
		t.Errorf("empty Rate() = %v", r)
	}
}
