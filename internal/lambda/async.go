package lambda

import (
	"github.com/hearth-run/hearth/api/types"

	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"log/slog"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"
)

// States of an asynchronous invocation. Succeeded and Failed are final.
const (
	StateQueued    = "queued"
	StateRunning   = "running"
	StateRetrying  = "retrying"
	StateSucceeded = "succeeded"
	StateFailed    = "failed"
)

// Final reports whether state is final.
func Final(state string) bool { return state == StateSucceeded || state == StateFailed }

// Record is the durable record of one accepted Event invocation.
type Record = types.AsyncRecord

// MaxFunctionErrors is how many runs of an Event invocation may end in a
// function error: the first run and Lambda's two retries.
const MaxFunctionErrors = 3

// maxInterrupted bounds the runs cut short by the worker's end, beyond
// the function errors, so that an invocation that somehow takes the
// worker down with it cannot loop for ever.
const maxInterrupted = 5

// AsyncConfig configures the queue of Event invocations. Zero values mean
// the defaults. Its yaml tags are the keys of hearth.yaml's lambda.async
// section; fields tagged "-" are not settings of the file.
type AsyncConfig struct {
	// MaxQueued bounds the invocations accepted and not final; past it
	// Invoke answers 429 TooManyRequestsException (default 1000).
	MaxQueued int `yaml:"max_queued"`
	// Concurrency is how many Event invocations run at once (default 2);
	// each still waits for its function's max_concurrency.
	Concurrency int `yaml:"concurrency"`
	// RetryBackoff is the wait before the first retry after a function
	// error; the second waits twice as long (default 1m, as Lambda).
	RetryBackoff time.Duration `yaml:"retry_backoff"`
	// MaxAge bounds how long an invocation kept from running (throttled,
	// the worker's pool full) is retried (default 6h, as Lambda).
	MaxAge time.Duration `yaml:"max_age"`
	// KeepRecords bounds the records kept; past it the oldest final ones
	// go (default 10000).
	KeepRecords int `yaml:"keep_records"`
	// MaxPayload bounds an Event invocation's payload (default 256 KiB,
	// Lambda's limit for asynchronous invocations).
	MaxPayload int64 `yaml:"-"`
}

func (c *AsyncConfig) setDefaults() {
	if c.MaxQueued <= 0 {
		c.MaxQueued = 1000
	}
	if c.Concurrency <= 0 {
		c.Concurrency = 2
	}
	if c.RetryBackoff <= 0 {
		c.RetryBackoff = time.Minute
	}
	if c.MaxAge <= 0 {
		c.MaxAge = 6 * time.Hour
	}
	if c.KeepRecords <= 0 {
		c.KeepRecords = 10000
	}
	if c.MaxPayload <= 0 {
		c.MaxPayload = 256 << 10
	}
}

// Outcome kinds of one run.
const (
	outcomeOK        = iota
	outcomeFuncError // counts against MaxFunctionErrors
	outcomeGone      // the function no longer exists: final
	outcomeThrottled // kept from running: retried until MaxAge
)

// outcome is how one run of an Event invocation ended.
type outcome struct {
	kind     int
	errType  string
	msg      string
	revision string
}

// attemptFunc runs an invocation once. It is called with the queue's
// context; a run cut by that context's end is not recorded.
type attemptFunc func(ctx context.Context, rec Record, payload []byte) outcome

