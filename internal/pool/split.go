package pool

import (
	"fmt"
	"math"
	"strconv"
	"strings"
)

// DefaultThreshold is the KiSS small/large boundary of two partitions:
// 225 MiB. The live worker and the simulator both split at it.
const DefaultThreshold int64 = 225 << 20

// ParsePercents parses a split of memory in percent, smallest sizes
// first, such as "80/20" or "60/30/10", into fractions: each percentage
// in (0, 100], summing to 100. Errors match ErrConfig.
func ParsePercents(s string) ([]float64, error) {
	parts := strings.Split(s, "/")
	out := make([]float64, len(parts))
	sum := 0.0
	for i, p := range parts {
		v, err := strconv.ParseFloat(strings.TrimSpace(p), 64)
		if err != nil || !(v > 0 && v <= 100) {
			return nil, fmt.Errorf("split %q: %q is not a percentage in (0, 100]: %w", s, p, ErrConfig)
		}
		out[i] = v / 100
		sum += v
	}
	if math.Abs(sum-100) > 1e-3 {
		return nil, fmt.Errorf("split %q: percentages sum to %v, not 100: %w", s, sum, ErrConfig)
	}
	return out, nil
}
