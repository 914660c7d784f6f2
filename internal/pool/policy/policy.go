package policy

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/hearth-run/hearth/internal/pool"
)

// DefaultTTL is the ttl policy's keep-alive when Options.TTL is zero.
const DefaultTTL = 10 * time.Minute

// Options configures the policies. The zero value gives the defaults.
type Options struct {
	// TTL is the ttl policy's keep-alive; zero means DefaultTTL.
	TTL  time.Duration
	Hist HistOptions
}

// Constructor returns a fresh policy instance.
type Constructor func() pool.Policy

// Constructors returns a new map from policy name to constructor, with o
// applied. Callers may add their own entries to the returned map.
func Constructors(o Options) map[string]Constructor {
	ttl := o.TTL
	if ttl == 0 {
		ttl = DefaultTTL
	}
	h := o.Hist.withDefaults()
	return map[string]Constructor{
		"lru":  func() pool.Policy { return LRU{} },
		"gd":   func() pool.Policy { return GD{} },
		"freq": func() pool.Policy { return Freq{} },
		"ttl":  func() pool.Policy { return TTL{Keep: ttl} },
		"hist": func() pool.Policy { return NewHist(h) },
	}
}

// Names returns the built-in policy names, sorted.
func Names() []string {
	var ns []string
	for n := range Constructors(Options{}) {
		ns = append(ns, n)
	}
	slices.Sort(ns)
	return ns
}

// New returns the constructor for the named policy (case-insensitive).
func New(name string, o Options) (Constructor, error) {
	if o.TTL < 0 {
		return nil, fmt.Errorf("ttl %v must not be negative: %w", o.TTL, pool.ErrConfig)
	}
	if err := o.Hist.validate(); err != nil {
		return nil, err
	}
	c, ok := Constructors(o)[strings.ToLower(strings.TrimSpace(name))]
	if !ok {
		return nil, fmt.Errorf("%q (known: %s): %w", name, strings.Join(Names(), ", "), ErrUnknown)
	}
	return c, nil
}

// mib converts bytes to MiB for priorities; sizes are positive.
func mib(b int64) float64 { return float64(b) / (1 << 20) }

// LRU evicts the idle container that was released longest ago and never
// expires containers.
type LRU struct{}

var _ pool.Policy = LRU{}

// Arrive implements pool.Policy; LRU keeps no history.
func (LRU) Arrive(pool.Fn, time.Duration, time.Duration) {}

// Priority is the release time in seconds.
func (LRU) Priority(e pool.Entry, _ float64) float64 { return e.Now.Seconds() }

// Evicted leaves the clock alone; LRU does not use it.
func (LRU) Evicted(_, clock float64) float64 { return clock }

// KeepAlive is Forever.
func (LRU) KeepAlive(pool.Fn, time.Duration) time.Duration { return pool.Forever }

// Prewarm never prewarms.
func (LRU) Prewarm(pool.Fn, time.Duration) (time.Duration, time.Duration, bool) { return 0, 0, false }

// GD is Greedy-Dual-Size-Frequency as in FaasCache: priority = clock +
// freq × cold cost (s) / size (MiB). Evicting a container sets the clock to
// its priority, which ages every container that was not used since.
type GD struct{}

var _ pool.Policy = GD{}

// Arrive implements pool.Policy; frequency is kept by the engine.
func (GD) Arrive(pool.Fn, time.Duration, time.Duration) {}

// Priority implements pool.Policy.
func (GD) Priority(e pool.Entry, clock float64) float64 {
	return clock + float64(e.Freq)*e.ColdCost.Seconds()/mib(e.Size)
}

// Evicted advances the clock to the victim's priority.
func (GD) Evicted(prio, clock float64) float64 { return max(prio, clock) }

// KeepAlive is Forever: GD keeps containers until memory is needed.
func (GD) KeepAlive(pool.Fn, time.Duration) time.Duration { return pool.Forever }

// Prewarm never prewarms.
func (GD) Prewarm(pool.Fn, time.Duration) (time.Duration, time.Duration, bool) { return 0, 0, false }

// Freq is GD without the size term: priority = clock + freq × cold cost (s).
type Freq struct{}

var _ pool.Policy = Freq{}

// Arrive implements pool.Policy.
func (Freq) Arrive(pool.Fn, time.Duration, time.Duration) {}

// Priority implements pool.Policy.
func (Freq) Priority(e pool.Entry, clock float64) float64 {
	return clock + float64(e.Freq)*e.ColdCost.Seconds()
}

// Evicted advances the clock to the victim's priority.
func (Freq) Evicted(prio, clock float64) float64 { return max(prio, clock) }

// KeepAlive is Forever.
func (Freq) KeepAlive(pool.Fn, time.Duration) time.Duration { return pool.Forever }

// Prewarm never prewarms.
func (Freq) Prewarm(pool.Fn, time.Duration) (time.Duration, time.Duration, bool) { return 0, 0, false }

// TTL keeps an idle container for Keep and evicts in LRU order under memory
// pressure. Expiry is eager (see pool.Engine.Expire): a TTL promises that an
// idle sandbox stops costing memory after Keep, and freeing at expiry keeps
// the pool's free memory honest for the next cold start.
type TTL struct{ Keep time.Duration }

var _ pool.Policy = TTL{}

// Arrive implements pool.Policy.
func (TTL) Arrive(pool.Fn, time.Duration, time.Duration) {}

// Priority is the release time in seconds (LRU order).
func (TTL) Priority(e pool.Entry, _ float64) float64 { return e.Now.Seconds() }

// Evicted leaves the clock alone.
func (TTL) Evicted(_, clock float64) float64 { return clock }

// KeepAlive returns Keep.
func (t TTL) KeepAlive(pool.Fn, time.Duration) time.Duration { return t.Keep }

// Prewarm never prewarms.
func (TTL) Prewarm(pool.Fn, time.Duration) (time.Duration, time.Duration, bool) { return 0, 0, false }
