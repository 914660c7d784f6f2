package trace

import "errors"

// Sentinel errors. Callers match them with errors.Is; the returned errors
// carry the file and column or value as context.
var (
	// ErrMissingColumn means a required column is absent from a header.
	ErrMissingColumn = errors.New("missing required column")
	// ErrBadHeader means a header is malformed, such as minute columns
	// that are duplicated or not contiguous, or no minute columns at all.
	ErrBadHeader = errors.New("malformed header")
	// ErrEmpty means no usable function or invocation remained.
	ErrEmpty = errors.New("no usable rows")
	// ErrUnknownArrival means an arrival model name is not recognised.
	ErrUnknownArrival = errors.New("unknown arrival model")
	// ErrBadSelection means a selection (minute range, count or hash)
	// does not fit the trace.
	ErrBadSelection = errors.New("invalid selection")
	// ErrBadRow means a row that a caller cannot do without is malformed.
	ErrBadRow = errors.New("malformed row")
	// ErrDamaged means more of a trace is in skipped or suspect rows than
	// the caller allows.
	ErrDamaged = errors.New("trace damaged")
)
