package worker

import (
	"strings"

	"github.com/prometheus/client_golang/prometheus"
)

// zygoteCollector reports the zygote tree at scrape time, so the figures
// are the same as /v1/zygotes.
type zygoteCollector struct {
	w                             *Worker
	replicas, hits, forks, memory *prometheus.Desc
	spares, deadRoots, failures   *prometheus.Desc
}

func newZygoteCollector(w *Worker) *zygoteCollector {
	l := []string{"node"}
	return &zygoteCollector{
		w:        w,
		replicas: prometheus.NewDesc("hearth_zygote_replicas", "Zygote processes of a tree node.", l, nil),
		hits:     prometheus.NewDesc("hearth_zygote_hits_total", "Invocations a tree node was chosen for.", l, nil),
		forks:    prometheus.NewDesc("hearth_zygote_forks_total", "Children forked by a tree node's live zygotes.", l, nil),
		memory:   prometheus.NewDesc("hearth_zygote_memory_bytes", "Memory charged to a tree node's zygotes, shared pages of their children included.", l, nil),
		spares:   prometheus.NewDesc("hearth_zygote_spares", "Children of a tree node forked ahead of need, waiting for a function.", l, nil),
		failures: prometheus.NewDesc("hearth_zygote_failed_builds",
			"Failed builds of a tree node left without a zygote (zygotes dead young included), while it waits to try again; 0 otherwise.", l, nil),
		deadRoots: prometheus.NewDesc("hearth_zygote_dead_root_sandboxes",
			"Sandboxes of root zygotes that died, kept while functions and spares forked from them run.", nil, nil),
	}
}

func (c *zygoteCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.replicas
	ch <- c.hits
	ch <- c.forks
	ch <- c.memory
	ch <- c.spares
	ch <- c.failures
	ch <- c.deadRoots
}

func (c *zygoteCollector) Collect(ch chan<- prometheus.Metric) {
	for _, n := range c.w.Zygotes() {
		node := strings.Join(n.Packages, ",")
		if node == "" {
			node = "root"
		}
		ch <- prometheus.MustNewConstMetric(c.replicas, prometheus.GaugeValue, float64(n.Replicas), node)
		ch <- prometheus.MustNewConstMetric(c.hits, prometheus.CounterValue, float64(n.Hits), node)
		ch <- prometheus.MustNewConstMetric(c.forks, prometheus.CounterValue, float64(n.Forks), node)
		ch <- prometheus.MustNewConstMetric(c.memory, prometheus.GaugeValue, float64(n.Memory), node)
		ch <- prometheus.MustNewConstMetric(c.spares, prometheus.GaugeValue, float64(n.Spares), node)
		ch <- prometheus.MustNewConstMetric(c.failures, prometheus.GaugeValue, float64(n.Failures), node)
	}
	if c.w.zyg != nil {
		ch <- prometheus.MustNewConstMetric(c.deadRoots, prometheus.GaugeValue, float64(c.w.zyg.DeadRoots()))
	}
}
