package lambda

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/hearth-run/hearth/internal/registry"
	"github.com/hearth-run/hearth/internal/runtime"
	"github.com/hearth-run/hearth/internal/worker"
)

// maxLogResult is how much of a call's log X-Amz-Log-Result carries, as
// on Lambda: its last 4 KB.
const maxLogResult = 4 << 10

// Invocation types.
const (
	invokeSync  = "RequestResponse"
	invokeAsync = "Event"
	invokeDry   = "DryRun"
)

func ms(d time.Duration) string { return strconv.FormatFloat(d.Seconds()*1000, 'f', 3, 64) }

func (s *Server) invoke(w http.ResponseWriter, r *http.Request, c *call) {
	typ := r.Header.Get("X-Amz-Invocation-Type")
	if typ == "" {
		typ = invokeSync
	}
	logType := r.Header.Get("X-Amz-Log-Type")
	switch {
	case typ != invokeSync && typ != invokeAsync && typ != invokeDry:
		s.fail(w, c, invalidParam("X-Amz-Invocation-Type must be RequestResponse, Event or DryRun"))
		return
	case logType != "" && logType != "None" && logType != "Tail":
		s.fail(w, c, invalidParam("X-Amz-Log-Type must be None or Tail"))
		return
	}
	limit := s.cfg.MaxBody
	if typ == invokeAsync {
		limit = s.cfg.Async.MaxPayload
	}
	if int64(len(c.body)) > limit {
		s.fail(w, c, newError(http.StatusRequestEntityTooLarge, typeTooLarge,
			fmt.Sprintf("Request must be smaller than %d bytes for the Invoke operation", limit)))
		return
	}
	if len(c.body) > 0 && !json.Valid(c.body) {
		s.fail(w, c, newError(http.StatusBadRequest, typeInvalidContent, "Could not parse request body into json: the payload is not valid JSON"))
		return
	}
	fn, err := s.lookup(r, c)
	if err != nil {
		s.fail(w, c, err)
		return
	}
	switch typ {
	case invokeDry:
		w.WriteHeader(http.StatusNoContent)
		return
	case invokeAsync:
		if err := s.q.Accept(fn.Name, c.id, c.body); err != nil {
			if errors.Is(err, ErrQueueFull) {
				err = fmt.Errorf("%w (%d invocations accepted and not finished); retry later", err, s.cfg.Async.MaxQueued)
			}
			s.fail(w, c, err)
			return
		}
		w.WriteHeader(http.StatusAccepted)
		return
	}
	s.invokeSync(w, r, c, fn, logType == "Tail")
}

