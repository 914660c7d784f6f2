package cgroup

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// quantiles reports the median and 99th percentile of ds as metrics.
func quantiles(b *testing.B, ds []time.Duration) {
	if len(ds) == 0 {
		return
	}
	slices.Sort(ds)
	b.ReportMetric(float64(ds[len(ds)/2].Microseconds()), "p50-us")
	b.ReportMetric(float64(ds[len(ds)*99/100].Microseconds()), "p99-us")
}

// BenchmarkCreateDelete measures mkdir + limits + rmdir of a sandbox group.
func BenchmarkCreateDelete(b *testing.B) {
	requireRoot(b)
	ctx := context.Background()
	m := newManager(b)
	lim := Limits{MemoryBytes: 128 << 20, Pids: 64, CPUWeight: 100}
	i := 0
	for b.Loop() {
		g, err := m.Create(fmt.Sprintf("b%d", i), lim)
		if err != nil {
			b.Fatal(err)
		}
		if err := g.Delete(ctx); err != nil {
			b.Fatal(err)
		}
		i++
	}
}

// BenchmarkLifecycle measures a sandbox group's whole life: create with
// limits, attach a process, move it out again (so Delete does not have to
// kill it), and delete. The second attach is included in the figure.
func BenchmarkLifecycle(b *testing.B) {
	requireRoot(b)
	ctx := context.Background()
	m := newManager(b)
	home, err := m.Create("home", Limits{})
	if err != nil {
		b.Fatal(err)
	}
	cmd := exec.Command("/bin/sleep", "600")
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	pid := cmd.Process.Pid
	if err := home.Add(pid); err != nil {
		b.Fatal(err)
	}
	lim := Limits{MemoryBytes: 128 << 20, Pids: 64, CPUWeight: 100}
	i := 0
	var ds []time.Duration
	for b.Loop() {
		t0 := time.Now()
		g, err := m.Create(fmt.Sprintf("b%d", i), lim)
		if err != nil {
			b.Fatal(err)
		}
		if err := g.Add(pid); err != nil {
			b.Fatal(err)
		}
		if err := home.Add(pid); err != nil {
			b.Fatal(err)
		}
		if err := g.Delete(ctx); err != nil {
			b.Fatal(err)
		}
		ds = append(ds, time.Since(t0))
		i++
	}
	quantiles(b, ds)
}

// BenchmarkLifecycleFloor does what BenchmarkLifecycle does with bare
// system calls, to compare against under the same machine load.
func BenchmarkLifecycleFloor(b *testing.B) {
	requireRoot(b)
	m := newManager(b)
	if m.Mode() != V1 {
		b.Skip("v1 only")
	}
	home, err := m.Create("home", Limits{})
	if err != nil {
		b.Fatal(err)
	}
	cmd := exec.Command("/bin/sleep", "600")
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	pid := []byte(strconv.Itoa(cmd.Process.Pid))
	put := func(path string, v []byte) {
		if err := os.WriteFile(path, v, 0); err != nil {
			b.Fatal(err)
		}
	}
	for _, d := range home.Dirs() {
		put(filepath.Join(d, "cgroup.procs"), pid)
	}
	i := 0
	var ds []time.Duration
	for b.Loop() {
		t0 := time.Now()
		dirs := m.dirs(fmt.Sprintf("f%d", i))
		for _, d := range dirs {
			if err := unix.Mkdir(d, 0o755); err != nil {
				b.Fatal(err)
			}
		}
		put(filepath.Join(dirs[m.mem], "memory.limit_in_bytes"), []byte("134217728"))
		put(filepath.Join(dirs[m.pids], "pids.max"), []byte("64"))
		put(filepath.Join(dirs[m.cpu], "cpu.shares"), []byte("1024"))
		for _, d := range dirs {
			put(filepath.Join(d, "cgroup.procs"), pid)
		}
		for _, d := range home.Dirs() {
			put(filepath.Join(d, "cgroup.procs"), pid)
		}
		for _, d := range dirs {
			if err := unix.Rmdir(d); err != nil {
				b.Fatal(err)
			}
		}
		ds = append(ds, time.Since(t0))
		i++
	}
	quantiles(b, ds)
}

