package registry

import "errors"

var (
	// ErrNotFound reports a function that is not deployed.
	ErrNotFound = errors.New("function not found")

	// ErrInvalid reports bad input: an invalid function name or source,
	// or code that cannot be deployed. Deploy errors caused by the
	// uploaded code match ErrInvalid and also keep their specific class
	// (archive.ErrUnsafe, archive.ErrTooLarge, archive.ErrFormat,
	// function.ErrInvalid, function.ErrUnsupported,
	// function.ErrUnsatisfied, or whatever Options.CheckRequirements
	// returned).
	ErrInvalid = errors.New("invalid deploy")
)

// badInput marks err as the caller's fault without changing its message.
type badInput struct{ err error }

func (b badInput) Error() string   { return b.err.Error() }
func (b badInput) Unwrap() []error { return []error{ErrInvalid, b.err} }
