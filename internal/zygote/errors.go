package zygote

import "errors"

var (
	// ErrDead reports a zygote that died or stopped answering; callers
	// fall back to a fresh start.
	ErrDead = errors.New("zygote dead")
	// ErrNoZygote reports that no zygote is available for a package set.
	ErrNoZygote = errors.New("no zygote available")
)
