package pool

import "errors"

var (
	// ErrDrop reports that a new container does not fit in its partition even
	// after evicting every idle container there (busy containers are never
	// evicted). The live worker turns it into a 503 with Retry-After.
	ErrDrop = errors.New("pool: no room for container")
	// ErrNotFound reports an unknown or already removed container or function.
	ErrNotFound = errors.New("pool: not found")
	// ErrState reports an operation that does not match a container's state,
	// such as releasing a container that is already idle.
	ErrState = errors.New("pool: wrong container state")
	// ErrConfig reports an invalid Config or argument.
	ErrConfig = errors.New("pool: invalid configuration")
)
