package e2e

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// cacheProbe reports whether the handler's module and the runtime's have
// bytecode caches for the Python that runs them.
const cacheProbe = `
import importlib.util, os, sys
def f(e):
    rt = sys.modules["hearthrt"].__file__
    return {"handler": os.path.exists(importlib.util.cache_from_source(__file__)),
            "runtime": os.path.exists(importlib.util.cache_from_source(rt)),
            "version": sys.version_info[:2]}
`

// TestBytecodeForTheSandboxPython checks that deploy and start-up compile
// bytecode with the base image's Python, not the host's: a cache for
// another version would be ignored, and every start would compile. A
// worker without the install cache compiles too (in the same sandboxes).
func TestBytecodeForTheSandboxPython(t *testing.T) {
	for _, args := range [][]string{nil, {"--no-install-cache"}} {
		t.Run(strings.Join(append([]string{"default"}, args...), " "), func(t *testing.T) {
			w := startWorker(t, args...)
			w.deployDir("cached", fn(t, "f.py", cacheProbe))
			m := decode(t, w.mustInvoke("cached", "{}").Body)
			if m["handler"] != true || m["runtime"] != true {
				t.Errorf("bytecode caches for Python %v: %v", m["version"], m)
			}
		})
	}
}

// compileBomb is about 6 MB of source that gzips to about 6 KB: a list
// display of three million constants. CPython 3.13's compiler, alone and
// unconstrained, takes about 2.3 GB and 47 s to compile it.
func compileBomb() string { return "x = [" + strings.Repeat("1,", 3_000_000) + "]\n" }

// compileObservation is what watchCompiles saw of the compile sandboxes.
type compileObservation struct {
	groups   map[string]bool // compile cgroups seen
	limits   map[int64]bool  // their memory limits
	peak     int64           // the highest memory peak seen in one
	pythons  map[int]string  // pid -> "uid capeff nonewprivs" of each python3 seen
	overPeak bool            // a peak above its group's limit
}

// cgroupInt reads a cgroup file holding one number ("max" is -1).
func cgroupInt(p string) (int64, bool) {
	b, err := os.ReadFile(p)
	if err != nil {
		return 0, false
	}
	s := strings.TrimSpace(string(b))
	if s == "max" {
		return -1, true
	}
	v, err := strconv.ParseInt(s, 10, 64)
	return v, err == nil
}

// procStatus returns the Uid (real), CapEff and NoNewPrivs lines' values
// of pid, space-separated.
func procStatus(pid int) string {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return ""
	}
	var uid, capEff, nnp string
	for _, l := range strings.Split(string(b), "\n") {
		k, v, _ := strings.Cut(l, ":")
		f := strings.Fields(v)
		if len(f) == 0 {
			continue
		}
		switch k {
		case "Uid":
			uid = f[0]
		case "CapEff":
			capEff = f[0]
		case "NoNewPrivs":
			nnp = f[0]
		}
	}
	return uid + " " + capEff + " " + nnp
}

// watchCompiles polls the worker's compile cgroups (memory hierarchy,
// v1 or v2) until stop is closed.
func watchCompiles(parent string, stop <-chan struct{}) <-chan compileObservation {
	done := make(chan compileObservation, 1)
	go func() {
		o := compileObservation{groups: map[string]bool{}, limits: map[int64]bool{}, pythons: map[int]string{}}
		defer func() { done <- o }()
		for {
			for _, pattern := range []string{"/sys/fs/cgroup/memory/%s-pkgs/compile-*", "/sys/fs/cgroup/%s-pkgs/compile-*"} {
				gs, _ := filepath.Glob(strings.Replace(pattern, "%s", parent, 1))
				for _, g := range gs {
					o.groups[filepath.Base(g)] = true
					b, _ := os.ReadFile(filepath.Join(g, "cgroup.procs"))
					if len(strings.Fields(string(b))) == 0 {
						continue // limits are set before a process joins
					}
					limit, ok := cgroupInt(filepath.Join(g, "memory.limit_in_bytes"))
					if !ok {
						limit, ok = cgroupInt(filepath.Join(g, "memory.max"))
					}
					if ok {
						o.limits[limit] = true
					}
					peak, ok := cgroupInt(filepath.Join(g, "memory.max_usage_in_bytes"))
					if !ok {
						peak, ok = cgroupInt(filepath.Join(g, "memory.peak"))
					}
					if ok {
						o.peak = max(o.peak, peak)
						if limit > 0 && peak > limit {
							o.overPeak = true
						}
					}
					for _, f := range strings.Fields(string(b)) {
						pid, _ := strconv.Atoi(f)
						comm, _ := os.ReadFile("/proc/" + f + "/comm")
						if strings.TrimSpace(string(comm)) == "python3" {
							if st := procStatus(pid); st != "" {
								o.pythons[pid] = st
							}
						}
					}
				}
			}
			select {
			case <-stop:
				return
			case <-time.After(5 * time.Millisecond):
			}
		}
	}()
	return done
}

