package netns

import (
	"errors"
	"time"

	"github.com/vishvananda/netlink"
)

// dump runs a netlink dump (a list of links, addresses, routes or
// rules) again while the kernel reports it interrupted by a concurrent
// change, as it often is on a busy host; after a few tries the partial
// result and the error are the caller's.
func dump[T any](list func() (T, error)) (T, error) {
	var (
		out T
		err error
	)
	for i := range 8 {
		if out, err = list(); !errors.Is(err, netlink.ErrDumpInterrupted) {
			break
		}
		time.Sleep(time.Duration(i+1) * time.Millisecond) // let the change end
	}
	return out, err
}
