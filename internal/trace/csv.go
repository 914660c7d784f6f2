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
	// unterminated is set when the file does not end in a newline, so its
	// last record may have been cut short.
	unterminated bool
	ahead        *row // the record after the one next returned last
}

// row is one record of a table.
type row struct {
	rec  []string
	line int // line the record starts on; the header is line 1
	// bad is set for a record that could not be parsed as CSV (rec is
	// nil) or whose width differs from the header's; why says which.
	bad bool
	why string
	// last is set for the file's final record when the file does not end
	// in a newline: a file cut inside that record's last field would read
	// as a shorter, valid value (30 as 3).
	last bool
	eof  bool
}

// openTable opens path and reads its header row.
func openTable(path string) (*table, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("opening trace file: %w", err)
	}
	t := &table{path: path, f: f, col: map[string]int{}}
	if st, err := f.Stat(); err == nil && st.Size() > 0 {
		var b [1]byte
		if _, err := f.ReadAt(b[:], st.Size()-1); err == nil {
			t.unterminated = b[0] != '\n'
		}
	}
	r := csv.NewReader(f)
	r.FieldsPerRecord = -1 // rows of the wrong width are counted, not fatal
	t.r = r
	hdr, err := r.Read()
	if err != nil {
		f.Close()
		if errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("reading header of %s: %w", path, ErrEmpty)
		}
		return nil, fmt.Errorf("reading header of %s: %w", path, err)
	}
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

// next returns the next record; eof is set at the end of the file. Bad
// records are returned for the caller to count and skip. The record after
// it is read ahead, to know whether this one is the file's last.
func (t *table) next() (row, error) {
	var cur row
	if t.ahead != nil {
		cur, t.ahead = *t.ahead, nil
	} else {
		var err error
		if cur, err = t.read(); err != nil {
			return row{}, err
		}
	}
	if cur.eof {
		return cur, nil
	}
	nx, err := t.read()
	if err != nil {
		return row{}, err
	}
	t.ahead = &nx
	cur.last = nx.eof && t.unterminated
	return cur, nil
}

// read reads one record.
func (t *table) read() (row, error) {
	rec, err := t.r.Read()
	if err != nil {
		if errors.Is(err, io.EOF) {
			return row{eof: true}, nil
		}
		var pe *csv.ParseError
		if errors.As(err, &pe) {
			return row{line: pe.StartLine, bad: true, why: pe.Err.Error()}, nil
		}
		return row{}, fmt.Errorf("reading %s: %w", t.path, err)
	}
	line, _ := t.r.FieldPos(0)
	r := row{rec: rec, line: line}
	if len(rec) != len(t.header) {
		r.bad, r.why = true, fmt.Sprintf("%d fields, header has %d", len(rec), len(t.header))
	}
	return r, nil
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
