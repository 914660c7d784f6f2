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
