package e2e

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestBenchStopsWhatItStarted: a benchmark stopped from outside leaves
// nothing running. On SIGTERM (or SIGINT) it stops its worker and its
// background load and removes its cgroups and data dirs, as when it ends;
// killed outright, its worker (told by its parent-death signal) and load
// still go, and the worker removes its cgroups.
func TestBenchStopsWhatItStarted(t *testing.T) {
	for _, c := range []struct {
		name string
		sig  syscall.Signal
	}{{"term", syscall.SIGTERM}, {"kill", syscall.SIGKILL}} {
		t.Run(c.name, func(t *testing.T) {
			var out bytes.Buffer
			cmd := exec.Command(filepath.Join(binDir, "hearth"), "bench", "zygote", "-n", "5000",
				"--base", testBase, "--background", "1", "--background-session")
			cmd.Stdout, cmd.Stderr = &out, &out
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			bench := cmd.Process.Pid
			parent := "hearth-bench-" + strconv.Itoa(bench)
			exited := make(chan struct{})
			go func() { cmd.Wait(); close(exited) }()
			defer func() {
				cmd.Process.Kill()
				<-exited
			}()
			// Running: the worker has made its cgroups and serves, the
			// load spins.
			var worker, load []int
			deadline := time.Now().Add(60 * time.Second)
			for len(worker) == 0 || len(load) == 0 || len(cgroupsLeft(parent)) == 0 {
				if time.Now().After(deadline) {
					t.Fatalf("benchmark not under way (worker %v, load %v, cgroups %v):\n%s", worker, load, cgroupsLeft(parent), out.String())
				}
				time.Sleep(100 * time.Millisecond)
				worker, load = childrenOf(bench, "hearth"), childrenOf(bench, "sh")
			}
			t.Cleanup(func() {
				// Only if the benchmark failed at it: what it started must
				// not outlive the test.
				if !t.Failed() {
					return
				}
				for _, pid := range worker {
					syscall.Kill(pid, syscall.SIGTERM)
				}
				for _, pid := range load {
					syscall.Kill(pid, syscall.SIGKILL)
				}
			})
			time.Sleep(2 * time.Second) // into the measurement
			if err := cmd.Process.Signal(c.sig); err != nil {
				t.Fatal(err)
			}
			select {
			case <-exited:
			case <-time.After(45 * time.Second):
				t.Fatalf("benchmark still running 45 s after %v:\n%s", c.sig, out.String())
			}
			// What it started is gone soon after.
			deadline = time.Now().Add(30 * time.Second)
			for {
				var alive []int
				for _, pid := range append(worker, load...) {
					if syscall.Kill(pid, 0) == nil && !zombie(pid) {
						alive = append(alive, pid)
					}
				}
				left := cgroupsLeft(parent)
				if len(alive) == 0 && len(left) == 0 {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("30 s after the benchmark's end (%v): processes %v (worker %v, load %v) and cgroups %v left:\n%s",
						c.sig, alive, worker, load, left, out.String())
				}
				time.Sleep(100 * time.Millisecond)
			}
			dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), parent+"-*"))
			acct, _ := filepath.Glob("/sys/fs/cgroup/cpuacct/" + parent + "-*-acct")
			if c.sig == syscall.SIGKILL {
				// Its temporary dirs and cpuacct group are its own to
				// remove (the next benchmark sweeps the group).
				for _, d := range dirs {
					os.RemoveAll(d)
				}
				if len(acct) > 0 {
					// Swept once a minute old (a benchmark in another pid
					// namespace may be making it): age them.
					old := time.Now().Add(-2 * time.Minute)
					for _, a := range acct {
						if err := os.Chtimes(a, old, old); err != nil {
							t.Fatal(err)
						}
					}
					sweepRun(t)
					for _, a := range acct {
						if _, err := os.Stat(a); err == nil {
							t.Errorf("the next benchmark left the dead one's %s", a)
						}
					}
				}
				return
			}
			if len(dirs) > 0 || len(acct) > 0 {
				t.Errorf("after %v, the benchmark left temporary dirs %v and cpuacct groups %v", c.sig, dirs, acct)
			}
		})
	}
}

// sweepRun runs a short benchmark, which sweeps the cpuacct groups of dead
// ones as it starts its worker.
func sweepRun(t *testing.T) {
	t.Helper()
	out, err := exec.Command(filepath.Join(binDir, "hearth"), "bench", "startup", "-n", "1", "--base", testBase).CombinedOutput()
	if err != nil {
		t.Fatalf("hearth bench startup: %v\n%s", err, out)
	}
}

// childrenOf lists the live children of pid named comm.
func childrenOf(pid int, comm string) []int {
	var out []int
	dirs, _ := filepath.Glob("/proc/[0-9]*/stat")
	for _, d := range dirs {
		b, err := os.ReadFile(d)
		if err != nil {
			continue
		}
		s := string(b)
		lp, rp := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
		if lp < 0 || rp < lp {
			continue
		}
		f := strings.Fields(s[rp+1:])
		if len(f) < 2 || s[lp+1:rp] != comm || f[1] != strconv.Itoa(pid) {
			continue
		}
		if p, err := strconv.Atoi(strings.Fields(s)[0]); err == nil {
			out = append(out, p)
		}
	}
	return out
}

// zombie reports whether pid has exited but is not yet reaped.
func zombie(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return true
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	return len(f) > 0 && f[0] == "Z"
}

// TestBenchNetwork runs hearth bench network briefly: the used function's
// sandboxes, from wired spares or forked on demand, are none under the
// network filter, the new functions' filtered sandboxes are held to the
// worker's bound of 2000 sockets a second (about 500 us each), and the
// warm function's calls are accounted for.
func TestBenchNetwork(t *testing.T) {
	out, err := exec.Command(filepath.Join(binDir, "hearth"), "bench", "network", "-n", "3", "--base", testBase).CombinedOutput()
	if err != nil {
		t.Fatalf("hearth bench network: %v\n%s", err, out)
	}
	if !regexp.MustCompile(`the used function's 6 sandboxes: [0-9]+ from spares, the rest forked on demand; under the filter: 0\n`).Match(out) {
		t.Errorf("the used function's sandboxes were not all free of the filter:\n%s", out)
	}
	if !regexp.MustCompile(`the warm function's calls took paths fork( (warm|fork)){11}; sandboxes retired for their filter: [0-9]+\n`).Match(out) {
		t.Errorf("no account of the warm function's calls:\n%s", out)
	}
	m := regexp.MustCompile(`(?m)^2000 sockets, under the filter +3 +([0-9.]+) `).FindSubmatch(out)
	if m == nil {
		t.Fatalf("no 2000-socket filtered row:\n%s", out)
	}
	if p50, _ := strconv.ParseFloat(string(m[1]), 64); p50 < 400 {
		t.Errorf("2000 sockets under the filter: p50 %.2f us each, want the bound's 450 or more:\n%s", p50, out)
	}
}
