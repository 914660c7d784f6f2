package client

import (
	"context"
	"net/http"
	"net/url"
	"strconv"

	"github.com/hearth-run/hearth/api/types"
)

// AsyncList is GET /v1/async-invocations (see types.AsyncList).
type AsyncList = types.AsyncList

// AsyncInvocations lists up to n records (0: all), of function fn and in
// state state when they are not empty.
func (c *Client) AsyncInvocations(ctx context.Context, fn, state string, n int) (AsyncList, error) {
	q := url.Values{"n": {strconv.Itoa(n)}}
	if fn != "" {
		q.Set("function", fn)
	}
	if state != "" {
		q.Set("state", state)
	}
	var out AsyncList
	_, _, err := c.do(ctx, http.MethodGet, "/v1/async-invocations?"+q.Encode(), nil, &out)
	return out, err
}

// AsyncInvocation returns the record of one Event invocation, by the
// request id the Lambda API answered.
func (c *Client) AsyncInvocation(ctx context.Context, id string) (types.AsyncRecord, error) {
	var rec types.AsyncRecord
	_, _, err := c.do(ctx, http.MethodGet, "/v1/async-invocations/"+url.PathEscape(id), nil, &rec)
	return rec, err
}
