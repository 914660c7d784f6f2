package worker

// cleanup undoes a partly made start, as gVisor's pkg/cleanup does: a
// start path adds the undoing of each resource right after it takes it
// (a cgroup, a network namespace, pipes), defers Clean, and calls
// Release once the start holds everything, which then belongs to the
// instance. On a failure path Clean undoes what was taken, last first.
// The zero value is ready to use.
type cleanup struct {
	fns []func()
}

// Add registers f, to run on Clean unless Release comes first.
func (c *cleanup) Add(f func()) { c.fns = append(c.fns, f) }

// Clean runs the registered functions, last added first, and forgets
// them.
func (c *cleanup) Clean() {
	for i := len(c.fns) - 1; i >= 0; i-- {
		c.fns[i]()
	}
	c.fns = nil
}

// Release forgets the registered functions, so that Clean does nothing,
// and returns one that runs them (last added first), for a caller that
// hands the clean-up on.
func (c *cleanup) Release() func() {
	fns := c.fns
	c.fns = nil
	return func() {
		for i := len(fns) - 1; i >= 0; i-- {
			fns[i]()
		}
	}
}
