package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	hworker "github.com/hearth-run/hearth/internal/worker"
)

// fdCount is the number of descriptors process pid holds.
func fdCount(t *testing.T, pid int) int {
	t.Helper()
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

// dialFrom connects to addr from the loopback address src (all of
// 127/8 is the host's), so that one test can be many client addresses.
func dialFrom(src, addr string) (net.Conn, error) {
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 2 * time.Second}
	return d.Dial("tcp", addr)
}

func p50(d []time.Duration) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	return s[len(s)/2]
}

// flood is a slow-connection attack that stops by itself: header senders
// that send a request's head a byte at a time, and body senders whose
// head is complete but whose body trickles in.
type flood struct {
	addr  string
	until time.Time
	wg    sync.WaitGroup
	// cut counts connections the server closed before the flood ended,
	// timedOut those among them it closed after 1.5 to 5 s (a header
	// timeout, not a cap); statuses counts the answers the body senders
	// got.
	cut, timedOut atomic.Int64
	mu            sync.Mutex
	statuses      map[int]int
}

// headers runs a sender that opens connections from src and writes a
// never-ending request head, byte by byte, until the flood ends.
func (f *flood) headers(src string) {
	f.wg.Add(1)
	go func() {
		defer f.wg.Done()
		for time.Now().Before(f.until) {
			c, err := dialFrom(src, f.addr)
			if err != nil {
				time.Sleep(100 * time.Millisecond)
				continue
			}
			t0 := time.Now()
			closed := make(chan struct{})
			go func() { io.Copy(io.Discard, c); close(closed) }()
			io.WriteString(c, "POST /run/victim HTTP/1.1\r\nHost: hearth\r\nX-Pad: ")
			t := time.NewTicker(100 * time.Millisecond)
		trickle:
			for {
				select {
				case <-closed:
					if time.Now().Before(f.until) {
						f.cut.Add(1)
						if d := time.Since(t0); d > 1500*time.Millisecond && d < 5*time.Second {
							f.timedOut.Add(1)
						}
					}
					break trickle
				case <-t.C:
					if !time.Now().Before(f.until) {
						break trickle
					}
					c.Write([]byte("a"))
				}
			}
			t.Stop()
			c.Close()
			<-closed
			time.Sleep(250 * time.Millisecond)
		}
	}()
}

// bodies runs a sender that posts invocations from src whose body
// arrives a byte at a time, until the flood ends.
func (f *flood) bodies(src string) {
	f.wg.Add(1)
	go func() {
		defer f.wg.Done()
		for time.Now().Before(f.until) {
			c, err := dialFrom(src, f.addr)
			if err != nil {
				time.Sleep(100 * time.Millisecond)
				continue
			}
			status := make(chan int, 1)
			go func() {
				resp, err := http.ReadResponse(bufio.NewReader(c), nil)
				if err != nil {
					status <- 0
					return
				}
				resp.Body.Close()
				status <- resp.StatusCode
			}()
			io.WriteString(c, "POST /run/victim HTTP/1.1\r\nHost: hearth\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n")
			t := time.NewTicker(100 * time.Millisecond)
			code := -1
		trickle:
			for {
				select {
				case code = <-status:
					break trickle
				case <-t.C:
					if !time.Now().Before(f.until) {
						break trickle
					}
					c.Write([]byte(" "))
				}
			}
			t.Stop()
			c.Close()
			if code >= 0 {
				f.mu.Lock()
				f.statuses[code]++
				f.mu.Unlock()
			} else {
				<-status
			}
			time.Sleep(250 * time.Millisecond)
		}
	}()
}

