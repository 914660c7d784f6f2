package criu

import (
	"context"
	"errors"
	"testing"
	"time"
)

// BenchmarkSelfTest dumps and restores a tiny process in each of criu's
// modes: with hardware breakpoints (where they trap) and without
// (CRIU_FAULT=130), to measure what the fallback costs. Run:
//
//	go test -run '^$' -bench SelfTest -benchtime 50x ./internal/criu
func BenchmarkSelfTest(b *testing.B) {
	bp := ProbeBreakpoints(context.Background(), 3*time.Second)
	for _, mode := range []struct {
		name          string
		noBreakpoints bool
	}{{"breakpoints", false}, {"no-breakpoints", true}} {
		b.Run(mode.name, func(b *testing.B) {
			if !mode.noBreakpoints && bp != nil {
				if errors.Is(bp, ErrNoBreakpoints) {
					b.Skipf("host limit: %v", bp)
				}
				b.Fatalf("breakpoint probe: %v", bp)
			}
			r := runner(b, mode.noBreakpoints)
			var dump, restore time.Duration
			for b.Loop() {
				res, err := r.SelfTest(context.Background(), 10*time.Second)
				if err != nil {
					b.Fatal(err)
				}
				dump += res.Dump
				restore += res.Restore
			}
			b.ReportMetric(float64(dump.Microseconds())/float64(b.N)/1000, "dump-ms/op")
			b.ReportMetric(float64(restore.Microseconds())/float64(b.N)/1000, "restore-ms/op")
		})
	}
}
