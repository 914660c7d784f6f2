package api

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strconv"
	"sync"
	"time"
)

// Limits bound what clients can hold of the server: slow or many
// connections must not use up the worker's descriptors, and one client
// must not crowd out the others. Zero values mean the defaults; a
// negative value switches a cap or timeout off.
type Limits struct {
	// ReadHeaderTimeout bounds the time to receive a request's headers
	// (default 10s): a client sending them byte by byte is cut off.
	ReadHeaderTimeout time.Duration
	// ReadTimeout bounds the time to receive a whole request, headers
	// and body (default 60s). net/http lifts it once the body is read,
	// so a long invocation is not under it.
	ReadTimeout time.Duration
	// WriteTimeout bounds the time to write a response from its first
	// byte (default 60s). A handler's own work is not under it: an
	// invocation may run up to its function's timeout (and wait in the
	// queue before), and the client's disconnect cancels it.
	WriteTimeout time.Duration
	// IdleTimeout closes keep-alive connections idle that long (default
	// 2m).
	IdleTimeout time.Duration
	// MaxConns caps the open connections (default 1024). Connections
	// past it are answered by a small bounded responder: /healthz gets
	// its answer, anything else 503 with Retry-After.
	MaxConns int
	// MaxConnsPerIP caps one client address's open connections (default
	// 128); more are closed at once. Behind a proxy every client has the
	// proxy's address: raise it or switch it off (-1).
	MaxConnsPerIP int
	// MaxRequestsPerIP caps one client address's requests in flight
	// (default 64); more get 429 with Retry-After. /healthz is exempt.
	MaxRequestsPerIP int
}

// Default limits.
const (
	DefaultReadHeaderTimeout = 10 * time.Second
	DefaultReadTimeout       = 60 * time.Second
	DefaultWriteTimeout      = 60 * time.Second
	DefaultIdleTimeout       = 2 * time.Minute
	DefaultMaxConns          = 1024
	DefaultMaxConnsPerIP     = 128
	DefaultMaxRequestsPerIP  = 64
	// MaxHeaderBytes bounds a request's headers; Hearth's are small.
	MaxHeaderBytes = 64 << 10
	// maxSmallBody bounds the body of endpoints that take none.
	maxSmallBody = 64 << 10
)

// WithDefaults returns l with zero values replaced by the defaults;
// negative ones (off) stay, so that applying it twice changes nothing.
func (l Limits) WithDefaults() Limits {
	dur := func(d *time.Duration, def time.Duration) {
		if *d == 0 {
			*d = def
		}
	}
	num := func(n *int, def int) {
		if *n == 0 {
			*n = def
		}
	}
	dur(&l.ReadHeaderTimeout, DefaultReadHeaderTimeout)
	dur(&l.ReadTimeout, DefaultReadTimeout)
	dur(&l.WriteTimeout, DefaultWriteTimeout)
	dur(&l.IdleTimeout, DefaultIdleTimeout)
	num(&l.MaxConns, DefaultMaxConns)
	num(&l.MaxConnsPerIP, DefaultMaxConnsPerIP)
	num(&l.MaxRequestsPerIP, DefaultMaxRequestsPerIP)
	return l
}

// HTTPServer returns an http.Server for h with l's timeouts (l with its
// defaults applied; negative ones are off). Serve it on a listener from LimitListener.
func HTTPServer(h http.Handler, l Limits) *http.Server {
	on := func(d time.Duration) time.Duration { return max(d, 0) } // net/http: 0 is none
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: on(l.ReadHeaderTimeout),
		ReadTimeout:       on(l.ReadTimeout),
		// Off (0) falls back to ReadTimeout, as net/http does.
		IdleTimeout:    on(l.IdleTimeout),
		MaxHeaderBytes: MaxHeaderBytes,
		// No WriteTimeout: it would be armed while the handler runs and
		// cut long invocations; the API arms it per response (bounded).
	}
}