// TestSlowConnectionFlood floods a worker with slow connections from
// several client addresses while another client invokes a function and a
// prober checks /healthz: the invocations keep their latency, /healthz
// keeps answering, the worker's descriptors stay bounded and return to
// their baseline once the flood is over.
func TestSlowConnectionFlood(t *testing.T) {
	const maxConns, perIP = 64, 24
	// Invocations open (on loopback), as on a public gateway: the
	// flood needs no token.
	w := startWorker(t, "--open-invoke", "--read-header-timeout", "2s", "--read-timeout", "3s",
		"--max-conns", fmt.Sprint(maxConns), "--max-conns-per-ip", fmt.Sprint(perIP), "--max-requests-per-ip", "8")
	w.deployDir("victim", fn(t, "f.py", "def f(e):\n    return e\n"))
	addr := strings.TrimPrefix(w.url, "http://")
	pid := w.cmd.Process.Pid

	// The victim: one keep-alive client from 127.0.0.1, as a real client
	// is; warm first.
	victim := &http.Client{Timeout: 30 * time.Second}
	call := func() (time.Duration, error) {
		t0 := time.Now()
		resp, err := victim.Post(w.url+"/run/victim", "application/json", strings.NewReader(`{"n": 1}`))
		if err != nil {
			return 0, err
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || !bytes.Contains(body, []byte(`"n"`)) {
			return 0, fmt.Errorf("status %d: %s", resp.StatusCode, body)
		}
		return time.Since(t0), nil
	}
	for range 10 {
		if _, err := call(); err != nil {
			t.Fatal(err)
		}
	}
	// The usual latency: calls before the flood and after it, pooled, so
	// that the busy host's own drift does not count as the flood's.
	sample := func(n int) []time.Duration {
		var s []time.Duration
		for range n {
			d, err := call()
			if err != nil {
				t.Fatal(err)
			}
			s = append(s, d)
			time.Sleep(10 * time.Millisecond)
		}
		return s
	}
	base := sample(150)
	baseFDs := fdCount(t, pid)

	f := &flood{addr: addr, until: time.Now().Add(8 * time.Second), statuses: map[int]int{}}
	// Five attacker addresses, each with more slow connections than its
	// cap: together past the total cap.
	for _, src := range []string{"127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5"} {
		for range perIP + 8 {
			f.headers(src)
		}
	}
	for range 30 {
		f.bodies("127.0.0.6")
	}

	// The prober: a fresh connection per check, as a liveness probe.
	var probes, probeFails atomic.Int64
	var probeErr atomic.Value
	probeDone := make(chan struct{})
	go func() {
		defer close(probeDone)
		pc := &http.Client{Timeout: 3 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
		for time.Now().Before(f.until) {
			probes.Add(1)
			resp, err := pc.Get(w.url + "/healthz")
			if err == nil {
				body, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 || string(body) != "ok\n" {
					err = fmt.Errorf("status %d: %q", resp.StatusCode, body)
				}
			}
			if err != nil {
				probeFails.Add(1)
				probeErr.Store(err.Error())
			}
			time.Sleep(200 * time.Millisecond)
		}
	}()

	// Let the flood build up, then measure the victim while it lasts.
	time.Sleep(time.Second)
	var during []time.Duration
	peakFDs := 0
	for time.Now().Before(f.until.Add(-500 * time.Millisecond)) {
		d, err := call()
		if err != nil {
			t.Fatalf("invocation during the flood: %v", err)
		}
		during = append(during, d)
		peakFDs = max(peakFDs, fdCount(t, pid))
		time.Sleep(10 * time.Millisecond)
	}
	f.wg.Wait()
	<-probeDone

	t.Logf("fds: %d before the flood, %d peak; slow heads cut by the server: %d (%d by the header timeout); "+
		"slow bodies answered: %v; probes: %d, failed %d",
		baseFDs, peakFDs, f.cut.Load(), f.timedOut.Load(), f.statuses, probes.Load(), probeFails.Load())
	if n := probeFails.Load(); n > 0 {
		t.Errorf("%d of %d /healthz probes failed during the flood, last: %v", n, probes.Load(), probeErr.Load())
	}
	// Bounded: the served connections, the overflow responder's, and a
	// margin for the worker's own.
	if limit := baseFDs + maxConns + 64 + 16; peakFDs > limit {
		t.Errorf("worker held %d descriptors during the flood, more than %d (baseline %d + caps)", peakFDs, limit, baseFDs)
	}
	if f.timedOut.Load() == 0 {
		t.Error("the server cut no slow header sender by its header timeout (read-header-timeout 2s)")
	}
	f.mu.Lock()
	timeouts, limited := f.statuses[http.StatusRequestTimeout], f.statuses[http.StatusTooManyRequests]
	f.mu.Unlock()
	if timeouts == 0 || limited == 0 {
		t.Errorf("slow bodies got %v, want some 408 (read-timeout 3s) and some 429 (8 requests per address)", f.statuses)
	}

	// After the flood the descriptors go back to the baseline.
	deadline := time.Now().Add(30 * time.Second)
	for {
		n := fdCount(t, pid)
		if n <= baseFDs+8 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("worker holds %d descriptors 30s after the flood, baseline %d", n, baseFDs)
		}
		time.Sleep(100 * time.Millisecond)
	}
	after := sample(150)
	usual, d := p50(append(base, after...)), p50(during)
	t.Logf("victim p50: %v before, %v after, %v during the flood (%d calls)", p50(base), p50(after), d, len(during))
	// Twice the usual plus a margin for the host: on a busy 2-CPU host
	// (the suite's --busy hogs, other packages' tests) a call waits for
	// a scheduler slice or two (3 ms each) at its wake-ups, and the
	// flood's own clients run here too: 5.4 ms was seen against a usual
	// 1.2 ms. A flood that reached the victim costs it seconds (the
	// header and read timeouts), not milliseconds.
	if limit := 2*usual + 5*time.Millisecond; d > limit {
		t.Errorf("victim p50 %v during the flood, more than %v (twice its usual %v and 5 ms)", d, limit, usual)
	}
}

// TestHTTPLimits checks the API's per-request bounds: a call longer than
// the read and write timeouts is not cut, a client's requests past its cap
// get 429 while another client's and /healthz go through, and a body that
// trickles in gets 408.
func TestHTTPLimits(t *testing.T) {
	w := startWorker(t, "--open-invoke", "--config", writeConfig(t, "http:\n  read_timeout: 1s\n  write_timeout: 1s\n  max_requests_per_ip: 2\n"))
	w.deployDir("sleep", fn(t,
		"f.py", "import time\ndef f(e):\n    time.sleep(e['s'])\n    return 'slept'\n",
		"function.yaml", "timeout_s: 20\nmax_concurrency: 3\n"))
	post := func(c *http.Client, secs float64) (*http.Response, string, error) {
		resp, err := c.Post(w.url+"/run/sleep", "application/json", strings.NewReader(fmt.Sprintf(`{"s": %g}`, secs)))
		if err != nil {
			return nil, "", err
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		return resp, string(body), nil
	}
	local := &http.Client{Timeout: 60 * time.Second}
	if resp, body, err := post(local, 0); err != nil || resp.StatusCode != 200 {
		t.Fatalf("warm-up: %v %v %s", err, resp, body)
	}

	// Longer than both timeouts: the call is not cut.
	resp, body, err := post(local, 2.5)
	if err != nil || resp.StatusCode != 200 || !strings.Contains(body, "slept") {
		t.Fatalf("a 2.5 s call with 1 s read and write timeouts: %v %v %s", err, resp, body)
	}

	// Two calls in flight from 127.0.0.1: a third from it gets 429, one
	// from 127.0.0.2 and /healthz get through.
	var wg sync.WaitGroup
	errs := make(chan error, 2)
	for range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := &http.Client{Timeout: 60 * time.Second, Transport: &http.Transport{}}
			if resp, body, err := post(c, 3); err != nil || resp.StatusCode != 200 {
				errs <- fmt.Errorf("a call within the cap: %v %v %s", err, resp, body)
			}
		}()
	}
	// Wait until both are in flight: the worker reports them busy (asked
	// from another address: this one is at its cap).
	other := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) { return dialFrom("127.0.0.2", addr) }}}
	deadline := time.Now().Add(20 * time.Second)
	for {
		req, _ := http.NewRequest(http.MethodGet, w.url+"/v1/status", nil)
		req.Header.Set("Authorization", "Bearer "+w.token)
		resp, err := other.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var st hworker.Status
		err = json.NewDecoder(resp.Body).Decode(&st)
		resp.Body.Close()
		if err != nil {
			t.Fatal(err)
		}
		busy := 0
		for _, s := range st.Sandboxes {
			if s.State == "busy" {
				busy++
			}
		}
		if busy >= 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the two calls did not start: %+v", st.Sandboxes)
		}
		time.Sleep(20 * time.Millisecond)
	}
	fresh := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, body, err = post(fresh, 0)
	if err != nil || resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Retry-After") == "" {
		t.Errorf("a third call from the same address: %v %v %s, want 429 with Retry-After", err, resp, body)
	}
	if resp, body, err := post(other, 0); err != nil || resp.StatusCode != 200 {
		t.Errorf("a call from another address: %v %v %s", err, resp, body)
	}
	if resp, err := fresh.Get(w.url + "/healthz"); err != nil || resp.StatusCode != 200 {
		t.Errorf("/healthz while the address is at its cap: %v %v", err, resp)
	} else {
		resp.Body.Close()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}

	// A body that stops coming: 408 after the read timeout.
	c, err := net.Dial("tcp", strings.TrimPrefix(w.url, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	t0 := time.Now()
	io.WriteString(c, "POST /run/sleep HTTP/1.1\r\nHost: hearth\r\nContent-Length: 10\r\n\r\n{")
	c.SetReadDeadline(time.Now().Add(20 * time.Second))
	r, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("a stalled body: %v", err)
	}
	b, _ := io.ReadAll(r.Body)
	if r.StatusCode != http.StatusRequestTimeout || !strings.Contains(string(b), "RequestTimeout") {
		t.Errorf("a stalled body: %d %s, want 408 RequestTimeout", r.StatusCode, b)
	}
	if d := time.Since(t0); d < 900*time.Millisecond || d > 10*time.Second {
		t.Errorf("a stalled body was answered after %v, want about the 1 s read timeout", d)
	}
}

