package worker

import "errors"

// Sentinel errors of the invoke path. internal/api maps them to HTTP codes.
var (
	// ErrNotFound: no such function.
	ErrNotFound = errors.New("function not found")
	// ErrTooMany: the function's concurrency limit and queue are full.
	ErrTooMany = errors.New("too many concurrent requests")
	// ErrTimeout: the handler ran past its timeout; its sandbox was killed.
	ErrTimeout = errors.New("function timed out")
	// ErrOOM: the sandbox was killed for exceeding its memory limit.
	ErrOOM = errors.New("out of memory")
	// ErrCrashed: the sandbox died during the call for another reason.
	ErrCrashed = errors.New("sandbox crashed")
	// ErrStart: a sandbox could not be started.
	ErrStart = errors.New("sandbox start failed")
	// ErrDrop: the warm pool has no room for a new sandbox (its pool is full
	// of busy ones); the caller may retry later.
	ErrDrop = errors.New("warm pool full")
	// ErrMemoryTooLarge: the function's memory_mb is more than the warm
	// pool could ever give one sandbox (see CheckMemory); retrying cannot
	// help.
	ErrMemoryTooLarge = errors.New("memory_mb too large for this worker")
	// ErrClosed: the worker is shutting down.
	ErrClosed = errors.New("worker closed")
	// ErrSnapshotsOff: function snapshots are switched off or unavailable.
	ErrSnapshotsOff = errors.New("snapshots are off")
	// ErrNotSnapshottable: the function's spec rules out snapshots
	// (snapshot: never, or its own network).
	ErrNotSnapshottable = errors.New("function cannot be snapshotted")
	// ErrNoSnapshot: no such snapshot in the local cache.
	ErrNoSnapshot = errors.New("snapshot not found")
	// ErrBadSnapshotKey: a malformed snapshot key.
	ErrBadSnapshotKey = errors.New("bad snapshot key")
	// ErrHostNetwork: the function asks for the host's network
	// namespace, which the worker's operator has not allowed.
	ErrHostNetwork = errors.New("host network not allowed")
)

// ErrDataDirBusy reports a data dir that another worker holds.
var ErrDataDirBusy = errors.New("data dir in use by another worker")

// errSkip: a start path cannot serve this start (no snapshot, no spare
// ready, zygotes off); the next path of the chain starts it, and no
// fallback is counted (see Worker.runChain).
var errSkip = errors.New("start path not available")
