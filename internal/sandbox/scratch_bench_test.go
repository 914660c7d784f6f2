package sandbox

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// BenchmarkScratchMake measures what making a sandbox's /tmp costs on the
// critical path: a tmpfs mounted in the host's namespace (as before
// on-disk /tmp), a detached tmpfs, an on-disk file system from the ready
// reserve, and one made on demand. Dropping it (off the critical path,
// at Destroy) is not timed.
func BenchmarkScratchMake(b *testing.B) {
	ctx := context.Background()
	b.Run("tmpfs-host-mount", func(b *testing.B) {
		dir := b.TempDir()
		for i := 0; i < b.N; i++ {
			p := filepath.Join(dir, "s")
			if err := os.Mkdir(p, 0o755); err != nil {
				b.Fatal(err)
			}
			if err := unix.Mount("tmpfs", p, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, "size=536870912,mode=1777"); err != nil {
				b.Fatal(err)
			}
			b.StopTimer()
			if err := unix.Unmount(p, unix.MNT_DETACH); err != nil {
				b.Fatal(err)
			}
			os.Remove(p)
			b.StartTimer()
		}
	})
	b.Run("tmpfs-detached", func(b *testing.B) {
		f := &Factory{}
		for i := 0; i < b.N; i++ {
			m, _, err := f.scratch(ctx, Config{ScratchBytes: 512 << 20})
			if err != nil {
				b.Fatal(err)
			}
			b.StopTimer()
			m.Close()
			b.StartTimer()
		}
	})
	for _, mode := range []string{"disk-ready", "disk-made"} {
		b.Run(mode, func(b *testing.B) {
			ready := 8
			if mode == "disk-made" {
				ready = -1
			}
			d, f, cfg := diskFactory(b, ready)
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if mode == "disk-ready" && i%4 == 0 {
					b.StopTimer()
					for deadline := time.Now().Add(5 * time.Second); d.readyCount(cfg.ScratchBytes) < ready && time.Now().Before(deadline); {
						time.Sleep(time.Millisecond)
					}
					b.StartTimer()
				}
				_, sc, err := f.scratch(ctx, cfg)
				if err != nil {
					b.Fatal(err)
				}
				b.StopTimer()
				sc.Release(false)
				b.StartTimer()
			}
		})
	}
}

// BenchmarkScratchLife measures the whole life of an on-disk /tmp, as
// every sandbox's costs the worker off the critical path: taken, a file
// written, and released. "new" makes each (template copy, loop device,
// mount) and drops it (unmount, loop device and image freed), as
// without reuse; "reused" takes a released one back (the file removed,
// checked empty, a fresh directory and its mount). cpu-ms/op is the
// process's CPU time, the kernel's work for it included (its loop I/O
// threads' not); disk-KiB/op the page cache it dirtied for the data
// dir's disk, the image's copy (/proc/self/io; the loop device's own
// direct I/O is a kernel thread's and not counted); reused/op the share
// of file systems that were reused.
func BenchmarkScratchLife(b *testing.B) {
	for _, mode := range []string{"new", "reused"} {
		b.Run(mode, func(b *testing.B) {
			ctx := context.Background()
			ready := -1
			if mode == "reused" {
				ready = 1
			}
			d, f, cfg := diskFactory(b, ready)
			s0 := d.Stats()
			var r0, r1 unix.Rusage
			unix.Getrusage(unix.RUSAGE_SELF, &r0)
			w0 := writeBytes(b)
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				m, sc, err := f.scratch(ctx, cfg)
				if err != nil {
					b.Fatal(err)
				}
				if err := os.WriteFile(filepath.Join(fdPath(m), "sock"), []byte("x"), 0o600); err != nil {
					b.Fatal(err)
				}
				sc.Release(true)
			}
			b.StopTimer()
			unix.Getrusage(unix.RUSAGE_SELF, &r1)
			w1 := writeBytes(b)
			s1 := d.Stats()
			cpu := time.Duration(r1.Utime.Nano() + r1.Stime.Nano() - r0.Utime.Nano() - r0.Stime.Nano())
			b.ReportMetric(float64(cpu.Microseconds())/1000/float64(b.N), "cpu-ms/op")
			b.ReportMetric(float64(w1-w0)/1024/float64(b.N), "disk-KiB/op")
			b.ReportMetric(float64(s1.Reused-s0.Reused)/float64(b.N), "reused/op")
		})
	}
}

// writeBytes reads the bytes this process sent to storage so far.
func writeBytes(b *testing.B) int64 {
	b.Helper()
	data, err := os.ReadFile("/proc/self/io")
	if err != nil {
		b.Fatal(err)
	}
	for _, l := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(l, "write_bytes: "); ok {
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil {
				b.Fatal(err)
			}
			return n
		}
	}
	b.Fatal("no write_bytes in /proc/self/io")
	return 0
}

// diskFactory opens Disks keeping ready file systems ready (negative:
// none), closed at the benchmark's end, and makes its 512 MiB template.
func diskFactory(b *testing.B, ready int) (*Disks, *Factory, Config) {
	b.Helper()
	d, err := OpenDisks(filepath.Join(b.TempDir(), "disks"), DisksConfig{Ready: ready})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { d.Close() })
	f := &Factory{Disks: d}
	cfg := Config{ScratchBytes: 512 << 20, ScratchDisk: true}
	_, sc, err := f.scratch(context.Background(), cfg) // the template
	if err != nil {
		b.Fatal(err)
	}
	sc.Release(true)
	return d, f, cfg
}
