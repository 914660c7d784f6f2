package pool

import "time"

// Forever is the keep-alive of a container that never expires on its own;
// it stays until evicted for space or removed.
const Forever time.Duration = -1

// Entry is what a policy sees of a container when it becomes idle.
type Entry struct {
	Fn       Fn
	Size     int64         // bytes, as currently accounted
	ColdCost time.Duration // cold-start cost of the function
	// Freq counts invocations of the function since it last had no
	// container in the pool (FaasCache resets frequency when a function is
	// fully evicted, so stale popularity does not pin memory forever).
	Freq int64
	Now  time.Duration // when the container became idle
}

// Policy decides eviction order and keep-alive for one partition. The engine
// creates one instance per partition, so a policy may keep per-function
// state; it never sees live sandboxes, only events and byte counts.
// Methods are called with the engine's (caller's) serialization; a policy
// need not be safe for concurrent use.
type Policy interface {
	// Arrive is called once per invocation of fn, before the engine looks
	// for a warm container. idle is how long fn had no running container
	// (0 if one was running), or negative on fn's first arrival.
	Arrive(fn Fn, now, idle time.Duration)
	// Priority returns the eviction priority of a container that becomes
	// idle; the idle container with the lowest priority is evicted first
	// (ties: the one idle longest). clock is the partition's clock.
	Priority(e Entry, clock float64) float64
	// Evicted returns the partition clock after evicting a container whose
	// priority was prio.
	Evicted(prio, clock float64) float64
	// KeepAlive returns how long a container of fn that becomes idle at now
	// may stay idle before it expires, or Forever.
	KeepAlive(fn Fn, now time.Duration) time.Duration
	// Prewarm reports whether a container of fn should be started ahead of a
	// predicted arrival, given that fn's last container became idle at now:
	// at is when to start it and keep how long it may then wait idle.
	Prewarm(fn Fn, now time.Duration) (at, keep time.Duration, ok bool)
}

// Forgetter is a Policy that keeps per-function state. The engine calls
// Forget when a function is removed, before its id can name another one.
type Forgetter interface {
	Forget(fn Fn)
}
