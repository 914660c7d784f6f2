package worker

import (
	"testing"
	"time"
)

// BenchmarkGrowthWatchShortCall is what watching a call for growth adds
// to one shorter than growthEvery: a timer armed and stopped.
func BenchmarkGrowthWatchShortCall(b *testing.B) {
	c := newTestCache(b, 300*mib, PoolConfig{})
	inst := &instance{id: "x"}
	for b.Loop() {
		c.w.watchGrowth(inst, time.Now()).stop()
	}
}
