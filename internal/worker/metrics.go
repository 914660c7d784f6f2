package worker

import (
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"golang.org/x/sys/unix"

	"github.com/hearth-run/hearth/internal/sandbox"
)

// Metrics are the worker's Prometheus collectors, on their own registry.
type Metrics struct {
	Registry    *prometheus.Registry
	invocations *prometheus.CounterVec
	latency     *prometheus.HistogramVec
	coldStarts  *prometheus.HistogramVec
	sandboxes   prometheus.Gauge
	evictions   prometheus.Counter

	forkFallbacks prometheus.Counter
	spareStarts   prometheus.Counter
	// homes counts sandboxes' homes (homes.go) kept, made into spares,
	// taken by starts, and closed unused.
	homes         *prometheus.CounterVec
	deadSandboxes prometheus.Counter
	growth        prometheus.Counter
	// forkQueued is how long on-demand forks waited for their zygote.
	forkQueued prometheus.Histogram
	// startWait and startCPU sum, per fork start kind, how long the
	// sandbox's process waited on a run queue and ran during its start:
	// where a start spends its time on a busy host.
	startWait, startCPU *prometheus.CounterVec
	// turnWait is how long starts waited for their turn (max_starts);
	// turnOverruns counts turns that ran out (startHold) before their
	// start had loaded its handler: slow or hostile imports.
	turnWait     prometheus.Histogram
	turnOverruns prometheus.Counter
	// lazyNet counts networks attached at a sandbox's first socket, by
	// result; lazyNetSeconds is how long that socket waited.
	lazyNet        *prometheus.CounterVec
	lazyNetSeconds prometheus.Histogram
	// lazyRetired counts warm sandboxes retired for their filter's
	// round trips (lazyNet.retire).
	lazyRetired prometheus.Counter
}

