package sandbox

import "errors"

var (
	// ErrExited is returned when the sandbox's init is gone.
	ErrExited = errors.New("sandbox exited")

	// ErrNoDisks reports a host where on-disk /tmp cannot work: no loop
	// devices (a container without /dev/loop-control) or no mkfs.ext4.
	ErrNoDisks = errors.New("sandbox: no on-disk /tmp on this host")

	// ErrUnsafeSocket is returned by DialAt and DialIn when the socket is
	// not one the worker made: a symlink, another kind of file, not owned
	// by the worker, or in a directory whose entries others could swap.
	ErrUnsafeSocket = errors.New("unsafe runtime socket")
)
