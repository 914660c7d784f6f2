package lambda

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"
)

// countingAttempt records the runs of each id and answers what out says.
type countingAttempt struct {
	mu   sync.Mutex
	runs map[string]int
	out  func(rec Record, n int) outcome
}

func (c *countingAttempt) attempt(ctx context.Context, rec Record, payload []byte) outcome {
	c.mu.Lock()
	if c.runs == nil {
		c.runs = map[string]int{}
	}
	c.runs[rec.RequestID]++
	n := c.runs[rec.RequestID]
	c.mu.Unlock()
	if c.out == nil {
		return outcome{kind: outcomeOK}
	}
	return c.out(rec, n)
}

func (c *countingAttempt) count(id string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.runs[id]
}

func openTestQueue(t *testing.T, dir string, cfg AsyncConfig, a *countingAttempt) *queue {
	t.Helper()
	db, err := openDB(dir)
	if err != nil {
		t.Fatal(err)
	}
	q, err := openQueue(db, cfg, a.attempt, slog.New(slog.NewTextHandler(io.Discard, nil)), time.Now)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { q.Close(); db.Close() })
	return q
}

func waitQueueFinal(t *testing.T, q *queue, id string) Record {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(2 * time.Millisecond) {
		rec, err := q.Get(id)
		if err == nil && Final(rec.State) {
			return rec
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not final: %+v %v", id, rec, err)
		}
	}
}

func TestQueueRetries(t *testing.T) {
	a := &countingAttempt{out: func(rec Record, n int) outcome {
		switch rec.Function {
		case "flaky":
			if n < 3 {
				return outcome{kind: outcomeFuncError, errType: "ValueError", msg: "not yet"}
			}
		case "broken":
			return outcome{kind: outcomeFuncError, errType: "ValueError", msg: "never"}
		case "throttled":
			if n < 4 {
				return outcome{kind: outcomeThrottled, errType: typeTooMany, msg: "busy"}
			}
		case "gone":
			return outcome{kind: outcomeGone, errType: typeNotFound, msg: "deleted"}
		}
		return outcome{kind: outcomeOK}
	}}
	q := openTestQueue(t, t.TempDir(), AsyncConfig{RetryBackoff: 10 * time.Millisecond}, a)
	q.Start(context.Background())
	for _, tc := range []struct {
		fn              string
		state           string
		attempts, fnErr int
	}{
		{"ok", StateSucceeded, 1, 0},
		{"flaky", StateSucceeded, 3, 2},
		{"broken", StateFailed, 3, 3},
		{"throttled", StateSucceeded, 4, 0},
		{"gone", StateFailed, 1, 0},
	} {
		t.Run(tc.fn, func(t *testing.T) {
			id := "id-" + tc.fn
			if err := q.Accept(tc.fn, id, []byte(`{}`)); err != nil {
				t.Fatal(err)
			}
			rec := waitQueueFinal(t, q, id)
			if rec.State != tc.state || rec.Attempts != tc.attempts || rec.FunctionErrors != tc.fnErr || a.count(id) != tc.attempts {
				t.Fatalf("record %+v after %d runs; want %s, %d attempts, %d function errors", rec, a.count(id), tc.state, tc.attempts, tc.fnErr)
			}
		})
	}
}

// TestQueueRestart: what was accepted and not final is run by the next
// queue on the same database, the run cut short counted as an attempt.
func TestQueueRestart(t *testing.T) {
	dir := t.TempDir()
	block := make(chan struct{})
	a1 := &countingAttempt{out: func(rec Record, n int) outcome {
		<-block
		return outcome{kind: outcomeOK}
	}}
	db, err := openDB(dir)
	if err != nil {
		t.Fatal(err)
	}
	q1, err := openQueue(db, AsyncConfig{Concurrency: 1, MaxQueued: 10}, a1.attempt, slog.New(slog.NewTextHandler(io.Discard, nil)), time.Now)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 10 {
		if err := q1.Accept("f", fmt.Sprint("id-", i), []byte(`{}`)); err != nil {
			t.Fatal(err)
		}
	}
	if err := q1.Accept("f", "one-too-many", []byte(`{}`)); err != ErrQueueFull {
		t.Fatalf("11th of 10: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	q1.Start(ctx)
	for a1.count("id-0") == 0 {
		time.Sleep(time.Millisecond)
	}
	// The worker's end: the run under way is cut, nothing is recorded.
	cancel()
	close(block)
	q1.Close()
	db.Close()

	a2 := &countingAttempt{}
	q2 := openTestQueue(t, dir, AsyncConfig{}, a2)
	if q2.pending != 10 {
		t.Fatalf("pending after restart: %d", q2.pending)
	}
	q2.Start(context.Background())
	for i := range 10 {
		id := fmt.Sprint("id-", i)
		rec := waitQueueFinal(t, q2, id)
		want := 1
		if i == 0 {
			want = 2 // the cut run counts
		}
		if rec.State != StateSucceeded || rec.Attempts != want || a2.count(id) != 1 {
			t.Fatalf("%s: %+v, %d runs after restart", id, rec, a2.count(id))
		}
	}
	recs, err := q2.List("f", StateSucceeded, 0)
	if err != nil || len(recs) != 10 || recs[0].RequestID != "id-9" {
		t.Fatalf("list: %d records, %v", len(recs), err)
	}
}

func TestQueuePrunes(t *testing.T) {
	a := &countingAttempt{}
	q := openTestQueue(t, t.TempDir(), AsyncConfig{KeepRecords: 5}, a)
	q.Start(context.Background())
	for i := range 12 {
		id := fmt.Sprint("id-", i)
		if err := q.Accept("f", id, nil); err != nil {
			t.Fatal(err)
		}
		waitQueueFinal(t, q, id)
	}
	recs, _ := q.List("", "", 0)
	if len(recs) > 5+1 || recs[0].RequestID != "id-11" {
		t.Fatalf("%d records kept (want about 5), newest %s", len(recs), recs[0].RequestID)
	}
}
