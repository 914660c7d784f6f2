package sandbox

import (
	"context"
	"os"
	"path/filepath"
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
			m, err := f.scratch(ctx, Config{ScratchBytes: 512 << 20})
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
			d, err := OpenDisks(filepath.Join(b.TempDir(), "disks"), DisksConfig{Ready: ready})
			if err != nil {
				b.Fatal(err)
			}
			defer d.Close()
			f := &Factory{Disks: d}
			cfg := Config{ScratchBytes: 512 << 20, ScratchDisk: true}
			m, err := f.scratch(ctx, cfg) // the template
			if err != nil {
				b.Fatal(err)
			}
			m.Close()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if mode == "disk-ready" && i%4 == 0 {
					b.StopTimer()
					for deadline := time.Now().Add(5 * time.Second); d.readyCount(cfg.ScratchBytes) < ready && time.Now().Before(deadline); {
						time.Sleep(time.Millisecond)
					}
					b.StartTimer()
				}
				m, err := f.scratch(ctx, cfg)
				if err != nil {
					b.Fatal(err)
				}
				b.StopTimer()
				m.Close()
				b.StartTimer()
			}
		})
	}
}