// invokeSync runs a RequestResponse invocation.
func (s *Server) invokeSync(w http.ResponseWriter, r *http.Request, c *call, fn registry.Function, tail bool) {
	var before worker.LogTail
	if tail {
		before = s.wk.Logs(fn.Name, 1, 0)
	}
	t0 := time.Now()
	res, err := s.wk.InvokeID(r.Context(), fn.Name, c.body, c.id)
	took := time.Since(t0)
	h := w.Header()
	if res.Path != "" {
		h.Set("X-Amz-Executed-Version", "$LATEST")
		h.Set("X-Hearth-Start-Path", res.Path)
		h.Set("X-Hearth-Init-Ms", ms(res.Init))
		if !res.InitFailed {
			h.Set("X-Hearth-Run-Ms", ms(res.Run))
		}
		h.Set("X-Hearth-Revision", res.Revision)
	}
	// A function error is the function's: 200, with the error in
	// Lambda's shape.
	var ferr *runtime.HandlerError
	var le *worker.LoadError
	switch {
	case err == nil && res.Err != nil:
		ferr = res.Err
	case errors.As(err, &le):
		ferr = le.Err
	case errors.Is(err, worker.ErrTimeout):
		ferr = &runtime.HandlerError{Type: "Sandbox.Timedout",
			Message: fmt.Sprintf("RequestId: %s Error: Task timed out after %d.00 seconds", c.id, fn.Spec.TimeoutS)}
	case errors.Is(err, worker.ErrOOM):
		ferr = &runtime.HandlerError{Type: "Runtime.OutOfMemory",
			Message: fmt.Sprintf("RequestId: %s Error: Runtime exited with error: signal: killed (memory limit of %d MB)", c.id, fn.Spec.MemoryMB)}
	case errors.Is(err, worker.ErrCrashed):
		ferr = &runtime.HandlerError{Type: "Runtime.ExitError",
			Message: fmt.Sprintf("RequestId: %s Error: Runtime exited with error: %s", c.id, s.redact(err.Error()))}
	case errors.Is(err, context.Canceled) && r.Context().Err() != nil:
		return // the client is gone
	case err != nil:
		s.fail(w, c, err)
		return
	case int64(len(res.Body)) > s.cfg.MaxBody:
		ferr = &runtime.HandlerError{Type: "Function.ResponseSizeTooLarge",
			Message: fmt.Sprintf("Response payload size exceeded maximum allowed payload size (%d bytes).", s.cfg.MaxBody)}
	}
	if tail {
		h.Set("X-Amz-Log-Result", s.logResult(c, fn, before, res, took))
	}
	h.Set("Content-Type", "application/json")
	if ferr != nil {
		if ferr.StackTrace == nil {
			ferr.StackTrace = []string{}
		}
		h.Set("X-Amz-Function-Error", "Unhandled")
		b, _ := json.Marshal(ferr)
		w.WriteHeader(http.StatusOK)
		w.Write(b)
		return
	}
	w.WriteHeader(http.StatusOK)
	w.Write(res.Body)
}

// logResult is X-Amz-Log-Result: the last 4 KB, base64, of the call's
// log as Lambda writes it (START, the function's lines, END, REPORT).
// The lines are the function's that reached the worker during the call:
// with calls of the function running at once, theirs are among them.
func (s *Server) logResult(c *call, fn registry.Function, before worker.LogTail, res worker.Result, took time.Duration) string {
	// The worker returns a call once the lines its sandbox wrote before
	// answering are in the log (see worker's drainOutput).
	since := before.Next
	if since == 0 {
		since = 1
	}
	after := s.wk.Logs(fn.Name, 0, since)
	if after.Epoch != before.Epoch {
		after = s.wk.Logs(fn.Name, 0, 1)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "START RequestId: %s Version: $LATEST\n", c.id)
	for _, l := range after.Lines {
		b.WriteString(s.redact(l.Text))
		b.WriteByte('\n')
	}
	fmt.Fprintf(&b, "END RequestId: %s\n", c.id)
	run := res.Run
	if run == 0 {
		run = took
	}
	fmt.Fprintf(&b, "REPORT RequestId: %s\tDuration: %.2f ms\tBilled Duration: %d ms\tMemory Size: %d MB",
		c.id, run.Seconds()*1000, int64(run/time.Millisecond)+1, fn.Spec.MemoryMB)
	if res.Path != "" && res.Path != "warm" {
		fmt.Fprintf(&b, "\tInit Duration: %.2f ms", res.Init.Seconds()*1000)
	}
	if res.Path != "" {
		fmt.Fprintf(&b, "\tStart Path: %s", res.Path)
	}
	b.WriteString("\t\n")
	out := b.String()
	if len(out) > maxLogResult {
		out = out[len(out)-maxLogResult:]
	}
	return base64.StdEncoding.EncodeToString([]byte(out))
}

