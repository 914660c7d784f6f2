package zygote

import (
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// A Home is the user and network namespaces that a function's sandbox, a
// zygote child, made and left when it ended: the user namespace with the
// function's uid and gid mapped, the network one with loopback alone, in
// which no socket of an internet or netlink family was ever made (the
// worker keeps only such). A later sandbox of the same function can enter
// it rather than make its own (SpareTarget.Home): the kernel then builds
// and tears down no network namespace per start, about 1 ms of CPU.
//
// The zygotes' uid owns a home's user namespace, as every one its
// children make, so a child forked plainly holds every capability there
// once it enters, and drops them as in one it made. Whatever a home
// keeps from its last sandbox (none of the sandbox's mounts, host name
// or IPC objects: those namespaces are new each time) only the same
// function may see: the worker gives a home to no other.
type Home struct {
	User, Net *os.File
	// UID and GID are the ids mapped in User, as the function's.
	UID, GID int
}

// OpenHome opens the user and network namespaces of zygote child pid,
// checked against its pidfd once open (the pid could have been another
// process's), to be kept as a home once its function's uid and gid are
// mapped (UID and GID, which the caller sets then).
func OpenHome(pid int, pidfd *os.File) (*Home, error) {
	h := &Home{UID: -1, GID: -1}
	var err error
	if h.User, err = os.Open(fmt.Sprintf("/proc/%d/ns/user", pid)); err != nil {
		return nil, err
	}
	if h.Net, err = os.Open(fmt.Sprintf("/proc/%d/ns/net", pid)); err != nil {
		h.Close()
		return nil, err
	}
	if unix.PidfdSendSignal(int(pidfd.Fd()), 0, nil, 0) != nil {
		h.Close()
		return nil, errors.New("the child is gone")
	}
	return h, nil
}

// Close closes the home's descriptors: once no process is in them, the
// kernel frees the namespaces.
func (h *Home) Close() {
	if h == nil {
		return
	}
	for _, f := range []*os.File{h.User, h.Net} {
		if f != nil {
			f.Close()
		}
	}
	h.User, h.Net = nil, nil
}
