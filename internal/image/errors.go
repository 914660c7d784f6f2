package image

import "errors"

var (
	// ErrNoMirror reports that no Debian mirror was given and none for the
	// suite was found in the host's apt sources.
	ErrNoMirror = errors.New("image: no Debian mirror")
	// ErrInvalid reports a tree that cannot serve as a base image.
	ErrInvalid = errors.New("image: invalid base image")
	// ErrBadOptions reports missing or malformed build options.
	ErrBadOptions = errors.New("image: bad build options")
	// ErrDebootstrap reports a failed debootstrap run.
	ErrDebootstrap = errors.New("image: debootstrap failed")
)
