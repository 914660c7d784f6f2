package snapshot

import "errors"

var (
	// ErrDisabled reports that snapshots are unavailable on this host (no
	// working CRIU); callers fall back to a zygote fork or a cold start.
	ErrDisabled = errors.New("snapshot: disabled")
	// ErrNotFound reports a snapshot that is neither cached locally nor in
	// the remote store.
	ErrNotFound = errors.New("snapshot: not found")
	// ErrCorrupt reports a snapshot whose files do not match its
	// descriptor (missing, truncated or altered). The cache deletes it.
	ErrCorrupt = errors.New("snapshot: corrupt")
	// ErrInvalid reports bad input: a malformed key, descriptor or spec.
	ErrInvalid = errors.New("snapshot: invalid")
	// ErrUnsupported reports a process the engine cannot checkpoint, such
	// as one holding a host file other than /dev/null.
	ErrUnsupported = errors.New("snapshot: unsupported process state")
	// ErrTooLarge reports a snapshot bigger than the whole cache.
	ErrTooLarge = errors.New("snapshot: larger than the cache")
	// ErrClosed reports use of a Cache after Close.
	ErrClosed = errors.New("snapshot: cache closed")
)

// ErrBusy reports a snapshot of that key already being created.
var ErrBusy = errors.New("snapshot: already being created")
