package worker

import (
	"fmt"
	"testing"

	"github.com/hearth-run/hearth/internal/runtime"
)

func seqs(ls []LogLine) []uint64 {
	out := []uint64{}
	for _, l := range ls {
		out = append(out, l.Seq)
	}
	return out
}

func span(lo, hi uint64) []uint64 {
	out := []uint64{}
	for s := lo; s <= hi; s++ {
		out = append(out, s)
	}
	return out
}

// TestLogRingQuery reads a ring of 10 lines that saw 25: the newest n,
// or the lines from a seq on, and what each answer says it left out.
func TestLogRingQuery(t *testing.T) {
	r := newLogRing(10)
	for i := 1; i <= 25; i++ {
		s := runtime.Stdout
		if i%2 == 0 {
			s = runtime.Stderr
		}
		r.add(s, fmt.Sprintf("line %d", i))
	}
	tests := []struct {
		name    string
		n       int
		since   uint64
		want    []uint64
		older   int
		dropped uint64
		next    uint64
		newer   int
	}{
		{"all kept", 0, 0, span(16, 25), 0, 15, 26, 0},
		{"newest 4", 4, 0, span(22, 25), 6, 15, 26, 0},
		{"more than kept", 50, 0, span(16, 25), 0, 15, 26, 0},
		{"since a kept line", 0, 20, span(20, 25), 0, 0, 26, 0},
		{"since a kept line, 3 of them", 3, 20, span(20, 22), 0, 0, 23, 3},
		{"since a dropped line", 0, 12, span(16, 25), 0, 4, 26, 0},
		{"since the first", 2, 1, span(16, 17), 0, 15, 18, 8},
		{"since the next", 0, 26, []uint64{}, 0, 0, 26, 0},
		{"since beyond the log", 0, 90, []uint64{}, 0, 0, 26, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := r.query(tt.n, tt.since)
			if fmt.Sprint(seqs(got.Lines)) != fmt.Sprint(tt.want) {
				t.Errorf("lines %v, want %v", seqs(got.Lines), tt.want)
			}
			if got.Older != tt.older || got.Dropped != tt.dropped || got.Next != tt.next || got.Newer != tt.newer {
				t.Errorf("older %d dropped %d next %d newer %d, want %d %d %d %d",
					got.Older, got.Dropped, got.Next, got.Newer, tt.older, tt.dropped, tt.next, tt.newer)
			}
			if got.Limit != 10 || got.Epoch != r.epoch || got.Epoch == "" {
				t.Errorf("limit %d epoch %q", got.Limit, got.Epoch)
			}
			for _, l := range got.Lines {
				if l.Text != fmt.Sprintf("line %d", l.Seq) || (l.Stream == "stderr") != (l.Seq%2 == 0) || l.Time.IsZero() {
					t.Errorf("line %+v", l)
				}
			}
		})
	}
}