// BenchmarkFreezeThaw measures a freeze followed by a thaw of a group
// holding one sleeping process, in each mode this host offers; on v1 also
// without the manager's frozen pin group (unpinned), the baseline the pin
// saves the kernel's text patching against.
func BenchmarkFreezeThaw(b *testing.B) {
	ms := modes(b)
	ms = append(ms, modeCase{name: "unpinned", opts: ms[0].opts})
	for _, mc := range ms {
		b.Run(mc.name, func(b *testing.B) {
			ctx := context.Background()
			m := newManager(b, append([]Option{WithFreezerPin()}, mc.opts...)...)
			if mc.name == "unpinned" {
				if m.pin == "" {
					b.Skip("no pin to remove: not cgroup v1")
				}
				if err := writeFile(filepath.Join(m.pin, "freezer.state"), "THAWED"); err != nil {
					b.Fatal(err)
				}
				if err := unix.Rmdir(m.pin); err != nil {
					b.Fatal(err)
				}
				m.pin = ""
			}
			g, err := m.Create("ft", Limits{})
			if err != nil {
				b.Fatal(err)
			}
			start(b, g, "/bin/sleep", "600")
			var fs, ts []time.Duration
			for b.Loop() {
				t0 := time.Now()
				if err := g.Freeze(ctx); err != nil {
					b.Fatal(err)
				}
				t1 := time.Now()
				if err := g.Thaw(ctx); err != nil {
					b.Fatal(err)
				}
				fs = append(fs, t1.Sub(t0))
				ts = append(ts, time.Since(t1))
			}
			slices.Sort(fs)
			slices.Sort(ts)
			if len(fs) > 0 {
				b.ReportMetric(float64(fs[len(fs)/2].Microseconds()), "freeze-p50-us")
				b.ReportMetric(float64(ts[len(ts)/2].Microseconds()), "thaw-p50-us")
			}
		})
	}
}

// BenchmarkKill measures a forked sandbox's teardown kill: a group of one
// sleeping process, killed and waited for, in each mode this host offers
// (on a hybrid v1 host: through the twin's cgroup.kill, and v1-legacy,
// the freeze, list and signal a host without one takes). The process is
// started and reaped off the clock. cpu-us/op is this process's own CPU
// (user and system) per kill: the worker's share of a teardown. Managers
// keep the frozen pin group the worker's does (WithFreezerPin).
func BenchmarkKill(b *testing.B) {
	for _, mc := range modes(b) {
		b.Run(mc.name, func(b *testing.B) {
			ctx := context.Background()
			m := newManager(b, append(mc.opts, WithFreezerPin())...)
			g, err := m.Create("kill", Limits{})
			if err != nil {
				b.Fatal(err)
			}
			var cpu time.Duration
			ds := make([]time.Duration, 0, b.N)
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				b.StopTimer()
				cmd := exec.Command("/bin/sleep", "600")
				if err := cmd.Start(); err != nil {
					b.Fatal(err)
				}
				if err := g.Add(cmd.Process.Pid); err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
				c0, t0 := selfCPU(b), time.Now()
				if err := g.Kill(ctx); err != nil {
					b.Fatal(err)
				}
				ds = append(ds, time.Since(t0))
				cpu += selfCPU(b) - c0
				b.StopTimer()
				cmd.Wait()
				b.StartTimer()
			}
			b.ReportMetric(float64(cpu.Microseconds())/float64(b.N), "cpu-us/op")
			quantiles(b, ds)
		})
	}
}

func selfCPU(b *testing.B) time.Duration {
	var ru unix.Rusage
	if err := unix.Getrusage(unix.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
