package cgroup

import "errors"

var (
	// ErrBadName reports a group or parent name that is not a single, plain
	// path element (or, for a parent, a clean relative path).
	ErrBadName = errors.New("cgroup: bad name")
	// ErrBadPid reports a pid that cannot name a process.
	ErrBadPid = errors.New("cgroup: bad pid")
	// ErrBadLimits reports a negative or out-of-range limit.
	ErrBadLimits = errors.New("cgroup: bad limits")
	// ErrExists reports that a group of that name already exists.
	ErrExists = errors.New("cgroup: group exists")
	// ErrNoCgroups reports a host without a usable cgroup file system.
	ErrNoCgroups = errors.New("cgroup: no usable cgroup file system")
	// ErrNoController reports that a controller needed for a limit is not
	// available (not mounted on v1, not enabled for the parent on v2).
	ErrNoController = errors.New("cgroup: controller not available")
	// ErrDeleted reports use of a group after Delete.
	ErrDeleted = errors.New("cgroup: group deleted")
	// ErrBadMode reports an unknown Mode passed to WithMode.
	ErrBadMode = errors.New("cgroup: unknown mode")
	// ErrPoolClosed reports use of a Pool after Close.
	ErrPoolClosed = errors.New("cgroup: pool closed")
	// ErrQuarantined reports a group that could not be cleaned for reuse;
	// the pool keeps it aside and never hands it out again.
	ErrQuarantined = errors.New("cgroup: group quarantined")
	// ErrPeakUnknown reports a v2 group reused from a Pool: its
	// memory.peak, which cannot be reset for every reader, still holds
	// its earlier sandboxes' peak.
	ErrPeakUnknown = errors.New("cgroup: peak memory unknown in a reused v2 group")
)