func newMetrics() *Metrics {
	buckets := prometheus.ExponentialBuckets(0.0001, 2, 18) // 0.1 ms .. 13 s
	m := &Metrics{
		Registry: prometheus.NewRegistry(),
		invocations: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "hearth_invocations_total", Help: "Invocations by start path and outcome.",
		}, []string{"path", "status"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "hearth_invoke_duration_seconds", Help: "End-to-end invoke latency inside the worker, by start path.",
			Buckets: buckets,
		}, []string{"path"}),
		coldStarts: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "hearth_start_duration_seconds", Help: "Time to a loaded handler, by start path.",
			Buckets: buckets,
		}, []string{"path"}),
		sandboxes: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "hearth_sandboxes", Help: "Live sandboxes.",
		}),
		evictions: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "hearth_warm_evictions_total", Help: "Paused sandboxes evicted from the handler cache.",
		}),
	}
	m.forkFallbacks = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "hearth_fork_fallbacks_total", Help: "Zygote forks that failed and fell back to a fresh start.",
	})
	m.startWait = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "hearth_start_runqueue_seconds_total",
		Help: "Time the sandbox process of fork starts waited on a CPU run queue during the start (start: spare or fork, on demand), from /proc/PID/schedstat.",
	}, []string{"start"})
	m.startCPU = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "hearth_start_sandbox_cpu_seconds_total",
		Help: "CPU time the sandbox process of fork starts ran during the start (start: spare or fork, on demand), from /proc/PID/schedstat, and at least its handler import's as its runtime measured it (schedstat lags a process that runs on).",
	}, []string{"start"})
	m.spareStarts = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "hearth_spare_starts_total", Help: "Fork starts served by a zygote child forked ahead of need (a spare).",
	})
	m.homes = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "hearth_homes_total", Help: "User and network namespaces of ended sandboxes (homes): kept for the same function's next sandbox (event kept), a spare made into one (spare), a start that took such a spare (taken), kept and closed unused (dropped), closed when its sandbox ended, not to be kept (closed: network used, function not started again or gone, too many kept).",
	}, []string{"event"})
	m.deadSandboxes = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "hearth_warm_dead_total", Help: "Cached sandboxes found dead (or failing to thaw) when taken, replaced by a new start.",
	})
	m.growth = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "hearth_warm_growth_charges_total",
		Help: "Times a sandbox in a call was charged more because it took more memory than it was charged (paused sandboxes may be evicted for it).",
	})
	m.forkQueued = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "hearth_fork_queue_seconds",
		Help:    "Time an on-demand fork's request waited for its zygote, behind other requests (forks, spares' clones).",
		Buckets: buckets,
	})
	m.turnWait = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "hearth_start_turn_wait_seconds",
		Help:    "Time a start waited for its turn (max_starts starts under way at once); a wait that timed out is not counted.",
		Buckets: buckets,
	})
	m.turnOverruns = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "hearth_start_turn_overruns_total",
		Help: "Start turns that ran out (after 1 s) before their start had loaded its handler; the start went on outside the bound.",
	})
	m.lazyNet = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "hearth_network_first_socket_total",
		Help: "Forked sandboxes of network: isolated whose network was made at their first internet or netlink socket (result: attached or failed); the others never opened one and cost no veth pair.",
	}, []string{"result"})
	m.lazyNetSeconds = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "hearth_network_first_socket_seconds",
		Help:    "Time a forked sandbox's first internet or netlink socket waited for its network to be made.",
		Buckets: buckets,
	})
	m.lazyRetired = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "hearth_network_filter_retired_total",
		Help: "Sandboxes not kept warm after a call because their network filter had sent the worker many sockets since their network was made: the function's next sandbox has its network from the start, without the filter.",
	})
	m.Registry.MustRegister(m.lazyNet, m.lazyNetSeconds, m.lazyRetired, m.turnWait, m.turnOverruns, m.forkQueued, m.growth, m.startWait, m.startCPU, m.forkFallbacks, m.spareStarts, m.homes, m.deadSandboxes, m.invocations, m.latency, m.coldStarts, m.sandboxes, m.evictions,
		// go_gc_heap_live_bytes besides the defaults (which have
		// go_sched_gomaxprocs_threads, the worker's procs): the heap the
		// last collection found live, the figure that shows a leak
		// through the garbage (bench churn reads it).
		collectors.NewGoCollector(collectors.WithGoCollectorRuntimeMetrics(
			collectors.GoRuntimeMetricsRule{Matcher: regexp.MustCompile(`^/gc/heap/live:bytes$`)})),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// poolCollector reports the warm pool per pool (partition) at scrape time,
// so the figures are the same as the pools in /v1/status.
type poolCollector struct {
	c                               *warmCache
	used, capacity, idle, sandboxes *prometheus.Desc
	hits, misses, drops, evictions  *prometheus.Desc
	expirations, prewarms           *prometheus.Desc
}

func newPoolCollector(c *warmCache) *poolCollector {
	l := []string{"pool"}
	d := func(name, help string) *prometheus.Desc { return prometheus.NewDesc(name, help, l, nil) }
	return &poolCollector{
		c:           c,
		used:        d("hearth_pool_used_bytes", "Memory charged to a warm pool: busy and paused sandboxes at their measured cgroup usage."),
		capacity:    d("hearth_pool_capacity_bytes", "Memory budget of a warm pool."),
		idle:        d("hearth_pool_idle_bytes", "Memory of a warm pool's paused sandboxes."),
		sandboxes:   d("hearth_pool_sandboxes", "Sandboxes, busy and paused, in a warm pool."),
		hits:        d("hearth_pool_hits_total", "Invocations served by a paused sandbox of a warm pool."),
		misses:      d("hearth_pool_misses_total", "Invocations that started a new sandbox in a warm pool (cold starts)."),
		drops:       d("hearth_pool_drops_total", "Invocations refused because a warm pool was full of busy sandboxes."),
		evictions:   d("hearth_pool_evictions_total", "Paused sandboxes evicted to make room in a warm pool."),
		expirations: d("hearth_pool_expirations_total", "Paused sandboxes destroyed when their keep-alive ended."),
		prewarms:    d("hearth_pool_prewarms_total", "Sandboxes started ahead of a predicted invocation."),
	}
}

func (p *poolCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{p.used, p.capacity, p.idle, p.sandboxes, p.hits, p.misses, p.drops, p.evictions, p.expirations, p.prewarms} {
		ch <- d
	}
}

func (p *poolCollector) Collect(ch chan<- prometheus.Metric) {
	g, c := prometheus.GaugeValue, prometheus.CounterValue
	for _, s := range p.c.stats() {
		ch <- prometheus.MustNewConstMetric(p.used, g, float64(s.Used), s.Name)
		ch <- prometheus.MustNewConstMetric(p.capacity, g, float64(s.Capacity), s.Name)
		ch <- prometheus.MustNewConstMetric(p.idle, g, float64(s.Idle), s.Name)
		ch <- prometheus.MustNewConstMetric(p.sandboxes, g, float64(s.Sandboxes), s.Name)
		ch <- prometheus.MustNewConstMetric(p.hits, c, float64(s.Hits), s.Name)
		ch <- prometheus.MustNewConstMetric(p.misses, c, float64(s.Misses), s.Name)
		ch <- prometheus.MustNewConstMetric(p.drops, c, float64(s.Drops), s.Name)
		ch <- prometheus.MustNewConstMetric(p.evictions, c, float64(s.Evictions), s.Name)
		ch <- prometheus.MustNewConstMetric(p.expirations, c, float64(s.Expirations), s.Name)
		ch <- prometheus.MustNewConstMetric(p.prewarms, c, float64(s.Prewarms), s.Name)
	}
}

// schedStat is a process's scheduler counters (see schedstatOf).
type schedStat struct{ cpu, wait time.Duration }

// schedstatOf reads /proc/PID/schedstat: the time pid's main thread has
// run and waited on a run queue. ok is false when the kernel keeps none
// (no CONFIG_SCHED_INFO) or the process is gone.
func schedstatOf(pid int) (s schedStat, ok bool) {
	// Twice per start: one open, read and close (os.ReadFile also stats
	// the file and offers it to the poller).
	fd, err := unix.Open("/proc/"+strconv.Itoa(pid)+"/schedstat", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return s, false
	}
	var buf [128]byte // three decimal counters
	n, err := unix.Read(fd, buf[:])
	unix.Close(fd)
	if err != nil || n <= 0 {
		return s, false
	}
	f := strings.Fields(string(buf[:n]))
	if len(f) < 2 {
		return s, false
	}
	cpu, err1 := strconv.ParseInt(f[0], 10, 64)
	wait, err2 := strconv.ParseInt(f[1], 10, 64)
	if err1 != nil || err2 != nil {
		return s, false
	}
	return schedStat{time.Duration(cpu), time.Duration(wait)}, true
}

// noteStart adds what pid ran and waited since from (zero: since it was
// born) to the start metrics of kind. The kernel adds a running task's
// time to its schedstat only at a tick (4 ms at HZ=250) or when it stops,
// and a sandbox's process runs on from its import into the first call
// sent ahead: so what it ran is at least loadCPU, the import's CPU time
// as its runtime measured it, bounded by the time since since (a handler
// can make its runtime say anything).
func (m *Metrics) noteStart(kind string, pid int, from schedStat, loadCPU time.Duration, since time.Time) {
	loadCPU = min(loadCPU, time.Since(since))
	now, ok := schedstatOf(pid)
	if !ok {
		return
	}
	// Negative if pid is another process by now (the sandbox's exited
	// and its pid was reused): a counter cannot go back, and panics.
	if now.cpu < from.cpu || now.wait < from.wait {
		return
	}
	m.startCPU.WithLabelValues(kind).Add(max(now.cpu-from.cpu, loadCPU).Seconds())
	m.startWait.WithLabelValues(kind).Add((now.wait - from.wait).Seconds())
}

// scratchCollector reports what became of the on-disk /tmp file systems.
type scratchCollector struct {
	d    *sandbox.Disks
	desc *prometheus.Desc
}

func newScratchCollector(d *sandbox.Disks) *scratchCollector {
	return &scratchCollector{d: d, desc: prometheus.NewDesc("hearth_scratch_filesystems_total",
		"On-disk /tmp file systems: made, reused (emptied after a sandbox, for another) and dropped (after a sandbox, or unused).",
		[]string{"outcome"}, nil)}
}

func (c *scratchCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

func (c *scratchCollector) Collect(ch chan<- prometheus.Metric) {
	st := c.d.Stats()
	for _, v := range []struct {
		outcome string
		n       int64
	}{{"made", st.Made}, {"reused", st.Reused}, {"dropped", st.Dropped}} {
		ch <- prometheus.MustNewConstMetric(c.desc, prometheus.CounterValue, float64(v.n), v.outcome)
	}
}