// TestConnectionCapKeepsHealthz fills the worker's connection cap: a new
// connection gets /healthz answered and anything else 503 with
// Retry-After, and once the holders leave, calls go through again.
func TestConnectionCapKeepsHealthz(t *testing.T) {
	w := startWorker(t, "--open-invoke", "--max-conns", "4", "--max-conns-per-ip", "-1")
	w.deployDir("echo", fn(t, "f.py", "def f(e):\n    return e\n"))
	w.mustInvoke("echo", "{}")
	addr := strings.TrimPrefix(w.url, "http://")
	// The harness's client may hold an idle connection: fill what is left
	// with idle connections, then check that the cap is reached.
	var held []net.Conn
	defer func() {
		for _, c := range held {
			c.Close()
		}
	}()
	fresh := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	// A probe's own connection stays open (and counted) for a while after
	// its answer: Go's server waits 500 ms before closing a
	// "Connection: close" connection, to avoid a reset. So the cap counts
	// as reached only when a probe says so with no earlier probe's
	// connection still open; otherwise hold one more and look again.
	overloaded := func() (bool, *http.Response, []byte) {
		resp, err := fresh.Get(w.url + "/healthz")
		if err != nil {
			t.Fatalf("/healthz while filling the cap: %v", err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		return resp.Header.Get("X-Hearth-Overloaded") == "connections", resp, body
	}
	capped := false
	for range 8 {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, c)
		time.Sleep(time.Second) // the last probe's connection is gone
		if ok, _, _ := overloaded(); ok {
			capped = true
			break
		}
	}
	if !capped {
		t.Fatalf("/healthz never said overloaded with %d idle connections and --max-conns 4", len(held))
	}
	// Answers past the cap use no slot, so the cap stays reached.
	resp, err := fresh.Post(w.url+"/run/echo", "application/json", strings.NewReader("{}"))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" ||
		!strings.Contains(string(body), "TooManyConnections") {
		t.Errorf("a call past the cap: %d %v %s, want 503 TooManyConnections with Retry-After", resp.StatusCode, resp.Header, body)
	}
	ok, resp, body := overloaded()
	if !ok || resp.StatusCode != 200 || string(body) != "ok\n" {
		t.Errorf("/healthz past the cap: %d %q %v", resp.StatusCode, body, resp.Header)
	}
	for _, c := range held {
		c.Close()
	}
	held = nil
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err := fresh.Post(w.url+"/run/echo", "application/json", strings.NewReader("{}"))
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("calls still refused 10 s after the idle connections closed: %v %v", err, resp)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
