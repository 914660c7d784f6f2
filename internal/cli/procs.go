package cli

import (
	"fmt"
	"log/slog"
	"os"
	"runtime"
	"strconv"
)

// setProcs sets how many threads run the worker's Go code at once
// (GOMAXPROCS) and returns how many CPUs the process may use, Go's own
// default (the CPUs of its affinity mask and cgroup quota). A worker's Go
// code mostly waits in system calls; with as many Ps as CPUs, the runtime
// keeps waking spare threads to look for work and hands Ps between
// threads around each call, which costs CPU the sandboxes need and puts
// more threads in the run queue before each start's next step. On a
// 2-CPU host one P cut the worker's CPU per fork start by about a fifth
// and the fork start's p50 by about a sixth; bursts of back-to-back
// starts on a loaded host got slower (README, "The worker's own
// threads").
//
// n 0 means half the CPUs, at least 1, unless $GOMAXPROCS holds a
// number above 0, which then stands; a procs set wins over it.
func setProcs(n int, log *slog.Logger) (cpus int, err error) {
	if n < 0 {
		return 0, fmt.Errorf("procs %d must not be negative", n)
	}
	env := runtime.GOMAXPROCS(0)
	// The runtime's default, whatever $GOMAXPROCS says: the CPUs.
	runtime.SetDefaultGOMAXPROCS()
	cpus = runtime.GOMAXPROCS(0)
	from := "procs"
	if n == 0 {
		if v, err := strconv.Atoi(os.Getenv("GOMAXPROCS")); err == nil && v > 0 {
			n, from = env, "$GOMAXPROCS"
		} else {
			n, from = defaultProcs(cpus), "default"
		}
	}
	runtime.GOMAXPROCS(n)
	log.Info("worker threads", "procs", n, "from", from, "cpus", cpus)
	return cpus, nil
}

// defaultProcs is half of cpus, at least 1.
func defaultProcs(cpus int) int { return max(1, cpus/2) }

// maxStarts is max_starts, by default 2 per CPU: the worker's default
// would count its Ps, which setProcs lowered.
func maxStarts(n, cpus int) int {
	if n == 0 {
		return 2 * cpus
	}
	return n
}
