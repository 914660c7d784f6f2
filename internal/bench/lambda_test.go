package bench

import (
	"testing"
	"time"
)

// TestVerifyCost: the Lambda API's signature check adds at most 0.05 ms
// (p50) to a call.
func TestVerifyCost(t *testing.T) {
	s, err := verifySample(2000)
	if err != nil {
		t.Fatal(err)
	}
	if p50 := s.P50(); p50 > 50*time.Microsecond {
		t.Fatalf("SigV4 check p50 %s, want at most 50µs", p50)
	}
	t.Logf("SigV4 check: p50 %s, p99 %s", s.P50(), s.P99())
}
