package bench

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/hearth-run/hearth/internal/fsutil"
)

// backgroundNice is the nice value of the background load: busy CPUs, as
// on a production host, without starving what is measured outright.
const backgroundNice = 10

// Load is n CPU-bound processes (shell busy loops) at nice 10, started by a
// benchmark to measure under CPU contention.
type Load struct {
	cmds []*exec.Cmd
}

// StartLoad starts n busy loops. The caller must Stop them; they also die
// with the benchmark (parent-death signal) if it is killed.
//
// With own, the loops run in a session of their own whose autogroup is
// at nice 10 as well. With the kernel's autogroup on, a nice value only
// orders the processes of one session: the loops' session as a whole
// competes with the sandboxes' cgroup at a default group's weight, and
// the loops take their full share from a waking sandbox however niced.
// Without own the load is that: work at equal weight, niced in name.
// With own it is niced as on a host without autogroup. Where the kernel
// has no autogroup, both are the same.
func StartLoad(n int, own bool) (_ *Load, err error) {
	l := &Load{}
	defer func() {
		if err != nil {
			l.Stop()
		}
	}()
	for range n {
		cmd := exec.Command("/bin/sh", "-c", "while :; do :; done")
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setsid: own}
		if err := cmd.Start(); err != nil {
			return nil, fmt.Errorf("background load: %w", err)
		}
		l.cmds = append(l.cmds, cmd)
		if err := unix.Setpriority(unix.PRIO_PROCESS, cmd.Process.Pid, backgroundNice); err != nil {
			return nil, fmt.Errorf("background load: nice: %w", err)
		}
		if own {
			if err := niceAutogroup(cmd.Process.Pid); err != nil {
				return nil, err
			}
		}
	}
	return l, nil
}

// niceAutogroup sets the nice value of pid's autogroup (its session's,
// once it has called setsid) to backgroundNice; nothing where the kernel
// has no autogroup or it is off.
func niceAutogroup(pid int) error {
	b, err := os.ReadFile("/proc/sys/kernel/sched_autogroup_enabled")
	if err != nil || strings.TrimSpace(string(b)) != "1" {
		return nil
	}
	f := fmt.Sprintf("/proc/%d/autogroup", pid)
	if err := os.WriteFile(f, []byte(strconv.Itoa(backgroundNice)), 0); err != nil {
		return fmt.Errorf("background load: autogroup nice: %w", err)
	}
	return nil
}

// Stop kills and reaps the loops.
func (l *Load) Stop() {
	for _, c := range l.cmds {
		c.Process.Kill()
		c.Wait()
	}
	l.cmds = nil
}

// CPUKinds name who spent CPU on a worker's starts; see Worker.CPU.
var CPUKinds = []string{"worker", "reaped", "hearth-init", "zygote", "function", "exited"}

// CPUUse is CPU time by kind.
type CPUUse map[string]time.Duration

// Sub returns u - v by kind, over the kinds of either: a kind gone
// since v (the last zygote exited) counts its loss.
func (u CPUUse) Sub(v CPUUse) CPUUse {
	d := CPUUse{}
	for k, x := range u {
		d[k] = x - v[k]
	}
	for k, x := range v {
		if _, ok := u[k]; !ok {
			d[k] = -x
		}
	}
	return d
}

// Total sums the kinds but "kernel": the CPU of the worker and the
// processes it started.
func (u CPUUse) Total() time.Duration {
	var t time.Duration
	for k, x := range u {
		if k != "kernel" {
			t += x
		}
	}
	return t
}

// cpuacctRoot is the cgroup v1 cpuacct hierarchy. Each process stays in
// the cpuacct group it was born in unless moved, so one group made for
// the worker counts everything it starts, alive or gone, but for the
// sandboxes it moves into its parent's groups (Worker.sandboxes).
const cpuacctRoot = "/sys/fs/cgroup/cpuacct"

// acctSeq numbers the workers' cpuacct groups within a benchmark.
var acctSeq atomic.Int64

