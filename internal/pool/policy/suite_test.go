package policy

import (
	"testing"

	"github.com/hearth-run/hearth/internal/pool/policytest"
)

func TestSuite(t *testing.T) {
	for name, c := range Constructors(Options{}) {
		t.Run(name, func(t *testing.T) { policytest.Run(t, c) })
	}
}
