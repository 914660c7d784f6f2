package trace

import (
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"strconv"
	"strings"
)

// table is a CSV file whose columns are looked up by header name.
type table struct {
	path   string
	f      *os.File
	r      *csv.Reader
	header []string
	col    map[string]int
}

// openTable opens path and reads its header row.
func openTable(path string) (*table, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("opening trace file: %w", err)
	}
	r := csv.NewReader(f)
	r.FieldsPerRecord = -1 // rows of the wrong width are counted, not fatal
	r.ReuseRecord = true
	hdr, err := r.Read()
	if err != nil {
		f.Close()
		if errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("reading header of %s: %w", path, ErrEmpty)
		}
		return nil, fmt.Errorf("reading header of %s: %w", path, err)
	}
	t := &table{path: path, f: f, r: r, col: make(map[string]int, len(hdr))}
	t.header = make([]string, len(hdr))
	for i, h := range hdr {
		h = strings.TrimSpace(strings.TrimPrefix(h, "\ufeff"))
		t.header[i] = h
		if _, dup := t.col[h]; dup {
			f.Close()
			return nil, fmt.Errorf("%s: column %q appears twice: %w", path, h, ErrBadHeader)
		}
		t.col[h] = i
	}
	return t, nil
}

// need returns the index of each named column, or an error naming the
// first one missing.
func (t *table) need(names ...string) ([]int, error) {
	idx := make([]int, len(names))
	for i, n := range names {
		j, ok := t.col[n]
		if !ok {
			return nil, fmt.Errorf("%s: column %q: %w", t.path, n, ErrMissingColumn)
		}
		idx[i] = j
	}
	return idx, nil
}

// next returns the next record. ok is false at the end of the file; bad is
// true for a record that could not be parsed as CSV or whose width differs
// from the header's, which the caller counts and skips.
func (t *table) next() (rec []string, bad, ok bool, err error) {
	rec, err = t.r.Read()
	if err != nil {
		if errors.Is(err, io.EOF) {
			return nil, false, false, nil
		}
		var pe *csv.ParseError
		if errors.As(err, &pe) {
			return nil, true, true, nil
		}
		return nil, false, false, fmt.Errorf("reading %s: %w", t.path, err)
	}
	if len(rec) != len(t.header) {
		return nil, true, true, nil
	}
	return rec, false, true, nil
}

func (t *table) close() { t.f.Close() }

// parseNum parses a non-negative finite number; empty cells are invalid.
func parseNum(s string) (float64, bool) {
	s = strings.TrimSpace(s)
	if s == "" {
		return 0, false
	}
	v, err := strconv.ParseFloat(s, 64)
	if err != nil || v < 0 || math.IsNaN(v) || math.IsInf(v, 0) {
		return 0, false
	}
	return v, true
}

// parseCount parses a per-minute count. Integral floats ("3.0") are
// accepted because some tools write counts that way.
func parseCount(s string) (int32, bool) {
	s = strings.TrimSpace(s)
	if n, err := strconv.ParseInt(s, 10, 32); err == nil {
		return int32(n), n >= 0
	}
	v, ok := parseNum(s)
	if !ok || v != math.Trunc(v) || v > math.MaxInt32 {
		return 0, false
	}
	return int32(v), true
}