// CPU reads the CPU time w and the processes it started have used so far.
// The total comes from w's cpuacct groups, and is split among the processes
// alive now by what they are: "worker" is the hearth up process itself
// (all its threads), "reaped" the children it waited for (hearth-init of
// gone sandboxes, tools), "hearth-init", "zygote" (in a zygote's cgroup)
// and "function" (a sandbox's Python runtime, forked or not, spares
// included) those alive, and "exited" the rest: what processes gone and
// not waited for by a live one spent, mostly torn-down sandboxes. Between
// two readings, a process that dies moves what it had spent from its kind
// to "exited"; the total is exact. Without cpuacct (w.acct empty) there
// is no "exited".
//
// "kernel" is what the host's kernel threads spent (kernelUse): the work
// the kernel defers to them, which no process is charged for, such as
// freeing a dead sandbox's network namespace, the conntrack sweep that a
// masquerade rule makes the kernel run for every host link that goes
// down, and a loop device's I/O. It is host-wide, so it counts whatever
// else the kernel does meanwhile too (little, on a host doing nothing
// else).
func (w *Worker) CPU() (CPUUse, error) {
	u := CPUUse{}
	all, err := allProcs()
	if err != nil {
		return nil, err
	}
	procs, err := descendants(w.cmd.Process.Pid, all)
	if err != nil {
		return nil, err
	}
	var split time.Duration
	for _, p := range procs {
		kind := "function"
		switch {
		case p.pid == w.cmd.Process.Pid:
			kind = "worker"
			u["reaped"] += p.children
			split += p.children
		case p.comm == "hearth-init":
			kind = "hearth-init"
			u[kind] += p.children
			split += p.children
		case p.zygote:
			kind = "zygote"
		}
		u[kind] += p.self
		split += p.self
	}
	if w.acct != "" {
		total, err := cpuacctUsage(w.acct)
		if err != nil {
			return nil, err
		}
		// A worker that uses cpuacct moves its sandboxes and zygotes
		// out of w.acct into groups under its parent, whose count keeps
		// what removed groups used; an older build leaves them in w.acct.
		for _, d := range w.sandboxes {
			sb, err := cpuacctUsage(d)
			if errors.Is(err, os.ErrNotExist) && !w.made[d] {
				continue // not made (yet), or an older build's worker
			}
			if err != nil {
				return nil, err
			}
			w.made[d] = true
			total += sb
		}
		u["exited"] = total - split
	}
	if k, ok := w.kernel.read(all); ok {
		u["kernel"] = k
	}
	return u, nil
}

// kernelUse counts the CPU time of the host's kernel threads (PF_KTHREAD)
// since its first reading. Kernel threads come
// and go (an idle kworker exits after minutes), so it adds up each one's
// growth between readings rather than summing those alive: a sum would
// lose all a thread that exited had ever used. A thread born since the
// last reading counts whole; one that exited loses only its last
// interval's, so the count can undercount, never go back.
type kernelUse struct {
	seen  map[kthread]time.Duration // CPU used so far, at the last reading
	total time.Duration
}

// kthread names a kernel thread across pid reuse.
type kthread struct {
	pid   int
	start int64 // starttime, in ticks since boot
}

// read returns the CPU the kernel threads among all used since the first
// read; ok is false where none are seen (a pid namespace of its own shows
// none).
func (k *kernelUse) read(all []proc) (_ time.Duration, ok bool) {
	now := kernelThreads(all)
	if len(now) == 0 {
		return 0, false
	}
	if k.seen != nil {
		for id, t := range now {
			k.total += t - k.seen[id]
		}
	}
	k.seen = now
	return k.total, true
}

// kernelThreads returns the CPU time each kernel thread among all has
// used, from its schedstat (ns) or, without it, its stat (ticks).
func kernelThreads(all []proc) map[kthread]time.Duration {
	out := map[kthread]time.Duration{}
	for _, p := range all {
		if !p.kthread {
			continue
		}
		t := p.self
		if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/schedstat", p.pid)); err == nil {
			if f := strings.Fields(string(b)); len(f) > 0 {
				if ns, err := strconv.ParseInt(f[0], 10, 64); err == nil {
					t = time.Duration(ns)
				}
			}
		}
		out[kthread{p.pid, p.start}] = t
	}
	return out
}

// pfKthread is the flags field's bit of a kernel thread (linux/sched.h).
const pfKthread = 0x00200000

// proc is one process's CPU time.
type proc struct {
	pid, ppid int
	comm      string
	zygote    bool
	self      time.Duration // utime + stime, all threads
	children  time.Duration // cutime + cstime: the children it waited for
	start     int64         // starttime: ticks after boot it started at
	kthread   bool          // a kernel thread (PF_KTHREAD)
}

// allProcs reads every process in /proc, once for both descendants and
// kernelThreads.
func allProcs() ([]proc, error) {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil, err
	}
	var all []proc
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if p, err := readProc(pid); err == nil { // else gone meanwhile
			all = append(all, p)
		}
	}
	return all, nil
}

// descendants returns root and the processes under it, among all.
func descendants(root int, all []proc) ([]proc, error) {
	kids := map[int][]proc{}
	var top *proc
	for i, p := range all {
		if p.pid == root {
			top = &all[i]
		}
		kids[p.ppid] = append(kids[p.ppid], p)
	}
	if top == nil {
		return nil, fmt.Errorf("worker %d: %w", root, os.ErrNotExist)
	}
	out := []proc{*top}
	for i := 0; i < len(out); i++ {
		out = append(out, kids[out[i].pid]...)
	}
	return out, nil
}

