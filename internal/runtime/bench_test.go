package runtime

import (
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"
	"time"
)

// BenchmarkInvoke measures a warm round trip through the protocol: frame
// out, handler call, frame back.
func BenchmarkInvoke(b *testing.B) {
	p := start(b, map[string]string{"f.py": "def f(event):\n    return event\n"}, Options{})
	c := p.ready(b)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	req := Request{ID: "0123456789abcdef", Event: []byte(`{"hello":"world"}`)}
	b.ReportAllocs()
	var run time.Duration
	for b.Loop() {
		r, err := c.Invoke(ctx, req)
		if err != nil || r.Err != nil {
			b.Fatal(err, r.Err)
		}
		run += r.Run
	}
	// The runtime-measured part: decode, call, encode.
	b.ReportMetric(float64(run.Nanoseconds())/float64(b.N)/1000, "us-in-handler")
}

// BenchmarkStart measures spawn to READY and spawn to the first result
// for a trivial handler, with and without the compiled runtime module,
// against a bare interpreter start.
func BenchmarkStart(b *testing.B) {
	code := writeCode(b, map[string]string{"f.py": "def f(event):\n    return {'hello': event}\n"})
	plain := b.TempDir()
	if err := Install(plain); err != nil {
		b.Fatal(err)
	}
	b.Run("bare-python-S", func(b *testing.B) {
		for b.Loop() {
			if err := exec.Command(python, "-S", "-c", "pass").Run(); err != nil {
				b.Fatal(err)
			}
		}
	})
	compiled := writeCode(b, map[string]string{"f.py": "def f(event):\n    return {'hello': event}\n"})
	if err := Compile(context.Background(), []string{python}, nil, compiled); err != nil {
		b.Fatal(err)
	}
	for _, bc := range []struct{ name, dir, code string }{
		{"runtime+code-compiled", rtDir, compiled},
		{"runtime", rtDir, code},
		{"runtime-uncompiled", plain, code},
	} {
		b.Run(bc.name, func(b *testing.B) {
			var ready, result time.Duration
			for b.Loop() {
				r, res := spawn(b, bc.dir, bc.code)
				ready += r
				result += res
			}
			n := float64(b.N) * 1000
			b.ReportMetric(float64(ready.Microseconds())/n, "ms-to-ready")
			b.ReportMetric(float64(result.Microseconds())/n, "ms-to-result")
		})
	}
}

// BenchmarkStartP50 interleaves bare interpreter starts with runtime
// starts, so load from other work hits both alike, and reports medians.
func BenchmarkStartP50(b *testing.B) {
	code := writeCode(b, map[string]string{"f.py": "def f(event):\n    return {'hello': event}\n"})
	if err := Compile(context.Background(), []string{python}, nil, code); err != nil {
		b.Fatal(err)
	}
	var bare, bareUp, ready, result []time.Duration
	for b.Loop() {
		t0 := time.Now()
		if err := exec.Command(python, "-S", "-c", "pass").Run(); err != nil {
			b.Fatal(err)
		}
		bare = append(bare, time.Since(t0))
		// The same start up to its first byte of output, without the
		// interpreter's shutdown and the reaping that "pass" includes.
		bareUp = append(bareUp, firstByte(b))
		r, res := spawn(b, rtDir, code)
		ready = append(ready, r)
		result = append(result, res)
	}
	p50 := func(d []time.Duration) float64 {
		slices.Sort(d)
		return float64(d[len(d)/2].Microseconds()) / 1000
	}
	b.ReportMetric(p50(bare), "ms-bare-p50")
	b.ReportMetric(p50(bareUp), "ms-bare-up-p50")
	b.ReportMetric(p50(ready), "ms-ready-p50")
	b.ReportMetric(p50(result), "ms-result-p50")
	b.ReportMetric(p50(result)/p50(bare), "result/bare")
	b.ReportMetric(p50(result)/p50(bareUp), "result/bare-up")
}

// firstByte times a bare interpreter start to its first write.
func firstByte(b *testing.B) time.Duration {
	cmd := exec.Command(python, "-S", "-c", "import posix; posix.write(1, b'x')")
	out, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	t0 := time.Now()
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	var one [1]byte
	if _, err := out.Read(one[:]); err != nil {
		b.Fatal(err)
	}
	d := time.Since(t0)
	if err := cmd.Wait(); err != nil {
		b.Fatal(err)
	}
	return d
}

// spawn starts a runtime, waits for READY, invokes once and tears it down.
// It returns the spawn-to-READY and spawn-to-result times.
func spawn(b *testing.B, rt, code string) (ready, result time.Duration) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	sdir, err := os.MkdirTemp("", "hrt")
	if err != nil {
		b.Fatal(err)
	}
	defer os.RemoveAll(sdir)
	sock := filepath.Join(sdir, "s")
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: sock, Net: "unix"})
	if err != nil {
		b.Fatal(err)
	}
	ln.SetUnlinkOnClose(false)
	f, err := ln.File()
	ln.Close()
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	argv := Argv(python)
	argv[len(argv)-1] = filepath.Join(rt, Script)
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Dir = code
	cmd.Env = Env(Options{CodeDir: code})
	cmd.ExtraFiles = []*os.File{f}

	t0 := time.Now()
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	defer cmd.Wait()
	defer cmd.Process.Kill()
	f.Close()
	c, err := Dial(ctx, sock)
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	if _, err := c.WaitReady(ctx); err != nil {
		b.Fatal(err)
	}
	ready = time.Since(t0)
	if r, err := c.Invoke(ctx, Request{ID: "1", Event: []byte(`"x"`)}); err != nil || r.Err != nil {
		b.Fatal(err, r.Err)
	}
	return ready, time.Since(t0)
}
