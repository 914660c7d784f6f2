package worker

import (
	"testing"
	"time"
)

func TestShortWeight(t *testing.T) {
	for _, c := range []struct {
		run  time.Duration
		want uint64
	}{
		{0, 100}, // no call yet: a sandbox's own
		{shortRef, 100},
		{450 * time.Millisecond, 100},
		{400 * time.Millisecond, 141},
		{250 * time.Millisecond, 200},
		{150 * time.Millisecond, 200}, // bounded
		{time.Millisecond, 200},
		{700 * time.Millisecond, 71},
		{time.Second, 50},
		{2 * time.Second, 50}, // bounded
	} {
		if got := shortWeight(c.run); got != c.want {
			t.Errorf("shortWeight(%v) = %d, want %d", c.run, got, c.want)
		}
	}
}

func TestObserveRun(t *testing.T) {
	var st fnState
	st.observeRun(time.Second)
	if got := time.Duration(st.run.Load()); got != time.Second {
		t.Fatalf("after one call of 1s: %v", got)
	}
	for range 10 {
		st.observeRun(100 * time.Millisecond)
	}
	// 0.7^10 of the first call is left: 100ms + 900ms*0.028 = 125ms.
	if got := time.Duration(st.run.Load()); got < 120*time.Millisecond || got > 130*time.Millisecond {
		t.Errorf("after ten calls of 100ms: %v, want about 125ms", got)
	}
}
