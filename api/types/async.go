package types

import "time"

// AsyncRecord is the durable record of one accepted Event invocation.
type AsyncRecord struct {
	RequestID string `json:"request_id"`
	Function  string `json:"function"`
	State     string `json:"state"`
	// Attempts counts the runs started, each persisted before it starts:
	// a run cut by the worker's end (a crash, kill -9) counts, and the
	// invocation runs again when the worker is back.
	Attempts int `json:"attempts"`
	// FunctionErrors counts the runs that ended in a function error (an
	// exception, a timeout, running out of memory, a failed start); after
	// MaxFunctionErrors the invocation fails, as Lambda's two retries.
	FunctionErrors int       `json:"function_errors"`
	Accepted       time.Time `json:"accepted"`
	Updated        time.Time `json:"updated"`
	// NextAttempt is when a retrying invocation runs again.
	NextAttempt time.Time `json:"next_attempt,omitzero"`
	// ErrorType and Error describe the last failed run.
	ErrorType string `json:"error_type,omitempty"`
	Error     string `json:"error,omitempty"`
	// Revision is the function revision the last run ran.
	Revision string `json:"revision,omitempty"`
	// Seq orders records by acceptance.
	Seq uint64 `json:"seq"`
}

// AsyncList is GET /v1/async-invocations: records of the Event
// invocations the Lambda API accepted, newest first.
type AsyncList struct {
	Invocations []AsyncRecord `json:"invocations"`
	// Pending counts the invocations not final; MaxQueued bounds them.
	Pending     int `json:"pending"`
	Records     int `json:"records"`
	MaxQueued   int `json:"max_queued"`
	KeepRecords int `json:"keep_records"`
}
