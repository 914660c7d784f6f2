package criu

import "errors"

var (
	// ErrNotFound reports that no criu binary was found.
	ErrNotFound = errors.New("criu: not found (run scripts/criu.sh)")
	// ErrTooOld reports a criu older than MinVersion.
	ErrTooOld = errors.New("criu: version too old")
	// ErrCheck reports that `criu check` failed on this kernel.
	ErrCheck = errors.New("criu: check failed")
	// ErrClosed reports use of a Runner after Close.
	ErrClosed = errors.New("criu: runner closed")
)

// ErrNoBreakpoints reports that hardware breakpoints set through ptrace do
// not trap on this host; CRIU must run without them (NoBreakpoints).
var ErrNoBreakpoints = errors.New("criu: hardware breakpoints do not trap on this host")

// ErrTimeout reports a criu run cut short by its deadline.
var ErrTimeout = errors.New("criu: deadline exceeded")

// ErrSelfTest reports that criu failed to dump and restore a tiny process
// on this host (see Runner.SelfTest).
var ErrSelfTest = errors.New("criu: self-test failed")
