package snapshot

import (
	"context"
	"fmt"
	"sort"
	"testing"
	"time"

	"github.com/hearth-run/hearth/internal/snapshot/snaptest"
)

// BenchmarkRestore restores the slow-init handler's snapshot b.N times,
// one at a time, and reports the p50 and p99 of the CRIU restore and of
// restore plus the first answered invocation.
func BenchmarkRestore(b *testing.B) {
	if env == nil {
		snaptest.Skip(b, envErr)
	}
	e := env
	ctx := context.Background()
	src := e.StartSource(b, e.CodeDir(b))
	src.Invoke(b)
	dir := b.TempDir()
	t0 := time.Now()
	d, err := engine.Dump(ctx, DumpSpec{Pid: src.SB.InitPid(), Scratch: src.SB.Scratch(), Socket: snaptest.Socket,
		Key: "bench", LeaveRunning: true}, dir)
	if err != nil {
		b.Fatal(err)
	}
	dump := time.Since(t0)
	if err := Seal(dir, d); err != nil {
		b.Fatal(err)
	}
	t0 = time.Now()
	if err := Verify(dir, d); err != nil {
		b.Fatal(err)
	}
	verify := time.Since(t0)
	var criu, total []time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		id := fmt.Sprintf("bench-%d", e.Seq())
		g := e.NewGroup(b, id)
		t0 := time.Now()
		s, err := engine.Restore(ctx, dir, d, RestoreSpec{ID: id, Group: g, Binds: e.Binds(src.Code)})
		if err != nil {
			b.Fatal(err)
		}
		snaptest.Invoke(b, s.SocketPath(snaptest.Socket))
		total = append(total, time.Since(t0))
		criu = append(criu, s.RestoreTime)
		b.StopTimer()
		s.Destroy(ctx)
		g.Delete(ctx)
		b.StartTimer()
	}
	b.StopTimer()
	p := func(v []time.Duration, q float64) float64 {
		s := append([]time.Duration(nil), v...)
		sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
		return float64(s[int(q*float64(len(s)-1))].Microseconds()) / 1000
	}
	b.ReportMetric(p(criu, 0.5), "criu-p50-ms")
	b.ReportMetric(p(criu, 0.99), "criu-p99-ms")
	b.ReportMetric(p(total, 0.5), "first-answer-p50-ms")
	b.ReportMetric(p(total, 0.99), "first-answer-p99-ms")
	b.ReportMetric(float64(dump.Microseconds())/1000, "dump-ms")
	b.ReportMetric(float64(verify.Microseconds())/1000, "verify-ms")
	b.ReportMetric(float64(d.Bytes)/(1<<20), "MB")
}
