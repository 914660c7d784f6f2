package worker

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/hearth-run/hearth/internal/pool"
)

// ParseSplit parses a pool split in percent, smallest sizes first: "80/20"
// is the KiSS default of two pools, "unified" (or "100" or "") one pool.
// The percentages must be positive and sum to 100.
func ParseSplit(s string) ([]float64, error) {
	s = strings.TrimSpace(s)
	if s == "" || strings.EqualFold(s, "unified") {
		return []float64{1}, nil
	}
	parts := strings.Split(s, "/")
	out := make([]float64, len(parts))
	sum := 0.0
	for i, p := range parts {
		v, err := strconv.ParseFloat(strings.TrimSpace(p), 64)
		if err != nil || !(v > 0 && v <= 100) {
			return nil, fmt.Errorf("pools %q: %q is not a percentage in (0, 100]: %w", s, p, pool.ErrConfig)
		}
		out[i] = v / 100
		sum += v
	}
	if sum < 99.999 || sum > 100.001 {
		return nil, fmt.Errorf("pools %q: percentages sum to %v, not 100: %w", s, sum, pool.ErrConfig)
	}
	return out, nil
}
