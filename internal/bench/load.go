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
	"syscall"
	"time"

	"golang.org/x/sys/unix"
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
func StartLoad(n int) (_ *Load, err error) {
	l := &Load{}
	defer func() {
		if err != nil {
			l.Stop()
		}
	}()
	for range n {
		cmd := exec.Command("/bin/sh", "-c", "while :; do :; done")
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		if err := cmd.Start(); err != nil {
			return nil, fmt.Errorf("background load: %w", err)
		}
		l.cmds = append(l.cmds, cmd)
		if err := unix.Setpriority(unix.PRIO_PROCESS, cmd.Process.Pid, backgroundNice); err != nil {
			return nil, fmt.Errorf("background load: nice: %w", err)
		}
	}
	return l, nil
}

// Stop kills and reaps the loops.
func (l *Load) Stop() {
	for _, c := range l.cmds {
		c.Process.Kill()
		c.Wait()
	}
	l.cmds = nil
}

// CPUKind names who spent CPU on a worker's starts.
var CPUKinds = []string{"worker", "hearth-init", "zygote", "sandbox"}

// CPUUse is the CPU time a worker and what it started spent, by kind:
// "worker" is the hearth up process (all its threads; not the processes
// it reaped), "hearth-init" its init cgroup (sandboxes' inits, outside the
// sandboxes), "zygote" the zygote cgroups (what a child spends before it
// is moved into its sandbox counts there), "sandbox" all the rest of the
// worker's cgroup parent: the function children and their sandboxes'
// other processes, including cgroups removed meanwhile (cpuacct charges
// each parent as it goes).
type CPUUse map[string]time.Duration

// Sub returns u - v by kind.
func (u CPUUse) Sub(v CPUUse) CPUUse {
	d := CPUUse{}
	for k, x := range u {
		d[k] = x - v[k]
	}
	return d
}

// Total sums the kinds.
func (u CPUUse) Total() time.Duration {
	var t time.Duration
	for _, x := range u {
		t += x
	}
	return t
}

// cpuacctRoot is the cgroup v1 cpuacct hierarchy.
const cpuacctRoot = "/sys/fs/cgroup/cpuacct"

// CPU reads the CPU time w and its processes have used so far. It needs
// cgroup v1's cpuacct; without it the kinds but "worker" are absent.
func (w *Worker) CPU() (CPUUse, error) {
	u := CPUUse{}
	t, err := procCPU(w.cmd.Process.Pid)
	if err != nil {
		return nil, err
	}
	u["worker"] = t
	parent := filepath.Join(cpuacctRoot, w.cgroupParent)
	total, err := cpuacctUsage(parent)
	if errors.Is(err, os.ErrNotExist) {
		return u, nil
	}
	if err != nil {
		return nil, err
	}
	ents, err := os.ReadDir(parent)
	if err != nil {
		return nil, err
	}
	rest := total
	for _, e := range ents {
		kind := ""
		switch {
		case !e.IsDir():
			continue
		case e.Name() == "init":
			kind = "hearth-init"
		case strings.HasPrefix(e.Name(), "zygote"):
			kind = "zygote"
		default:
			continue
		}
		// Gone meanwhile: the parent's total keeps what it used.
		x, err := cpuacctUsage(filepath.Join(parent, e.Name()))
		if err != nil {
			continue
		}
		u[kind] += x
		rest -= x
	}
	u["sandbox"] = rest
	return u, nil
}

// procCPU is user plus system time of process pid (all its threads).
func procCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// Fields after the command, which may hold spaces, in parentheses.
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 {
		return 0, fmt.Errorf("/proc/%d/stat: no command", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	// f[0] is field 3 (state); utime and stime are fields 14 and 15.
	if len(f) < 13 {
		return 0, fmt.Errorf("/proc/%d/stat: %d fields", pid, len(f))
	}
	var ticks int64
	for _, s := range f[11:13] {
		v, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("/proc/%d/stat: %w", pid, err)
		}
		ticks += v
	}
	// USER_HZ is 100 on every Linux ABI Go supports.
	return time.Duration(ticks) * 10 * time.Millisecond, nil
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
		fmt.Fprintf(w, " %11s", k)
	}
	fmt.Fprintf(w, " %8s\n", "total")
	for _, r := range rows {
		fmt.Fprintf(w, "%-22s %6d", r.Name, r.Starts)
		for _, k := range CPUKinds {
			if x, ok := r.Used[k]; ok {
				fmt.Fprintf(w, " %11.2f", float64(x)/1e6/float64(r.Starts))
			} else {
				fmt.Fprintf(w, " %11s", "-")
			}
		}
		fmt.Fprintf(w, " %8.2f\n", float64(r.Used.Total())/1e6/float64(r.Starts))
	}
}