// inCompileGroup reports the processes in a compile cgroup of the worker
// with cgroup parent parent.
func inCompileGroup(parent string) []string {
	var in []string
	procs, _ := filepath.Glob("/proc/[0-9]*/cgroup")
	for _, p := range procs {
		b, err := os.ReadFile(p)
		if err == nil && strings.Contains(string(b), "/"+parent+"-pkgs/compile-") {
			in = append(in, filepath.Base(filepath.Dir(p)))
		}
	}
	return in
}

// TestCompileBomb deploys a function with a compile bomb next to its
// handler. The compile runs in its own sandbox and cgroup, unprivileged,
// and its memory limit (or, given more memory, its time limit) kills it;
// the deploy returns soon after without bytecode and the function works;
// no compiler outlives the deploy; other functions are served all along.
func TestCompileBomb(t *testing.T) {
	for _, tc := range []struct {
		name    string
		args    []string
		timeout time.Duration
		limit   int64
		want    string // in the worker's warning
	}{
		{"memory", nil, 30 * time.Second, 256 << 20, "ran out of memory (limit 256 MiB)"},
		{"time", []string{"--compile-timeout", "2s", "--compile-memory-mb", "4096"}, 2 * time.Second, 4096 << 20, "time limit exceeded (2s)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := startWorker(t, tc.args...)
			w.deployDir("other", fn(t, "f.py", "def f(e):\n    return e\n"))
			w.mustInvoke("other", `{"n": 0}`)

			// Invoke the other function until the deploy is done.
			stopCalls := make(chan struct{})
			var wg sync.WaitGroup
			var mu sync.Mutex
			var calls []time.Time // ends of successful calls
			var failures []string
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := 1; ; i++ {
					select {
					case <-stopCalls:
						return
					default:
					}
					inv, err := w.invoke("other", `{"n": `+strconv.Itoa(i)+`}`)
					mu.Lock()
					if err != nil || decode(t, inv.Body)["n"] != float64(i) {
						failures = append(failures, err.Error())
					} else {
						calls = append(calls, time.Now())
					}
					mu.Unlock()
					time.Sleep(20 * time.Millisecond)
				}
			}()
			stopWatch := make(chan struct{})
			watched := watchCompiles(w.cgroup, stopWatch)

			bomb := fn(t, "f.py", cacheProbe, "bomb.py", compileBomb())
			t0 := time.Now()
			w.deployDir("bomb", bomb)
			took := time.Since(t0)
			end := time.Now()
			left := inCompileGroup(w.cgroup)
			close(stopWatch)
			o := <-watched
			close(stopCalls)
			wg.Wait()
			t.Logf("deploy took %v; compile groups %v, limits %v, peak %d MiB, pythons %v",
				took, o.groups, o.limits, o.peak>>20, o.pythons)

			if took > tc.timeout+20*time.Second {
				t.Errorf("deploy took %v, compile time limit %v", took, tc.timeout)
			}
			if len(left) > 0 {
				t.Errorf("processes in compile cgroups after the deploy: %v", left)
			}
			for pid := range o.pythons {
				if b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cgroup"); err == nil && strings.Contains(string(b), "-pkgs/compile-") {
					t.Errorf("compiler %d still runs", pid)
				}
			}
			if len(o.groups) != 1 || !o.limits[tc.limit] || len(o.limits) != 1 || o.overPeak {
				t.Errorf("compile cgroups %v with memory limits %v (want one, %d MiB), peak %d MiB over the limit: %v",
					o.groups, o.limits, tc.limit>>20, o.peak>>20, o.overPeak)
			}
			if len(o.pythons) == 0 {
				t.Errorf("saw no compiler process in the compile cgroup")
			}
			for pid, st := range o.pythons {
				// uid, capabilities, no_new_privs
				if f := strings.Fields(st); len(f) != 3 || f[0] == "0" || f[1] != "0000000000000000" || f[2] != "1" {
					t.Errorf("compiler %d: uid, CapEff, NoNewPrivs = %q; want unprivileged", pid, st)
				}
			}
			logs := w.out.String()
			found := false
			for _, l := range strings.Split(logs, "\n") {
				if strings.Contains(l, "function bytecode not precompiled") && strings.Contains(l, "function=bomb") && strings.Contains(l, tc.want) {
					found = true
				}
			}
			if !found {
				t.Errorf("no warning with %q in the worker's log:\n%s", tc.want, tail(logs, 20))
			}

			// The function works, without bytecode for its code.
			m := decode(t, w.mustInvoke("bomb", "{}").Body)
			if m["handler"] != false || m["runtime"] != true {
				t.Errorf("bytecode after a killed compile: %v", m)
			}

			mu.Lock()
			defer mu.Unlock()
			if len(failures) > 0 {
				t.Errorf("%d calls of another function failed during the deploy: %v", len(failures), failures[:min(3, len(failures))])
			}
			during := 0
			for _, c := range calls {
				if c.After(t0) && c.Before(end) {
					during++
				}
			}
			t.Logf("%d calls of another function during the deploy", during)
			if during < 3 {
				t.Errorf("%d calls of another function completed during the %v deploy, want at least 3", during, took)
			}
		})
	}
}

