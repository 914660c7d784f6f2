package worker

import (
	"container/list"
	"sync"
)

// warmCache is the handler cache: idle sandboxes by function, evicted
// least recently used first when their measured memory exceeds the budget.
type warmCache struct {
	mu     sync.Mutex
	budget int64
	bytes  int64
	lru    *list.List // of *instance, most recent at the front
	elems  map[*instance]*list.Element
	sizes  map[*instance]int64
	byFn   map[string][]*instance // idle stack per function, newest last
}

func newWarmCache(budget int64) *warmCache {
	return &warmCache{
		budget: budget,
		lru:    list.New(),
		elems:  make(map[*instance]*list.Element),
		sizes:  make(map[*instance]int64),
		byFn:   make(map[string][]*instance),
	}
}

// take removes and returns the newest idle sandbox of fn at revision rev.
func (c *warmCache) take(fn, rev string) *instance {
	c.mu.Lock()
	defer c.mu.Unlock()
	stack := c.byFn[fn]
	for j := len(stack) - 1; j >= 0; j-- {
		if inst := stack[j]; inst.rev == rev {
			c.removeLocked(inst)
			return inst
		}
	}
	return nil
}

// put adds an idle sandbox, counted at its declared size until measured,
// and returns the sandboxes evicted to stay in budget.
func (c *warmCache) put(inst *instance) []*instance {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.elems[inst] = c.lru.PushFront(inst)
	c.sizes[inst] = inst.declared
	c.bytes += inst.declared
	c.byFn[inst.fn] = append(c.byFn[inst.fn], inst)
	return c.evictLocked(inst)
}

// resize records a sandbox's measured memory.
func (c *warmCache) resize(inst *instance, size int64) []*instance {
	c.mu.Lock()
	defer c.mu.Unlock()
	old, ok := c.sizes[inst]
	if !ok {
		return nil
	}
	c.sizes[inst] = size
	c.bytes += size - old
	return c.evictLocked(nil)
}

// evictLocked evicts from the cold end until the cache fits; keep is
// evicted last, since it was just used.
func (c *warmCache) evictLocked(keep *instance) []*instance {
	var out []*instance
	for c.bytes > c.budget && c.lru.Len() > 0 {
		e := c.lru.Back()
		inst := e.Value.(*instance)
		if inst == keep && c.lru.Len() > 1 {
			e = e.Prev()
			inst = e.Value.(*instance)
		}
		c.removeLocked(inst)
		out = append(out, inst)
	}
	return out
}

func (c *warmCache) remove(inst *instance) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.elems[inst]; !ok {
		return false
	}
	c.removeLocked(inst)
	return true
}

func (c *warmCache) removeLocked(inst *instance) {
	e, ok := c.elems[inst]
	if !ok {
		return
	}
	c.lru.Remove(e)
	delete(c.elems, inst)
	c.bytes -= c.sizes[inst]
	delete(c.sizes, inst)
	stack := c.byFn[inst.fn]
	for j, x := range stack {
		if x == inst {
			stack = append(stack[:j], stack[j+1:]...)
			break
		}
	}
	if len(stack) == 0 {
		delete(c.byFn, inst.fn)
	} else {
		c.byFn[inst.fn] = stack
	}
}

// drop removes every idle sandbox of fn not at revision keep.
func (c *warmCache) drop(fn, keep string) []*instance {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []*instance
	for _, inst := range append([]*instance(nil), c.byFn[fn]...) {
		if keep == "" || inst.rev != keep {
			c.removeLocked(inst)
			out = append(out, inst)
		}
	}
	return out
}

func (c *warmCache) used() int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.bytes
}
