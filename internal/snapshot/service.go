package snapshot

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// ServiceConfig configures a Service: everything a worker needs for
// snapshots in one place.
type ServiceConfig struct {
	// DataDir holds the cache, in DataDir/snapshots; required.
	DataDir string
	// Base is the base image dir, BaseID its id (internal/image.ID);
	// Base is required.
	Base, BaseID string
	// SandboxDir is where restored sandboxes live (the worker's
	// sandboxes dir); required.
	SandboxDir string
	// CRIURoot is the private CRIU root (default criu.DefaultRoot).
	CRIURoot string
	// MaxBytes bounds the local cache (default 4 GiB).
	MaxBytes int64
	// Remote is the optional shared store.
	Remote Remote
	// Threshold is the init time above which a function is worth a
	// snapshot (default 100 ms).
	Threshold time.Duration
}

// Service bundles the engine, the local cache and the remote store with
// the policy around them: which functions to snapshot, one creation per
// key at a time, upload after creation, restore-versus-fork choice from
// measured restore times, and Prometheus metrics. It is safe for
// concurrent use; the caller must Close it.
type Service struct {
	eng       *Engine
	cache     *Cache
	threshold time.Duration
	remote    bool

	mu       sync.Mutex
	creating map[string]bool         // guarded by mu
	restore  map[string]*restoreTime // per key (Restored), guarded by mu
	now      func() time.Time        // time.Now; tests set it
	// probeDump and probeRestore are what the probe's dump and restore
	// of a tiny process took (0 if unknown), and quickDump the quickest
	// dump of a function so far: before any function has been restored,
	// a key expects a restore to take quickDump scaled by the probe's
	// restore over its dump (a dump and a restore of one image cost
	// alike, by the same host's page and ptrace costs), or the probe's
	// restore before any dump. Guarded by mu.
	probeDump, probeRestore, quickDump time.Duration

	dumps, restores, uploads, downloads prometheus.Histogram
	failures                            *prometheus.CounterVec
	stats                               *statsCollector
}

// OpenService probes for CRIU and opens the engine and the cache. When
// snapshots are unavailable it returns an error wrapping ErrDisabled with
// the reason; the worker then runs without them.
func OpenService(ctx context.Context, cfg ServiceConfig) (*Service, error) {
	if cfg.DataDir == "" || cfg.Base == "" || cfg.SandboxDir == "" {
		return nil, fmt.Errorf("snapshot service: DataDir, Base and SandboxDir are required: %w", ErrInvalid)
	}
	a := Probe(ctx, cfg.CRIURoot)
	if !a.Available {
		return nil, fmt.Errorf("%s: %w", a.Reason, ErrDisabled)
	}
	eng, err := NewEngine(ctx, EngineConfig{CRIU: a.CRIU, Base: cfg.Base, BaseID: cfg.BaseID, Dir: cfg.SandboxDir})
	if err != nil {
		return nil, err
	}
	cache, err := OpenCache(CacheConfig{Dir: filepath.Join(cfg.DataDir, "snapshots"), MaxBytes: cfg.MaxBytes, Remote: cfg.Remote})
	if err != nil {
		eng.Close()
		return nil, err
	}
	if cfg.Threshold <= 0 {
		cfg.Threshold = 100 * time.Millisecond
	}
	buckets := prometheus.ExponentialBuckets(0.001, 2, 14) // 1 ms .. 8 s
	h := func(name, help string) prometheus.Histogram {
		return prometheus.NewHistogram(prometheus.HistogramOpts{Name: name, Help: help, Buckets: buckets})
	}
	s := &Service{
		eng: eng, cache: cache, threshold: cfg.Threshold, remote: cfg.Remote != nil,
		creating: map[string]bool{}, restore: map[string]*restoreTime{}, now: time.Now,
		dumps:     h("hearth_snapshot_dump_seconds", "Time to checkpoint a sandbox, seal and store the snapshot locally."),
		restores:  h("hearth_snapshot_restore_seconds", "Time to restore a snapshot into a fresh sandbox (CRIU)."),
		uploads:   h("hearth_snapshot_upload_seconds", "Time to upload a snapshot to the remote store."),
		downloads: h("hearth_snapshot_download_seconds", "Time to fetch a snapshot from the remote store on a local miss."),
		failures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "hearth_snapshot_failures_total", Help: "Failed snapshot operations, by operation.",
		}, []string{"op"}),
	}
	s.stats = newStatsCollector(cache)
	s.probeDump, s.probeRestore = a.Report.SelfTest.Dump, a.Report.SelfTest.Restore
	return s, nil
}

// Cache returns the local cache.
func (s *Service) Cache() *Cache { return s.cache }

// Engine returns the engine.
func (s *Service) Engine() *Engine { return s.eng }

// Close stops the engine's criu runner. Restored sandboxes keep running.
func (s *Service) Close() error { return s.eng.Close() }

