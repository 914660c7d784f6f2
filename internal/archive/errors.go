package archive

import "errors"

var (
	// ErrUnsafe reports an entry that could write or point outside the
	// destination, a special file, or a duplicate entry.
	ErrUnsafe = errors.New("unsafe archive entry")
	// ErrTooLarge reports an archive or tree over its Limits.
	ErrTooLarge = errors.New("archive too large")
	// ErrFormat reports input that is not a supported, well-formed
	// archive.
	ErrFormat = errors.New("bad archive format")
)
