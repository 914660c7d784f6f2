package trace

import (
	"testing"
	"time"
)

func TestSmoke(t *testing.T) {
	for _, d := range []string{"extremes3-min540-689", "sample100-min480-959", "sample10-day"} {
		tr, err := LoadAzure2019("/work/shared/data/azure2019/" + d)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range []Arrival{Equidistant, Uniform, Exponential} {
			start := time.Now()
			g := NewGenerator(tr, m, 1)
			var inv Invocation
			var n int64
			var last time.Duration
			for g.Next(&inv) {
				if inv.At < last {
					t.Fatal("order")
				}
				last = inv.At
				n++
			}
			t.Log(d, m, tr.Minutes, tr.FirstMinute, len(tr.Functions), n, tr.Invocations(), tr.Skipped, time.Since(start), last)
		}
	}
}