// queue is the durable queue of Event invocations, in lambda.db. Accept
// commits an invocation before it answers; Start runs them, and on start
// runs again what was accepted and not final (a run the last worker
// started and did not finish counts as an attempt). It is safe for
// concurrent use.
type queue struct {
	cfg     AsyncConfig
	db      *bolt.DB
	attempt attemptFunc
	log     *slog.Logger
	now     func() time.Time

	// work holds the ids ready to run; each non-final id is in it, in a
	// timer, or being run, never twice, so sends never block: its
	// capacity is at least the non-final count.
	work chan string

	mu      sync.Mutex
	pending int                    // non-final records; guarded by mu
	total   int                    // records; guarded by mu
	timers  map[string]*time.Timer // retries waiting; guarded by mu
	closed  bool                   // guarded by mu
	started bool                   // guarded by mu
	backlog []string               // ids to run at Start, in order; guarded by mu

	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// openQueue loads the queue's state from db: the non-final records are
// run again at Start, in acceptance order.
func openQueue(db *bolt.DB, cfg AsyncConfig, attempt attemptFunc, log *slog.Logger, now func() time.Time) (*queue, error) {
	cfg.setDefaults()
	q := &queue{cfg: cfg, db: db, attempt: attempt, log: log, now: now, timers: map[string]*time.Timer{}}
	err := db.View(func(tx *bolt.Tx) error {
		recs := tx.Bucket(asyncBucket)
		return tx.Bucket(orderBucket).ForEach(func(_, id []byte) error {
			v := recs.Get(id)
			if v == nil {
				return nil
			}
			q.total++
			var rec Record
			if err := json.Unmarshal(v, &rec); err != nil {
				return fmt.Errorf("async record %s: %w", id, err)
			}
			if !Final(rec.State) {
				q.pending++
				q.backlog = append(q.backlog, rec.RequestID)
			}
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("loading the async queue: %w", err)
	}
	q.work = make(chan string, max(cfg.MaxQueued, q.pending))
	return q, nil
}

// Start runs the queue until ctx ends or Close.
func (q *queue) Start(ctx context.Context) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.started || q.closed {
		return
	}
	q.started = true
	ctx, q.cancel = context.WithCancel(ctx)
	if len(q.backlog) > 0 {
		q.log.Info("resuming asynchronous invocations", "count", len(q.backlog))
	}
	for _, id := range q.backlog {
		q.scheduleLocked(id, time.Time{})
	}
	q.backlog = nil
	for range q.cfg.Concurrency {
		q.wg.Add(1)
		go func() {
			defer q.wg.Done()
			for {
				select {
				case <-ctx.Done():
					return
				case id := <-q.work:
					if ctx.Err() != nil {
						// select picks at random among ready cases: the
						// end wins. The record stays as it is; the next
						// worker runs it.
						return
					}
					q.run(ctx, id)
				}
			}
		}()
	}
}

// Close stops the runners, waiting for the runs under way to return
// (their context ended: they are run again by the next worker).
func (q *queue) Close() {
	q.mu.Lock()
	q.closed = true
	for id, t := range q.timers {
		t.Stop()
		delete(q.timers, id)
	}
	if q.cancel != nil {
		q.cancel()
	}
	q.mu.Unlock()
	q.wg.Wait()
}

// scheduleLocked makes id ready at at (now if zero).
func (q *queue) scheduleLocked(id string, at time.Time) {
	d := at.Sub(q.now())
	if at.IsZero() || d <= 0 {
		q.work <- id
		return
	}
	q.timers[id] = time.AfterFunc(d, func() {
		q.mu.Lock()
		defer q.mu.Unlock()
		if q.closed {
			return
		}
		delete(q.timers, id)
		q.work <- id
	})
}

func seqKey(seq uint64) []byte { return binary.BigEndian.AppendUint64(nil, seq) }

// Accept records an Event invocation of function fn and queues it. It
// returns once the record is durable.
func (q *queue) Accept(fn, id string, payload []byte) error {
	q.mu.Lock()
	if q.closed {
		q.mu.Unlock()
		return ErrClosed
	}
	if q.pending >= q.cfg.MaxQueued {
		q.mu.Unlock()
		return ErrQueueFull
	}
	q.pending++
	q.total++
	q.mu.Unlock()
	now := q.now().UTC()
	err := q.db.Update(func(tx *bolt.Tx) error {
		order := tx.Bucket(orderBucket)
		seq, err := order.NextSequence()
		if err != nil {
			return err
		}
		rec := Record{RequestID: id, Function: fn, State: StateQueued, Accepted: now, Updated: now, Seq: seq}
		v, err := json.Marshal(rec)
		if err != nil {
			return err
		}
		if err := tx.Bucket(asyncBucket).Put([]byte(id), v); err != nil {
			return err
		}
		if err := tx.Bucket(payloadBucket).Put([]byte(id), payload); err != nil {
			return err
		}
		return order.Put(seqKey(seq), []byte(id))
	})
	q.mu.Lock()
	defer q.mu.Unlock()
	if err != nil {
		q.pending--
		q.total--
		return fmt.Errorf("recording an asynchronous invocation: %w", err)
	}
	switch {
	case q.closed:
		// The next worker runs it.
	case !q.started:
		q.backlog = append(q.backlog, id)
	default:
		q.scheduleLocked(id, time.Time{})
	}
	return nil
}

// update applies f to id's record in one transaction; f returns whether
// to store it. It returns the record as stored.
func (q *queue) update(id string, f func(*Record) bool) (Record, error) {
	var rec Record
	err := q.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(asyncBucket)
		v := b.Get([]byte(id))
		if v == nil {
			return ErrNoRecord
		}
		if err := json.Unmarshal(v, &rec); err != nil {
			return err
		}
		if !f(&rec) {
			return nil
		}
		rec.Updated = q.now().UTC()
		nv, err := json.Marshal(rec)
		if err != nil {
			return err
		}
		if err := b.Put([]byte(id), nv); err != nil {
			return err
		}
		if Final(rec.State) {
			return tx.Bucket(payloadBucket).Delete([]byte(id))
		}
		return nil
	})
	return rec, err
}

// run runs one attempt of id and records its outcome.
func (q *queue) run(ctx context.Context, id string) {
	var payload []byte
	rec, err := q.update(id, func(r *Record) bool {
		if Final(r.State) {
			return false
		}
		r.Attempts++
		r.State = StateRunning
		r.NextAttempt = time.Time{}
		return true
	})
	if err == nil && !Final(rec.State) {
		err = q.db.View(func(tx *bolt.Tx) error {
			payload = append([]byte(nil), tx.Bucket(payloadBucket).Get([]byte(id))...)
			return nil
		})
	}
	if err != nil {
		q.log.Error("asynchronous invocation: reading its record", "request_id", id, "err", err)
		q.retire(id, false)
		return
	}
	if Final(rec.State) {
		q.retire(id, false)
		return
	}
	var out outcome
	if rec.Attempts-rec.FunctionErrors > MaxFunctionErrors+maxInterrupted {
		out = outcome{kind: outcomeGone, errType: typeService, msg: fmt.Sprintf("%d runs were cut short by the worker's end", rec.Attempts-rec.FunctionErrors-1)}
	} else {
		out = q.attempt(ctx, rec, payload)
		if ctx.Err() != nil {
			// Shutting down: the record stays running, and the next
			// worker runs it again.
			return
		}
	}
	now := q.now().UTC()
	rec, err = q.update(id, func(r *Record) bool {
		r.Revision = out.revision
		r.ErrorType, r.Error = out.errType, out.msg
		switch out.kind {
		case outcomeOK:
			r.State = StateSucceeded
		case outcomeGone:
			r.State = StateFailed
		case outcomeFuncError:
			r.FunctionErrors++
			if r.FunctionErrors >= MaxFunctionErrors {
				r.State = StateFailed
			} else {
				r.State = StateRetrying
				r.NextAttempt = now.Add(q.cfg.RetryBackoff << (r.FunctionErrors - 1))
			}
		case outcomeThrottled:
			if now.Sub(r.Accepted) > q.cfg.MaxAge {
				r.State = StateFailed
				r.Error = "kept from running for longer than the maximum event age: " + r.Error
			} else {
				r.State = StateRetrying
				r.NextAttempt = now.Add(throttleBackoff(r.Attempts - r.FunctionErrors))
			}
		}
		return true
	})
	if err != nil {
		// The record stays running: the next worker runs it again.
		q.log.Error("asynchronous invocation: recording its outcome", "request_id", id, "err", err)
		q.retire(id, false)
		return
	}
	if Final(rec.State) {
		if rec.State == StateFailed {
			q.log.Warn("asynchronous invocation failed", "function", rec.Function, "request_id", id,
				"attempts", rec.Attempts, "error_type", rec.ErrorType, "error", rec.Error)
		}
		q.retire(id, true)
		return
	}
	q.mu.Lock()
	if !q.closed {
		q.scheduleLocked(id, rec.NextAttempt)
	}
	q.mu.Unlock()
}

// throttleBackoff is the wait before the n-th run of an invocation kept
// from running: 1 s doubling, at most 5 min.
func throttleBackoff(n int) time.Duration {
	d := time.Second << min(max(n-1, 0), 9)
	return min(d, 5*time.Minute)
}

// retire notes that id is no longer pending (when final) and prunes the
// oldest final records past KeepRecords.
func (q *queue) retire(id string, final bool) {
	if !final {
		// Unreadable or unwritable: it stays for the next worker; this
		// one no longer counts it as runnable.
		return
	}
	q.mu.Lock()
	q.pending--
	excess := q.total - q.cfg.KeepRecords
	q.mu.Unlock()
	if excess <= 0 {
		return
	}
	// A few at a time: the cost stays bounded per invocation.
	excess = min(excess, 16)
	removed := 0
	err := q.db.Update(func(tx *bolt.Tx) error {
		recs, order := tx.Bucket(asyncBucket), tx.Bucket(orderBucket)
		c := order.Cursor()
		for k, v := c.First(); k != nil && removed < excess; {
			var rec Record
			if rv := recs.Get(v); rv != nil {
				if err := json.Unmarshal(rv, &rec); err != nil || !Final(rec.State) {
					k, v = c.Next()
					continue
				}
				if err := recs.Delete(v); err != nil {
					return err
				}
			}
			if err := c.Delete(); err != nil {
				return err
			}
			removed++
			k, v = c.Seek(k)
		}
		return nil
	})
	if err != nil {
		q.log.Warn("pruning asynchronous invocation records", "err", err)
		return
	}
	q.mu.Lock()
	q.total -= removed
	q.mu.Unlock()
}

// Get returns id's record.
func (q *queue) Get(id string) (Record, error) {
	var rec Record
	err := q.db.View(func(tx *bolt.Tx) error {
		v := tx.Bucket(asyncBucket).Get([]byte(id))
		if v == nil {
			return fmt.Errorf("%s: %w", id, ErrNoRecord)
		}
		return json.Unmarshal(v, &rec)
	})
	return rec, err
}

// List returns up to limit records (all if limit <= 0), newest first,
// of function fn and in state state when they are not empty.
func (q *queue) List(fn, state string, limit int) ([]Record, error) {
	out := []Record{}
	err := q.db.View(func(tx *bolt.Tx) error {
		recs := tx.Bucket(asyncBucket)
		c := tx.Bucket(orderBucket).Cursor()
		for k, id := c.Last(); k != nil; k, id = c.Prev() {
			v := recs.Get(id)
			if v == nil {
				continue
			}
			var rec Record
			if err := json.Unmarshal(v, &rec); err != nil {
				return fmt.Errorf("async record %s: %w", id, err)
			}
			if (fn != "" && rec.Function != fn) || (state != "" && rec.State != state) {
				continue
			}
			out = append(out, rec)
			if limit > 0 && len(out) >= limit {
				break
			}
		}
		return nil
	})
	return out, err
}
