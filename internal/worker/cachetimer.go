package worker

import (
	"context"
	"errors"
	"time"
)

// kick starts the timer loop on first use and makes it re-read its
// deadline. Called with c.mu held.
func (c *warmCache) kick() {
	c.loop.Do(func() {
		c.wg.Add(1)
		go c.run()
	})
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

// run expires idle sandboxes when their keep-alive ends and starts
// pre-warms when they are due, sleeping until the engine's next deadline.
// Expiry is eager: a paused sandbox past its keep-alive is destroyed at
// once, so its memory is free for the next cold start rather than counted
// until someone needs the room.
func (c *warmCache) run() {
	defer c.wg.Done()
	t := time.NewTimer(time.Hour)
	defer t.Stop()
	for {
		c.mu.Lock()
		now := c.now()
		expired := c.detachLocked(c.e.Expire(now))
		var due []string
		for _, f := range c.e.Prewarm(now) {
			due = append(due, c.info[f].name)
		}
		next, ok := c.e.NextExpiry()
		if p, pok := c.e.NextPrewarm(); pok && (!ok || p < next) {
			next, ok = p, true
		}
		if len(expired) > 0 {
			c.signalLocked()
		}
		c.mu.Unlock()
		for _, inst := range expired {
			c.w.background(func() { c.w.destroy(inst) })
		}
		for _, name := range due {
			c.w.background(func() { c.w.prewarm(name) })
		}
		wait := time.Hour
		if ok {
			wait = max(next-c.now(), 0)
		}
		t.Reset(wait)
		select {
		case <-t.C:
		case <-c.wake:
			if !t.Stop() {
				select {
				case <-t.C:
				default:
				}
			}
		case <-c.done:
			return
		}
	}
}

// prewarm starts a sandbox for function name ahead of its predicted
// arrival (hist policy) through the same start path as a cold invocation,
// so it uses the fastest one available, and parks it paused in the pool.
// A pre-warm never evicts: without free memory the sandbox is destroyed.
func (w *Worker) prewarm(name string) {
	fn, release, err := w.fns.Lease(name)
	if err != nil {
		return // deleted meanwhile
	}
	defer w.dropCode(w.holdCode(fn, release))
	st, err := w.fnState(fn)
	if err != nil {
		return
	}
	done, err := w.startTurn(w.life, name)
	if err != nil {
		return
	}
	t0 := time.Now()
	inst, path, err := w.start(w.life, fn, st, nil, time.Time{})
	done()
	if err != nil {
		w.log.Warn("pre-warm failed", "function", name, "err", err)
		return
	}
	w.log.Debug("pre-warmed", "function", name, "sandbox", inst.id, "path", path, "took", time.Since(t0))
	inst.markIdle()
	if !w.cache.warm(inst, time.Since(t0)) {
		w.destroy(inst)
		return
	}
	w.park(inst, 0)
}

// park freezes an idle sandbox in the background, after delay if
// positive, and charges it at its measured memory.
func (w *Worker) park(inst *instance, delay time.Duration) {
	w.background(func() {
		if delay > 0 {
			time.Sleep(delay)
		}
		size, err := inst.freeze(context.Background())
		if err != nil {
			if !errors.Is(err, errBusy) {
				w.log.Warn("freezing sandbox", "sandbox", inst.id, "err", err)
				if w.cache.remove(inst) {
					w.destroy(inst)
				}
			}
			return
		}
		w.destroyAsync(w.cache.resize(inst, size))
	})
}
