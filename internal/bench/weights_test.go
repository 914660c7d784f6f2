package bench

import (
	"slices"
	"testing"
	"time"
)

func TestWeightsSplits(t *testing.T) {
	ms := func(v ...int) []time.Duration {
		var d []time.Duration
		for _, x := range v {
			d = append(d, time.Duration(x)*time.Millisecond)
		}
		return d
	}
	// Two bursts of three calls, the first of each heavy.
	r := WeightsResult{Response: ms(900, 10, 20, 800, 30, 40), Heavy: ms(900, 800), Last: ms(900, 800)}
	if got, want := lightOf(r), ms(10, 20, 30, 40); !slices.Equal(got, want) {
		t.Errorf("lightOf = %v, want %v", got, want)
	}
	if got := lightOf(WeightsResult{Response: ms(1, 2), Last: ms(2)}); !slices.Equal(got, ms(1, 2)) {
		t.Errorf("lightOf with no heavy calls = %v", got)
	}
	// Round by round: the first burst's mean is lower in a, the second's not.
	a, b := ms(1, 1, 1, 9, 9, 9), ms(2, 2, 2, 3, 3, 3)
	if n := lowerBursts(a, b, 3); n != 1 {
		t.Errorf("lowerBursts = %d, want 1", n)
	}
	if got := meanOf(ms(1, 2, 3)); got != 2*time.Millisecond {
		t.Errorf("meanOf = %v", got)
	}
}
