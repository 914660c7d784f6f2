package zygote

import "errors"

var (
	// ErrDead reports a zygote that died or stopped answering; callers
	// fall back to a fresh start.
	ErrDead = errors.New("zygote dead")
	// ErrNoZygote reports that no zygote is available for a package set.
	ErrNoZygote = errors.New("no zygote available")
	// ErrUnavailable reports a host where zygotes cannot fork: an
	// unprivileged zygote cannot make its children's user namespaces
	// (kernel.unprivileged_userns_clone=0, user.max_user_namespaces=0,
	// or a security module that forbids them).
	ErrUnavailable = errors.New("zygotes unavailable on this host")
)