// attempt runs one attempt of an Event invocation for the queue.
func (s *Server) attempt(ctx context.Context, rec Record, payload []byte) outcome {
	res, err := s.wk.InvokeID(ctx, rec.Function, payload, rec.RequestID)
	out := outcome{revision: res.Revision}
	var le *worker.LoadError
	switch {
	case err == nil && res.Err == nil:
		out.kind = outcomeOK
	case err == nil:
		out.kind, out.errType, out.msg = outcomeFuncError, res.Err.Type, res.Err.Message
	case errors.As(err, &le):
		out.kind, out.errType, out.msg = outcomeFuncError, le.Err.Type, le.Err.Message
	case errors.Is(err, worker.ErrNotFound):
		out.kind, out.errType, out.msg = outcomeGone, typeNotFound, "the function was deleted"
	case errors.Is(err, worker.ErrMemoryTooLarge):
		out.kind, out.errType, out.msg = outcomeGone, typeInvalidParam, s.redact(err.Error())
	case errors.Is(err, worker.ErrTimeout):
		out.kind, out.errType = outcomeFuncError, "Sandbox.Timedout"
		out.msg = "Task timed out"
		if fn, gerr := s.reg.Get(rec.Function); gerr == nil {
			out.msg = fmt.Sprintf("Task timed out after %d.00 seconds", fn.Spec.TimeoutS)
		}
	case errors.Is(err, worker.ErrOOM):
		out.kind, out.errType, out.msg = outcomeFuncError, "Runtime.OutOfMemory", s.redact(err.Error())
	case errors.Is(err, worker.ErrCrashed), errors.Is(err, worker.ErrStart):
		out.kind, out.errType, out.msg = outcomeFuncError, "Runtime.ExitError", s.redact(err.Error())
	default:
		// Throttled, the pool full, the worker closing: not the
		// function's fault; it runs again later.
		out.kind, out.errType, out.msg = outcomeThrottled, typeTooMany, s.redact(err.Error())
	}
	return out
}

// listRecords answers GET /v1/async-invocations?function=&state=&n=: the
// newest records first (n, default 100; 0 for all).
func (s *Server) listRecords(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	n := 100
	if v := q.Get("n"); v != "" {
		var err error
		if n, err = strconv.Atoi(v); err != nil || n < 0 {
			hearthError(w, http.StatusBadRequest, "BadRequest", "n must be a non-negative integer")
			return
		}
	}
	state := q.Get("state")
	switch state {
	case "", StateQueued, StateRunning, StateRetrying, StateSucceeded, StateFailed:
	default:
		hearthError(w, http.StatusBadRequest, "BadRequest", "state must be queued, running, retrying, succeeded or failed")
		return
	}
	recs, err := s.q.List(q.Get("function"), state, n)
	if err != nil {
		s.cfg.Logger.Error("listing asynchronous invocations", "err", err)
		hearthError(w, http.StatusInternalServerError, "InternalError", s.redact(err.Error()))
		return
	}
	s.q.mu.Lock()
	pending, total := s.q.pending, s.q.total
	s.q.mu.Unlock()
	writeJSON(w, http.StatusOK, map[string]any{
		"invocations": recs, "pending": pending, "records": total,
		"max_queued": s.cfg.Async.MaxQueued, "keep_records": s.cfg.Async.KeepRecords,
	})
}

// getRecord answers GET /v1/async-invocations/{id}.
func (s *Server) getRecord(w http.ResponseWriter, r *http.Request) {
	rec, err := s.q.Get(r.PathValue("id"))
	if errors.Is(err, ErrNoRecord) {
		hearthError(w, http.StatusNotFound, "NotFound", "no asynchronous invocation "+r.PathValue("id")+" (or its record was pruned)")
		return
	}
	if err != nil {
		hearthError(w, http.StatusInternalServerError, "InternalError", s.redact(err.Error()))
		return
	}
	writeJSON(w, http.StatusOK, rec)
}

// hearthError answers in Hearth's own error shape (the /v1 API's).
func hearthError(w http.ResponseWriter, code int, typ, msg string) {
	writeJSON(w, code, map[string]string{"errorType": typ, "errorMessage": msg})
}
