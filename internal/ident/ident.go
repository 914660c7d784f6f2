// Package ident holds the host user and group ids Hearth reserves for
// what runs tenant code, so that no two functions share a uid (and with
// it the kernel's per-uid resources: keyrings, inotify instances,
// process counts) and so that the host can tell sandbox traffic and
// files apart from everyone else's by uid alone.
//
// The ids are host ids: the uids that sandboxes' processes have in the
// host's user namespace, whatever they are mapped to inside one. gid
// equals uid for each.
package ident

import "fmt"

// Range is a block of host ids reserved for Hearth's sandboxes. Nothing
// else on the host may use them.
type Range struct {
	First int // the first id
	Size  int // how many ids
}

// Default is the range a worker reserves unless configured otherwise:
// above the 16-bit ids of system and login users, apart from the
// 100000-based blocks tools like useradd hand out for /etc/subuid.
var Default = Range{First: 1_000_000, Size: 65536}

// Reserved ids at the start of a range.
const (
	installerSlot = 0 // pip installs and deploy-time byte compilation
	zygoteSlot    = 1 // zygote interpreters (they import packages)
	firstFunction = 2
)

// Installer is the host uid of package installers and compilers.
func (r Range) Installer() int { return r.First + installerSlot }

// Zygote is the host uid zygote interpreters run as.
func (r Range) Zygote() int { return r.First + zygoteSlot }

// Functions is how many functions can have their own uid.
func (r Range) Functions() int { return r.Size - firstFunction }

// Function is the host uid of the function with slot n (0-based).
func (r Range) Function(n int) (int, error) {
	if n < 0 || n >= r.Functions() {
		return 0, fmt.Errorf("ident: function slot %d outside 0..%d", n, r.Functions()-1)
	}
	return r.First + firstFunction + n, nil
}

// Last is the range's last id.
func (r Range) Last() int { return r.First + r.Size - 1 }

// Contains says whether uid is in the range.
func (r Range) Contains(uid int) bool { return uid >= r.First && uid <= r.Last() }

// Validate checks the range fits in 32-bit ids and leaves room for
// functions.
func (r Range) Validate() error {
	if r.First <= 0 || r.Size <= firstFunction || int64(r.First)+int64(r.Size) > 1<<32-1 {
		return fmt.Errorf("ident: bad range %d+%d", r.First, r.Size)
	}
	return nil
}