// readProc reads /proc/PID/stat, and the command line of a python3.
func readProc(pid int) (proc, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return proc{}, err
	}
	// The command, which may hold spaces, is in parentheses.
	s := string(b)
	i, j := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
	if i < 0 || j < i {
		return proc{}, fmt.Errorf("/proc/%d/stat: no command", pid)
	}
	p := proc{pid: pid, comm: s[i+1 : j]}
	f := strings.Fields(s[j+1:])
	// f[0] is field 3 (state): ppid is field 4, utime, stime, cutime and
	// cstime fields 14 to 17.
	if len(f) < 20 {
		return proc{}, fmt.Errorf("/proc/%d/stat: %d fields", pid, len(f))
	}
	var v [5]int64
	for k, x := range []string{f[1], f[11], f[12], f[13], f[14]} {
		if v[k], err = strconv.ParseInt(x, 10, 64); err != nil {
			return proc{}, fmt.Errorf("/proc/%d/stat: %w", pid, err)
		}
	}
	// USER_HZ is 100 on every Linux ABI Go supports.
	tick := 10 * time.Millisecond
	p.ppid = int(v[0])
	p.self = time.Duration(v[1]+v[2]) * tick
	p.children = time.Duration(v[3]+v[4]) * tick
	if p.start, err = strconv.ParseInt(f[19], 10, 64); err != nil { // field 22
		return proc{}, fmt.Errorf("/proc/%d/stat: %w", pid, err)
	}
	flags, err := strconv.ParseUint(f[6], 10, 32) // field 9
	if err != nil {
		return proc{}, fmt.Errorf("/proc/%d/stat: %w", pid, err)
	}
	p.kthread = flags&pfKthread != 0
	if strings.HasPrefix(p.comm, "python") {
		p.zygote = inZygoteGroup(pid)
	}
	return p, nil
}

// inZygoteGroup says whether pid is in a zygote's cgroup: a forked child
// runs the zygote's program too, but the worker moves it into its
// sandbox's.
func inZygoteGroup(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
	if err != nil {
		return false
	}
	for _, l := range strings.Split(string(b), "\n") {
		// hierarchy-ID:controllers:path; cgroup v2's line has none.
		f := strings.SplitN(l, ":", 3)
		if len(f) == 3 && f[1] != "" && strings.HasPrefix(filepath.Base(f[2]), "zygote") {
			return true
		}
	}
	return false
}

// newAcct makes a cpuacct group for a worker, or returns "" where there
// is no cgroup v1 cpuacct hierarchy. It first removes the groups of
// benchmarks that were killed outright (see sweepAcct).
func newAcct(name string) string {
	if _, err := os.Stat(filepath.Join(cpuacctRoot, "cpuacct.usage")); err != nil {
		return ""
	}
	sweepAcct()
	dir := filepath.Join(cpuacctRoot, name)
	if err := os.Mkdir(dir, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
		return ""
	}
	return dir
}

// sweepAcct removes the empty cpuacct groups of benchmarks no longer
// running (hearth-bench-PID-N-acct, see fsutil.Orphaned): one killed outright
// could not remove its own. A group that still holds a process stays.
func sweepAcct() {
	dirs, _ := filepath.Glob(filepath.Join(cpuacctRoot, "hearth-bench-*-acct"))
	for _, d := range dirs {
		if fsutil.Orphaned(d, "hearth-bench-", "-") {
			os.Remove(d)
		}
	}
}

// removeAcct removes a worker's cpuacct group once its last process is
// gone (a dying sandbox may take a moment).
func removeAcct(dir string) {
	if dir == "" {
		return
	}
	for range 100 {
		if err := os.Remove(dir); err == nil || errors.Is(err, os.ErrNotExist) {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// cpuacctUsage reads a cgroup v1 cpuacct.usage (ns).
func cpuacctUsage(dir string) (time.Duration, error) {
	b, err := os.ReadFile(filepath.Join(dir, "cpuacct.usage"))
	if err != nil {
		return 0, err
	}
	v, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%s: %w", dir, err)
	}
	return time.Duration(v), nil
}

// CPUPerStart is the CPU a worker spent per start over a run of starts.
type CPUPerStart struct {
	Name   string
	Starts int
	Used   CPUUse
}

// cpuTable prints CPU per start by kind, in ms.
func cpuTable(w io.Writer, rows []CPUPerStart) {
	fmt.Fprintf(w, "%-22s %6s", "CPU ms per start", "starts")
	for _, k := range CPUKinds {
		fmt.Fprintf(w, " %12s", k)
	}
	fmt.Fprintf(w, " %8s %8s %8s\n", "total", "kernel", "+kernel")
	for _, r := range rows {
		per := func(d time.Duration) float64 { return float64(d) / 1e6 / float64(r.Starts) }
		fmt.Fprintf(w, "%-22s %6d", r.Name, r.Starts)
		for _, k := range CPUKinds {
			if x, ok := r.Used[k]; ok {
				fmt.Fprintf(w, " %12.2f", per(x))
			} else {
				fmt.Fprintf(w, " %12s", "-")
			}
		}
		fmt.Fprintf(w, " %8.2f", per(r.Used.Total()))
		if k, ok := r.Used["kernel"]; ok {
			fmt.Fprintf(w, " %8.2f %8.2f\n", per(k), per(r.Used.Total()+k))
		} else {
			fmt.Fprintf(w, " %8s %8s\n", "-", "-")
		}
	}
}
