// Package sched sets the scheduler's time slice of the worker's threads.
//
// A start hands work from process to process (worker, zygote, child,
// worker), and on a busy CPU each of them waits, once woken, for the task
// that is running to use up its slice: with the kernel's default (0.75 ms
// times 1 + log2 of the CPUs), several hand-offs cost several
// milliseconds. Since Linux 6.12 a task of the normal class can ask for a
// shorter slice (sched_setattr's sched_runtime, 0.1 to 100 ms): it gets
// the same share of the CPU, in shorter turns, and so an earlier virtual
// deadline, which lets it run as soon as it wakes (the kernel's
// PREEMPT_SHORT). Processes inherit the slice across fork and exec, so
// everything the worker starts after SetSlice has it too.
package sched

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"time"

	"golang.org/x/sys/unix"
)

// Bounds of a slice that the kernel accepts.
const (
	MinSlice = 100 * time.Microsecond
	MaxSlice = 100 * time.Millisecond
)

// ErrUnsupported: the kernel keeps its own slice (before Linux 6.12, or
// built without custom slices).
var ErrUnsupported = errors.New("sched: this kernel has no custom slices for normal tasks")

// SetSlice gives every thread of this process the slice d, keeping each
// one's nice value. Threads made later are cloned from these and inherit
// it, and so do the processes they start.
func SetSlice(d time.Duration) error {
	if err := SetProcessSlice(0, d); err != nil {
		return err
	}
	got, err := Slice(0)
	if err != nil {
		return err
	}
	if got != d {
		return fmt.Errorf("%w (asked for %s, got %s)", ErrUnsupported, d, got)
	}
	return nil
}

// SetProcessSlice gives every thread of process pid (0: this one) the
// slice d; the processes it forks later inherit it.
func SetProcessSlice(pid int, d time.Duration) error {
	if d < MinSlice || d > MaxSlice {
		return fmt.Errorf("sched: slice %s out of [%s, %s]", d, MinSlice, MaxSlice)
	}
	dir := "/proc/self/task"
	if pid != 0 {
		dir = "/proc/" + strconv.Itoa(pid) + "/task"
	}
	// Twice: a thread cloned from one not yet set while the first pass
	// ran is set by the second.
	for range 2 {
		ents, err := os.ReadDir(dir)
		if err != nil {
			return fmt.Errorf("sched: %w", err)
		}
		for _, e := range ents {
			tid, err := strconv.Atoi(e.Name())
			if err != nil {
				continue
			}
			if err := setThread(tid, d); err != nil && !errors.Is(err, unix.ESRCH) {
				return err
			}
		}
	}
	return nil
}

func setThread(tid int, d time.Duration) error {
	attr, err := unix.SchedGetAttr(tid, 0)
	if err != nil {
		return fmt.Errorf("sched: thread %d: %w", tid, err)
	}
	if attr.Policy != unix.SCHED_NORMAL {
		return nil // an operator's choice (batch, idle, real time): left alone
	}
	attr.Size = unix.SizeofSchedAttr
	attr.Runtime = uint64(d)
	if err := unix.SchedSetAttr(tid, attr, 0); err != nil {
		return fmt.Errorf("sched: thread %d: %w", tid, err)
	}
	return nil
}

// Slice returns the slice of thread tid (0: the calling thread): the one
// it asked for, or the kernel's default.
func Slice(tid int) (time.Duration, error) {
	attr, err := unix.SchedGetAttr(tid, 0)
	if err != nil {
		return 0, fmt.Errorf("sched: %w", err)
	}
	return time.Duration(attr.Runtime), nil
}