// Worth reports whether a function whose init took initTime should be
// snapshotted: always when its spec says so, else above the threshold.
func (s *Service) Worth(initTime time.Duration, always bool) bool {
	return always || initTime >= s.threshold
}

// Create checkpoints the sandbox spec describes into the cache and, with
// a remote store, uploads it. Only one creation per key runs at a time;
// others get ErrBusy. The local snapshot stays usable even if the upload
// fails (the error says so).
func (s *Service) Create(ctx context.Context, spec DumpSpec) (*Descriptor, error) {
	s.mu.Lock()
	if s.creating[spec.Key] {
		s.mu.Unlock()
		return nil, fmt.Errorf("snapshot %s: %w", spec.Key, ErrBusy)
	}
	s.creating[spec.Key] = true
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.creating, spec.Key)
		s.mu.Unlock()
	}()
	t0 := time.Now()
	d, err := s.cache.Create(ctx, spec.Key, func(dir string) (*Descriptor, error) {
		return s.eng.Dump(ctx, spec, dir)
	})
	if err != nil {
		s.failures.WithLabelValues("dump").Inc()
		return nil, err
	}
	took := time.Since(t0)
	s.dumps.Observe(took.Seconds())
	s.mu.Lock()
	if s.quickDump == 0 || took < s.quickDump {
		s.quickDump = took
	}
	s.mu.Unlock()
	if !s.remote {
		return d, nil
	}
	t0 = time.Now()
	if err := s.cache.Push(ctx, spec.Key); err != nil {
		s.failures.WithLabelValues("upload").Inc()
		return d, err
	}
	s.uploads.Observe(time.Since(t0).Seconds())
	return d, nil
}

// Restore restores snapshot key, from the local cache or the remote
// store, into a fresh sandbox. Any error means: fall back to a fork or a
// cold start. The snapshot is pinned only while CRIU reads it.
func (s *Service) Restore(ctx context.Context, key string, spec RestoreSpec) (*Restored, error) {
	t0 := time.Now()
	h, err := s.cache.Acquire(ctx, key)
	if err != nil {
		if !errors.Is(err, ErrNotFound) {
			s.failures.WithLabelValues("acquire").Inc()
		}
		return nil, err
	}
	defer h.Release()
	var dl time.Duration
	if h.Remote {
		dl = time.Since(t0)
		s.downloads.Observe(dl.Seconds())
	}
	t1 := time.Now()
	sb, err := s.eng.Restore(ctx, h.Dir(), h.Descriptor(), spec)
	if err != nil {
		s.failures.WithLabelValues("restore").Inc()
		return nil, err
	}
	s.restores.Observe(time.Since(t1).Seconds())
	sb.Download = dl
	return sb, nil
}

// restoreTime is what a key's restore starts took: an EWMA, trusted
// for ttl after the last one (at).
type restoreTime struct {
	took time.Duration
	at   time.Time
	ttl  time.Duration
	// lostTo is the alternative that Prefer last found quicker than
	// took, while took was fresh (0: it last found none).
	lostTo time.Duration
}

// A key's restore time is trusted for restoreTTL after its last restore.
// On a host where restores lose to forks no start restores, so nothing
// would ever measure again: one measured in a burst, or a host whose load
// changed, would keep the function off snapshots for good. Expired, the
// key asks the host's quickest fresh restore of any key and, without one,
// restores to measure again. A retry that loses again doubles the time
// its figure is trusted, up to restoreTTLMax: a host whose restores keep
// losing pays one slow restore per key per (growing) ttl, and only while
// no fresh restore of another key says no.
const (
	restoreTTL    = 10 * time.Minute
	restoreTTLMax = 2 * time.Hour
)

// fresh reports whether r is still trusted at now.
func (r *restoreTime) fresh(now time.Time) bool { return now.Sub(r.at) < r.ttl }

// Restored records that a start restored from key took took, from the
// start's beginning to its runtime's ready, as a fresh start is timed;
// Prefer weighs the two.
func (s *Service) Restored(key string, took time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	r, ok := s.restore[key]
	switch {
	case !ok:
		s.restore[key] = &restoreTime{took: took, at: now, ttl: restoreTTL}
	case !r.fresh(now):
		// A retry after expiry: the old figure is out of date. Trusted
		// twice as long if it loses again to what the old one lost to.
		ttl := restoreTTL
		if r.lostTo > 0 && took >= r.lostTo {
			ttl = min(2*r.ttl, restoreTTLMax)
		}
		*r = restoreTime{took: took, at: now, ttl: ttl}
	default:
		r.took, r.at = (3*r.took+took)/4, now
	}
}

// Forget drops what Restored measured of key, whose function revision is
// gone.
func (s *Service) Forget(key string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.restore, key)
}

