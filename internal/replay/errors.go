package replay

import "errors"

var (
	// ErrBadPopularity reports a popularity table that cannot be used:
	// empty, with a negative or all-zero weight, or naming a package the
	// base image does not provide.
	ErrBadPopularity = errors.New("bad popularity table")
	// ErrBadConfig reports an invalid plan or run setting.
	ErrBadConfig = errors.New("bad replay configuration")
	// ErrNoCalls reports that there is nothing to plot: no call succeeded.
	ErrNoCalls = errors.New("no successful calls")
)
