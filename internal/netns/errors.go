package netns

import "errors"

var (
	// ErrBadConfig reports an unusable Config (prefix, subnet, sizes).
	ErrBadConfig = errors.New("netns: bad config")
	// ErrExhausted reports that the subnet has no address left.
	ErrExhausted = errors.New("netns: subnet exhausted")
	// ErrClosed reports use of a Pool after Close.
	ErrClosed = errors.New("netns: pool closed")
	// ErrInUse reports a namespace that still holds a process or a socket
	// of its last sandbox; Put discards it instead of reusing it.
	ErrInUse = errors.New("netns: namespace still in use")
)
