package sandbox

import "errors"

var (
	// ErrExited is returned when the sandbox's init is gone.
	ErrExited = errors.New("sandbox exited")

	// ErrNoDisks reports a host where on-disk /tmp cannot work: no loop
	// devices (a container without /dev/loop-control) or no mkfs.ext4.
	ErrNoDisks = errors.New("sandbox: no on-disk /tmp on this host")
)
