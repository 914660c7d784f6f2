package worker

import "github.com/prometheus/client_golang/prometheus"

// Metrics are the worker's Prometheus collectors, on their own registry.
type Metrics struct {
	Registry    *prometheus.Registry
	invocations *prometheus.CounterVec
	latency     *prometheus.HistogramVec
	coldStarts  *prometheus.HistogramVec
	sandboxes   prometheus.Gauge
	evictions   prometheus.Counter

	forkFallbacks prometheus.Counter
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
	m.Registry.MustRegister(m.forkFallbacks, m.invocations, m.latency, m.coldStarts, m.sandboxes, m.evictions,
		prometheus.NewGoCollector(), prometheus.NewProcessCollector(prometheus.ProcessCollectorOpts{}))
	return m
}