// clientIP is the address a request or connection comes from. Forwarded
// headers are not trusted: any client can write them.
func clientIP(addr string) netip.Addr {
	ap, err := netip.ParseAddrPort(addr)
	if err != nil {
		return netip.Addr{}
	}
	return ap.Addr().Unmap()
}

// ipCounter counts what each client address holds, up to a cap.
type ipCounter struct {
	max int // 0: no cap

	mu sync.Mutex
	n  map[netip.Addr]int // guarded by mu
}

// acquire counts one more for ip unless it holds max already.
func (c *ipCounter) acquire(ip netip.Addr) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.max > 0 && c.n[ip] >= c.max {
		return false
	}
	if c.n == nil {
		c.n = map[netip.Addr]int{}
	}
	c.n[ip]++
	return true
}

func (c *ipCounter) release(ip netip.Addr) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.n[ip]--; c.n[ip] <= 0 {
		delete(c.n, ip)
	}
}

// bounded wraps a route: the client's requests in flight are capped, its
// body is bounded to maxBody bytes (and must arrive within the server's
// ReadTimeout), and its response must be written within WriteTimeout of
// its first byte.
func (s *Server) bounded(maxBody int64, h http.HandlerFunc) http.HandlerFunc {
	lim := s.cfg.Limits
	return func(w http.ResponseWriter, r *http.Request) {
		rc := http.NewResponseController(w)
		// A keep-alive connection carries the last response's deadline.
		rc.SetWriteDeadline(time.Time{})
		ip := clientIP(r.RemoteAddr)
		if !s.requests.acquire(ip) {
			w.Header().Set("Retry-After", "1")
			w.Header().Set("Connection", "close")
			s.writeError(w, http.StatusTooManyRequests, "TooManyRequests",
				"too many requests in flight from "+ip.String()+" (at most "+strconv.Itoa(lim.MaxRequestsPerIP)+")")
			return
		}
		defer s.requests.release(ip)
		r.Body = http.MaxBytesReader(w, r.Body, maxBody)
		if lim.WriteTimeout > 0 {
			w = &timedWriter{ResponseWriter: w, rc: rc, d: lim.WriteTimeout}
		}
		h(w, r)
	}
}

// timedWriter arms the write deadline at a response's first byte.
type timedWriter struct {
	http.ResponseWriter
	rc    *http.ResponseController
	d     time.Duration
	armed bool
}

func (t *timedWriter) arm() {
	if !t.armed {
		t.armed = true
		t.rc.SetWriteDeadline(time.Now().Add(t.d))
	}
}

func (t *timedWriter) WriteHeader(code int) {
	t.arm()
	t.ResponseWriter.WriteHeader(code)
}

func (t *timedWriter) Write(b []byte) (int, error) {
	t.arm()
	return t.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach the connection.
func (t *timedWriter) Unwrap() http.ResponseWriter { return t.ResponseWriter }

// bodyError answers an error reading a request body: too large, too
// slow, or otherwise bad. tooLarge is the error type of the first.
func (s *Server) bodyError(w http.ResponseWriter, what, tooLarge string, err error) {
	var mbe *http.MaxBytesError
	var ne net.Error
	switch {
	case errors.As(err, &mbe):
		s.writeError(w, http.StatusRequestEntityTooLarge, tooLarge,
			fmt.Sprintf("%s larger than %d bytes", what, mbe.Limit))
	case errors.Is(err, os.ErrDeadlineExceeded) || errors.As(err, &ne) && ne.Timeout():
		w.Header().Set("Connection", "close")
		s.writeError(w, http.StatusRequestTimeout, "RequestTimeout",
			fmt.Sprintf("%s not received within %s", what, s.cfg.Limits.ReadTimeout))
	default:
		s.writeError(w, http.StatusBadRequest, "BadRequest", "reading "+what+": "+err.Error())
	}
}
