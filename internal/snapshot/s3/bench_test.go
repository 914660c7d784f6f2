//go:build !no_s3

package s3

import (
	"context"
	"fmt"
	"sort"
	"testing"
	"time"

	"github.com/hearth-run/hearth/internal/snapshot"
	"github.com/hearth-run/hearth/internal/snapshot/snaptest"
)

// BenchmarkRemoteRestore measures the remote path on loopback S3: a cache
// with no local copy downloads the slow handler's snapshot, verifies it
// and restores it; the first invocation is answered. It reports p50/p99
// of download and of the whole path, plus the upload time.
func BenchmarkRemoteRestore(b *testing.B) {
	if env == nil {
		snaptest.Skip(b, envErr)
	}
	e := env
	ctx := context.Background()
	srv := snaptest.StartS3(b)
	store, err := New(Config{Endpoint: srv.Endpoint, Bucket: "bench", AccessKey: srv.Access, SecretKey: srv.Secret})
	if err != nil {
		b.Fatal(err)
	}
	if err := store.EnsureBucket(ctx); err != nil {
		b.Fatal(err)
	}
	a, err := snapshot.OpenCache(snapshot.CacheConfig{Dir: b.TempDir(), Remote: store})
	if err != nil {
		b.Fatal(err)
	}
	src := e.StartSource(b, e.CodeDir(b))
	src.Invoke(b)
	key := "bench-remote"
	if _, err := a.Create(ctx, key, func(dir string) (*snapshot.Descriptor, error) {
		return engine.Dump(ctx, snapshot.DumpSpec{Pid: src.SB.InitPid(), Scratch: src.SB.Scratch(), Socket: snaptest.Socket, Key: key}, dir)
	}); err != nil {
		b.Fatal(err)
	}
	t0 := time.Now()
	if err := a.Push(ctx, key); err != nil {
		b.Fatal(err)
	}
	upload := time.Since(t0)
	var down, total []time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		c, err := snapshot.OpenCache(snapshot.CacheConfig{Dir: b.TempDir(), Remote: store})
		if err != nil {
			b.Fatal(err)
		}
		id := fmt.Sprintf("bench-%d", e.Seq())
		g := e.NewGroup(b, id)
		t0 := time.Now()
		h, err := c.Acquire(ctx, key)
		if err != nil {
			b.Fatal(err)
		}
		down = append(down, time.Since(t0))
		s, err := engine.Restore(ctx, h.Dir(), h.Descriptor(), snapshot.RestoreSpec{ID: id, Group: g, Binds: e.Binds(src.Code)})
		h.Release()
		if err != nil {
			b.Fatal(err)
		}
		snaptest.Invoke(b, s.SocketPath(snaptest.Socket))
		total = append(total, time.Since(t0))
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
	b.ReportMetric(p(down, 0.5), "download-p50-ms")
	b.ReportMetric(p(down, 0.99), "download-p99-ms")
	b.ReportMetric(p(total, 0.5), "remote-first-answer-p50-ms")
	b.ReportMetric(p(total, 0.99), "remote-first-answer-p99-ms")
	b.ReportMetric(float64(upload.Microseconds())/1000, "upload-ms")
}
