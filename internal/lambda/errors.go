package lambda

import (
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
)

// Sentinel errors.
var (
	// ErrQueueFull: the asynchronous invocation queue holds as many
	// invocations as it may; the caller gets 429.
	ErrQueueFull = errors.New("asynchronous invocation queue full")
	// ErrNoRecord: no asynchronous invocation has that request id.
	ErrNoRecord = errors.New("no such asynchronous invocation")
	// ErrClosed: the server is closed.
	ErrClosed = errors.New("lambda API closed")
	// ErrBadCredentials: a credentials file that cannot be used.
	ErrBadCredentials = errors.New("bad Lambda API credentials file")
)

// Lambda's error types, as the x-amzn-ErrorType header names them.
const (
	typeNotFound        = "ResourceNotFoundException"
	typeInvalidParam    = "InvalidParameterValueException"
	typeInvalidContent  = "InvalidRequestContentException"
	typeConflict        = "ResourceConflictException"
	typeTooLarge        = "RequestEntityTooLargeException"
	typeService         = "ServiceException"
	typeTooMany         = "TooManyRequestsException"
	typePrecondition    = "PreconditionFailedException"
	typeBadSignature    = "InvalidSignatureException"
	typeUnrecognized    = "UnrecognizedClientException"
	typeMissingAuth     = "MissingAuthenticationTokenException"
	typeAccessDenied    = "AccessDeniedException"
	typeUnknownOp       = "UnknownOperationException"
	typeUnsupportedType = "UnsupportedMediaTypeException"
)

// awsError is an error answered in Lambda's shape: the type in the
// x-amzn-ErrorType header and a JSON body with "Type" (User or Service)
// and the message, under "Message" or "message" as the service model
// spells it for that type (botocore reads either).
type awsError struct {
	Status int
	Type   string
	Msg    string
	// Reason is TooManyRequestsException's ThrottleReason.
	Reason string
}

func (e *awsError) Error() string { return e.Type + ": " + e.Msg }

func newError(status int, typ, msg string) *awsError {
	return &awsError{Status: status, Type: typ, Msg: msg}
}

func notFound(msg string) *awsError { return newError(http.StatusNotFound, typeNotFound, msg) }
func invalidParam(msg string) *awsError {
	return newError(http.StatusBadRequest, typeInvalidParam, msg)
}
func forbidden(typ, msg string) *awsError { return newError(http.StatusForbidden, typ, msg) }

// write sends e with request id reqID.
func (e *awsError) write(w http.ResponseWriter, reqID string) {
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("X-Amzn-Errortype", e.Type)
	if reqID != "" {
		h.Set("X-Amzn-Requestid", reqID)
	}
	body := map[string]string{"Type": "User"}
	if e.Status >= 500 {
		body["Type"] = "Service"
	}
	switch e.Type {
	case typeNotFound, typeService:
		body["Message"] = e.Msg
	default:
		body["message"] = e.Msg
	}
	if e.Status == http.StatusTooManyRequests {
		h.Set("Retry-After", strconv.Itoa(1))
		if e.Reason != "" {
			body["Reason"] = e.Reason
		}
	}
	w.WriteHeader(e.Status)
	json.NewEncoder(w).Encode(body)
}
