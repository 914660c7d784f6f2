// Package client is a Go client for Hearth's HTTP API, used by the CLI, the
// benchmarks and the end-to-end tests.
package client

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/hearth-run/hearth/api/types"
)

// DefaultURL is where a worker listens by default.
const DefaultURL = "http://127.0.0.1:7878"

// Client talks to one worker. The zero value is not usable; use New.
type Client struct {
	base  string
	token string
	http  *http.Client
}

// New returns a client for the worker at base (for example DefaultURL).
func New(base, token string) *Client {
	return &Client{
		base:  strings.TrimRight(base, "/"),
		token: token,
		http: &http.Client{Transport: &http.Transport{
			MaxIdleConnsPerHost: 64,
			IdleConnTimeout:     90 * time.Second,
		}},
	}
}

// Error is an error response from the worker: its status, the error
// type and message of its body (types.Error), and the body itself.
type Error struct {
	Status  int
	Type    string `json:"errorType"`
	Message string `json:"errorMessage"`
	Body    []byte
}

// Error describes the response: its error type, status and message.
func (e *Error) Error() string {
	if e.Message != "" {
		return fmt.Sprintf("%s (HTTP %d): %s", e.Type, e.Status, e.Message)
	}
	return fmt.Sprintf("HTTP %d: %s", e.Status, bytes.TrimSpace(e.Body))
}

func (c *Client) do(ctx context.Context, method, path string, body io.Reader, out any) (*http.Response, []byte, error) {
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, body)
	if err != nil {
		return nil, nil, err
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return resp, nil, err
	}
	if resp.StatusCode >= 300 {
		var body types.Error
		json.Unmarshal(data, &body) // a body that is not one leaves Type and Message empty
		return resp, data, &Error{Status: resp.StatusCode, Type: body.Type, Message: body.Message, Body: data}
	}
	if out != nil {
		if err := json.Unmarshal(data, out); err != nil {
			return resp, data, fmt.Errorf("decoding %s %s: %w", method, path, err)
		}
	}
	return resp, data, nil
}

// Deploy uploads an archive (tar.gz or zip) as function name.
func (c *Client) Deploy(ctx context.Context, name string, archive io.Reader) (types.Function, error) {
	var fn types.Function
	_, _, err := c.do(ctx, http.MethodPut, "/v1/functions/"+url.PathEscape(name), archive, &fn)
	return fn, err
}

// List lists deployed functions.
func (c *Client) List(ctx context.Context) ([]types.Function, error) {
	var fns []types.Function
	_, _, err := c.do(ctx, http.MethodGet, "/v1/functions", nil, &fns)
	return fns, err
}

// Get describes one function.
func (c *Client) Get(ctx context.Context, name string) (types.Function, error) {
	var fn types.Function
	_, _, err := c.do(ctx, http.MethodGet, "/v1/functions/"+url.PathEscape(name), nil, &fn)
	return fn, err
}

// Delete removes a function.
func (c *Client) Delete(ctx context.Context, name string) error {
	_, _, err := c.do(ctx, http.MethodDelete, "/v1/functions/"+url.PathEscape(name), nil, nil)
	return err
}

// Logs returns up to n output lines of a function (all the worker keeps
// if n is 0): the newest, or with since > 0 the first from Seq since on.
func (c *Client) Logs(ctx context.Context, name string, n int, since uint64) (types.LogTail, error) {
	var out types.LogTail
	path := "/v1/functions/" + url.PathEscape(name) + "/logs?n=" + strconv.Itoa(n)
	if since > 0 {
		path += "&since=" + strconv.FormatUint(since, 10)
	}
	_, _, err := c.do(ctx, http.MethodGet, path, nil, &out)
	return out, err
}

// Status returns the worker's status.
func (c *Client) Status(ctx context.Context) (types.Status, error) {
	var st types.Status
	_, _, err := c.do(ctx, http.MethodGet, "/v1/status", nil, &st)
	return st, err
}

// Invocation is the outcome of Invoke.
type Invocation struct {
	Body   []byte
	Path   string // start path: warm, cold (later fork, snapshot)
	InitMs float64
	RunMs  float64
	// WaitMs is how long the call waited for a concurrency slot, for
	// memory and for its turn to start (X-Hearth-Wait-Ms).
	WaitMs float64
	// TurnWaitMs is the part of WaitMs spent waiting for a turn to start
	// (X-Hearth-Turn-Wait-Ms).
	TurnWaitMs float64
	Revision   string
	Latency    time.Duration // as the client saw it
	// InitError is the error type of a failed start (X-Hearth-Init-Error):
	// the handler never ran, and InitMs is the time until the failure.
	InitError string
}

// Invoke calls function name with a JSON event. A handler error is returned
// as an *Error whose Body holds the Lambda-style error.
func (c *Client) Invoke(ctx context.Context, name string, event []byte) (Invocation, error) {
	t0 := time.Now()
	resp, data, err := c.do(ctx, http.MethodPost, "/v1/functions/"+url.PathEscape(name)+"/invoke", bytes.NewReader(event), nil)
	inv := Invocation{Body: data, Latency: time.Since(t0)}
	if resp != nil {
		inv.Path = resp.Header.Get("X-Hearth-Start-Path")
		inv.Revision = resp.Header.Get("X-Hearth-Revision")
		inv.InitMs, _ = strconv.ParseFloat(resp.Header.Get("X-Hearth-Init-Ms"), 64)
		inv.RunMs, _ = strconv.ParseFloat(resp.Header.Get("X-Hearth-Run-Ms"), 64)
		inv.WaitMs, _ = strconv.ParseFloat(resp.Header.Get("X-Hearth-Wait-Ms"), 64)
		inv.TurnWaitMs, _ = strconv.ParseFloat(resp.Header.Get("X-Hearth-Turn-Wait-Ms"), 64)
		inv.InitError = resp.Header.Get("X-Hearth-Init-Error")
	}
	return inv, err
}

// Loopback reports whether base, a worker URL, names this host's
// loopback (an IP loopback address or localhost).
func Loopback(base string) bool {
	u, err := url.Parse(base)
	if err != nil {
		return false
	}
	h := u.Hostname()
	if h == "localhost" {
		return true
	}
	a, err := netip.ParseAddr(h)
	return err == nil && a.IsLoopback()
}

// Healthy reports whether the worker answers /healthz.
func (c *Client) Healthy(ctx context.Context) bool {
	_, _, err := c.do(ctx, http.MethodGet, "/healthz", nil, nil)
	return err == nil
}

// Packages lists the worker's installed packages.
func (c *Client) Packages(ctx context.Context) (types.PackageList, error) {
	var l types.PackageList
	_, _, err := c.do(ctx, http.MethodGet, "/v1/packages", nil, &l)
	return l, err
}

// Zygotes returns the worker's live zygote tree.
func (c *Client) Zygotes(ctx context.Context) (types.ZygoteTree, error) {
	var z types.ZygoteTree
	_, _, err := c.do(ctx, http.MethodGet, "/v1/zygotes", nil, &z)
	return z, err
}
