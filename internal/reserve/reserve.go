// Package reserve is the machinery shared by Hearth's pools of resources
// made ahead of need (cgroups, network namespaces, pre-made sandboxes):
// Pool keeps the ready and released resources, caps them at MaxIdle and
// counts its work, and its refiller (Loop) cleans what came back, tops
// the reserve up, and holds back while a burst is taking from it. The
// resource's own package says how to make, clean and destroy one.
package reserve

import "time"

// Due is what a pool's refiller should do next, as the pool reports it
// under its own lock.
type Due struct {
	// Closed stops the refiller.
	Closed bool
	// Clean, if not nil, cleans one resource given back to the pool.
	Clean func()
	// Short says the reserve is below its size: Make should run.
	Short bool
	// SinceGet is the time since the pool last handed a resource out.
	SinceGet time.Duration
	// Low says so few are ready that the refiller must not hold back.
	Low bool
}

// Level is the Due of a pool with ready of its size resources ready, the
// last handed out at lastGet: short below size, low below a quarter of it
// (at least one), when the refiller stops holding back for a burst. The
// pool sets Clean itself.
func Level(closed bool, ready, size int, lastGet time.Time) Due {
	return Due{Closed: closed, Short: ready < size, SinceGet: time.Since(lastGet), Low: ready < max(1, size/4)}
}

// Loop refills a pool until stop closes: whenever kick fires, it asks due
// what to do and does it, cleaning before making, until nothing is due.
// While the last Get is more recent than hold and the reserve is not low,
// it waits: during a burst the CPU is the burst's. add makes one resource
// and returns more=false to wait for the next kick (it failed; the pool's
// Get falls back meanwhile), or closed=true if the pool closed under it.
func Loop(kick, stop <-chan struct{}, hold time.Duration, due func() Due, add func() (more, closed bool)) {
	for {
		select {
		case <-stop:
			return
		case <-kick:
		}
		for {
			d := due()
			if d.Closed {
				return
			}
			if d.Clean == nil && !d.Short {
				break
			}
			if wait := hold - d.SinceGet; wait > 0 && !d.Low {
				select {
				case <-stop:
					return
				case <-time.After(wait):
				}
				continue
			}
			if d.Clean != nil {
				d.Clean()
				continue
			}
			more, closed := add()
			if closed {
				return
			}
			if !more {
				break
			}
		}
	}
}
