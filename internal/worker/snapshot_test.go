package worker

import (
	"testing"

	"github.com/hearth-run/hearth/internal/function"
	"github.com/hearth-run/hearth/internal/registry"
)

func TestSnapshottable(t *testing.T) {
	cases := []struct {
		snapshot, network string
		want              bool
	}{
		{"", function.NetworkHost, true},
		{function.SnapshotAuto, "none", true},
		{function.SnapshotAlways, function.NetworkHost, true},
		{function.SnapshotNever, function.NetworkHost, false},
		{"", "", true}, // the default, isolated
		{function.SnapshotAlways, function.NetworkIsolated, true},
		{"", function.NetworkOffline, true},
	}
	for _, c := range cases {
		t.Run(c.snapshot+"/"+c.network, func(t *testing.T) {
			fn := registry.Function{Name: "f", Spec: function.Spec{Snapshot: c.snapshot, Network: c.network}}
			if got := snapshottable(fn); got != c.want {
				t.Errorf("snapshottable = %v, want %v", got, c.want)
			}
		})
	}
}
