// Package pool is Hearth's warm-pool memory manager: the one engine that both
// the live worker and the simulator (internal/sim) use, so a keep-alive
// policy is written once.
//
// The engine is pure bookkeeping. It owns no goroutines, no timers and no
// sandboxes; the caller passes the current time into every call and acts on
// the container IDs the engine returns (create, kill). It tracks containers
// (function, size in bytes, cold-start cost, busy or idle, last use) inside
// one or more size-partitioned pools, as in KiSS: a function is routed to a
// partition by its declared size, and each partition has its own capacity,
// its own policy instance (so its own clock) and its own eviction. One
// partition is the classic unified pool.
//
// A Policy decides two things: the eviction priority of an idle container
// (lowest goes first) and how long an idle container may live (keep-alive,
// plus optional pre-warming). Policies live in internal/pool/policy; the
// shared conformance suite every policy runs is internal/pool/policytest.
//
// A typical invocation:
//
//	id, ok := e.Acquire(fn, now)          // warm hit?
//	if !ok {
//		id, evicted, err = e.Admit(fn, now) // cold start; kill evicted first
//		// err is ErrDrop when the partition is full of busy containers
//	}
//	... run ...
//	e.Release(id, end)
//
// and, driven by timers or the event loop, Expire(now) for keep-alive expiry
// (see NextExpiry) and Prewarm(now)+Warm for predicted arrivals (see
// NextPrewarm).
//
// An Engine is not safe for concurrent use; the live worker wraps it in a
// mutex. Slices returned by Admit, Warm, Resize, Expire and Prewarm are owned
// by the engine and valid only until its next call.
package pool
