package pool

// heap is an indexed binary min-heap of container slots (or function ids)
// ordered by (key, seq). pos maps a slot to its index in the heap plus one
// (zero means absent), so removal of an arbitrary slot is O(log n). Several
// heaps may share one pos slice when a slot is in at most one of them.
type heap struct {
	a   []hent
	pos *[]int32
}

type hent struct {
	key  float64
	seq  uint64
	slot int32
}

func (h *heap) less(i, j int) bool {
	a, b := &h.a[i], &h.a[j]
	return a.key < b.key || (a.key == b.key && a.seq < b.seq)
}

func (h *heap) swap(i, j int) {
	h.a[i], h.a[j] = h.a[j], h.a[i]
	p := *h.pos
	p[h.a[i].slot] = int32(i + 1)
	p[h.a[j].slot] = int32(j + 1)
}

func (h *heap) len() int { return len(h.a) }

func (h *heap) has(slot int32) bool { return (*h.pos)[slot] != 0 }

func (h *heap) push(slot int32, key float64, seq uint64) {
	h.a = append(h.a, hent{key, seq, slot})
	i := len(h.a) - 1
	(*h.pos)[slot] = int32(i + 1)
	h.up(i)
}

// min returns the smallest entry; the heap must not be empty.
func (h *heap) min() hent { return h.a[0] }

func (h *heap) remove(slot int32) {
	p := *h.pos
	i := int(p[slot]) - 1
	n := len(h.a) - 1
	if i != n {
		h.swap(i, n)
	}
	h.a = h.a[:n]
	p[slot] = 0
	if i != n {
		if !h.down(i) {
			h.up(i)
		}
	}
}

func (h *heap) up(i int) {
	for i > 0 {
		parent := (i - 1) / 2
		if !h.less(i, parent) {
			return
		}
		h.swap(i, parent)
		i = parent
	}
}

func (h *heap) down(i int) bool {
	start := i
	n := len(h.a)
	for {
		l := 2*i + 1
		if l >= n {
			break
		}
		m := l
		if r := l + 1; r < n && h.less(r, l) {
			m = r
		}
		if !h.less(m, i) {
			break
		}
		h.swap(i, m)
		i = m
	}
	return i > start
}