// TestCompileBombDiesWithTheWorker: a compile in progress does not
// outlive its worker, whether the worker stops (SIGTERM: the deploy's
// context ends) or dies (SIGKILL: the sandbox's init has a parent-death
// signal, and the reaper sweeps the compile's cgroup).
func TestCompileBombDiesWithTheWorker(t *testing.T) {
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGKILL} {
		t.Run(sig.String(), func(t *testing.T) {
			// Limits the bomb stays within for most of a minute.
			w := startWorker(t, "--compile-timeout", "5m", "--compile-memory-mb", "4096")
			bomb := fn(t, "f.py", cacheProbe, "bomb.py", compileBomb())
			deployed := make(chan struct{})
			go func() {
				defer close(deployed)
				w.hearth("deploy", bomb, "--name", "bomb") // fails when the worker goes
			}()
			deadline := time.Now().Add(60 * time.Second)
			for len(inCompileGroup(w.cgroup)) == 0 {
				if time.Now().After(deadline) {
					t.Fatalf("the compile never started:\n%s", tail(w.out.String(), 20))
				}
				time.Sleep(20 * time.Millisecond)
			}
			t0 := time.Now()
			w.cmd.Process.Signal(sig)
			done := make(chan error, 1)
			go func() { done <- w.cmd.Wait() }()
			select {
			case err := <-done:
				if sig == syscall.SIGTERM && err != nil {
					t.Errorf("worker exited with %v after SIGTERM:\n%s", err, tail(w.out.String(), 20))
				}
			case <-time.After(30 * time.Second):
				w.cmd.Process.Kill()
				<-done
				t.Fatalf("worker did not exit within 30 s of %v", sig)
			}
			for len(inCompileGroup(w.cgroup)) > 0 {
				if time.Since(t0) > 10*time.Second {
					t.Fatalf("compiler still running %v after %v: %v", time.Since(t0), sig, inCompileGroup(w.cgroup))
				}
				time.Sleep(20 * time.Millisecond)
			}
			t.Logf("no compiler %v after %v", time.Since(t0).Round(time.Millisecond), sig)
			w.waitReaped(15 * time.Second)
			<-deployed
		})
	}
}