// Prefer reports whether restoring key should beat the alternative start
// (fork or cold start plus the function's init), from the restore starts
// measured so far (Restored): key's own while fresh (see restoreTTL), else
// the host's quickest fresh function restore; without one, yes if key's
// own expired (to measure again), else an estimate from the quickest dump
// or the probe's restore (see quickDump). A host where CRIU restores
// slowly (a second and more for a function, where a fork start takes tens
// of ms) then neither restores nor snapshots a function that forks faster
// than any function restores; each first restore had cost a start, and
// each dump a cold start and a CRIU run. The quickest, not an average, so
// that heavy functions' slow restores do not keep a light one from ever
// being tried. always (the function asks for snapshots) counts key's own
// restores only, so its first is tried. Without a measurement it says
// yes, to get one.
func (s *Service) Prefer(key string, alternative time.Duration, always bool) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	r, had := s.restore[key]
	if had && r.fresh(now) {
		r.lostTo = 0
		if r.took >= alternative {
			r.lostTo = alternative
		}
		return r.took < alternative
	}
	if always {
		return true
	}
	if t, ok := s.freshestLocked(now); ok {
		return t < alternative
	}
	if had {
		return true
	}
	t, ok := s.estimateLocked()
	return !ok || t < alternative
}

// freshestLocked is the host's quickest function restore still trusted
// at now, if any.
func (s *Service) freshestLocked(now time.Time) (time.Duration, bool) {
	var q time.Duration
	for _, r := range s.restore {
		if r.fresh(now) && (q == 0 || r.took < q) {
			q = r.took
		}
	}
	return q, q > 0
}

// estimateLocked is a restore time expected before any function restore
// is trusted: the quickest dump scaled by the probe's restore over its
// dump (the probe's restore at least; see quickDump).
func (s *Service) estimateLocked() (time.Duration, bool) {
	q := s.probeRestore
	if s.quickDump > 0 && s.probeDump > 0 && s.probeRestore > 0 {
		q = max(q, time.Duration(float64(s.quickDump)*float64(s.probeRestore)/float64(s.probeDump)))
	}
	return q, q > 0
}

// Collector returns the service's Prometheus metrics: dump, restore,
// upload and download durations, failures, and the cache's hits, misses,
// evictions and bytes.
func (s *Service) Collector() prometheus.Collector {
	return collectors{s.dumps, s.restores, s.uploads, s.downloads, s.failures, s.stats}
}

type collectors []prometheus.Collector

func (c collectors) Describe(ch chan<- *prometheus.Desc) {
	for _, x := range c {
		x.Describe(ch)
	}
}

func (c collectors) Collect(ch chan<- prometheus.Metric) {
	for _, x := range c {
		x.Collect(ch)
	}
}

// statsCollector reports Cache.Stats and usage at scrape time.
type statsCollector struct {
	c                                   *Cache
	hits, misses, evictions, corrupt    *prometheus.Desc
	downloaded, uploaded, used, maximum *prometheus.Desc
}

func newStatsCollector(c *Cache) *statsCollector {
	d := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc(name, help, labels, nil)
	}
	return &statsCollector{c: c,
		hits:       d("hearth_snapshot_hits_total", "Snapshot acquires served, by where from.", "where"),
		misses:     d("hearth_snapshot_misses_total", "Snapshot acquires that found nothing, by where.", "where"),
		evictions:  d("hearth_snapshot_evictions_total", "Snapshots evicted from the local cache."),
		corrupt:    d("hearth_snapshot_corrupt_total", "Local snapshots deleted after a failed checksum."),
		downloaded: d("hearth_snapshot_downloaded_bytes_total", "Bytes fetched from the remote store."),
		uploaded:   d("hearth_snapshot_uploaded_bytes_total", "Bytes sent to the remote store."),
		used:       d("hearth_snapshot_cache_bytes", "Disk space the local snapshots use."),
		maximum:    d("hearth_snapshot_cache_limit_bytes", "Bound on the local snapshots' disk space."),
	}
}

func (s *statsCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{s.hits, s.misses, s.evictions, s.corrupt, s.downloaded, s.uploaded, s.used, s.maximum} {
		ch <- d
	}
}

func (s *statsCollector) Collect(ch chan<- prometheus.Metric) {
	st := s.c.Stats()
	used, max := s.c.Usage()
	c := func(d *prometheus.Desc, v int64, l ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), l...)
	}
	c(s.hits, st.Hits, "local")
	c(s.hits, st.RemoteHits, "remote")
	c(s.misses, st.Misses, "local")
	c(s.misses, st.RemoteMisses, "remote")
	c(s.evictions, st.Evictions)
	c(s.corrupt, st.Corrupt)
	c(s.downloaded, st.DownloadedBytes)
	c(s.uploaded, st.UploadedBytes)
	ch <- prometheus.MustNewConstMetric(s.used, prometheus.GaugeValue, float64(used))
	ch <- prometheus.MustNewConstMetric(s.maximum, prometheus.GaugeValue, float64(max))
}
