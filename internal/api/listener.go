package api

import (
	"bufio"
	"bytes"
	"io"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// Overflow responder bounds: connections past the cap are answered by at
// most overflowConns goroutines, each for at most overflowWait, reading
// at most overflowHeader bytes of the request.
const (
	overflowConns  = 64
	overflowWait   = 2 * time.Second
	overflowHeader = 4 << 10
)

// limitListener caps open connections in total and per client address.
// Past the total cap it still accepts, so that the kernel's backlog does
// not fill and health checks keep getting answers: a small responder
// answers GET /healthz with 200 and everything else with 503.
type limitListener struct {
	net.Listener
	max   int
	perIP ipCounter
	spare chan struct{} // overflow responder slots

	open atomic.Int64 // connections served now
}

// LimitListener caps ln's open connections at l.MaxConns in total and
// l.MaxConnsPerIP per client address (l with its defaults applied;
// negative caps are off).
func LimitListener(ln net.Listener, l Limits) net.Listener {
	return &limitListener{Listener: ln, max: l.MaxConns, perIP: ipCounter{max: l.MaxConnsPerIP},
		spare: make(chan struct{}, overflowConns)}
}

// Accept returns the next connection within the caps; it handles the
// others itself.
func (l *limitListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		ip := clientIP(c.RemoteAddr().String())
		if !l.perIP.acquire(ip) {
			c.Close()
			continue
		}
		if l.max > 0 && l.open.Add(1) > int64(l.max) {
			l.open.Add(-1)
			l.overflow(c, ip)
			continue
		}
		if l.max <= 0 {
			l.open.Add(1)
		}
		return &limitedConn{Conn: c, release: func() {
			l.open.Add(-1)
			l.perIP.release(ip)
		}}, nil
	}
}

// overflow answers a connection past the cap, in the background and
// bounded, then closes it.
func (l *limitListener) overflow(c net.Conn, ip netip.Addr) {
	select {
	case l.spare <- struct{}{}:
	default:
		c.Close()
		l.perIP.release(ip)
		return
	}
	go func() {
		defer func() {
			c.Close()
			l.perIP.release(ip)
			<-l.spare
		}()
		c.SetDeadline(time.Now().Add(overflowWait))
		healthz, err := readHead(c)
		if err != nil {
			return
		}
		if healthz {
			io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Type: text/plain; charset=utf-8\r\n"+
				"Content-Length: 3\r\nX-Hearth-Overloaded: connections\r\nConnection: close\r\n\r\nok\n")
		} else {
			const msg = `{"errorType": "TooManyConnections", "errorMessage": "the worker is at its connection limit; retry"}` + "\n"
			io.WriteString(c, "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nRetry-After: 1\r\n"+
				"Content-Length: "+strconv.Itoa(len(msg))+"\r\nConnection: close\r\n\r\n"+msg)
		}
		// Close after the client's half: closing with unread input would
		// reset the connection, and the client could lose the answer.
		if tc, ok := c.(interface{ CloseWrite() error }); ok {
			tc.CloseWrite()
			io.Copy(io.Discard, io.LimitReader(c, overflowHeader))
		}
	}()
}

// readHead reads a request's head (up to the blank line) and reports
// whether it is GET or HEAD /healthz.
func readHead(c net.Conn) (healthz bool, err error) {
	br := bufio.NewReaderSize(io.LimitReader(c, overflowHeader), overflowHeader)
	line, err := br.ReadSlice('\n')
	if err != nil {
		return false, err
	}
	healthz = bytes.HasPrefix(line, []byte("GET /healthz ")) || bytes.HasPrefix(line, []byte("HEAD /healthz "))
	for {
		l, err := br.ReadSlice('\n')
		if err != nil {
			return false, err
		}
		if len(bytes.TrimRight(l, "\r\n")) == 0 {
			return healthz, nil
		}
	}
}

// limitedConn gives its slot back once, when closed.
type limitedConn struct {
	net.Conn
	once    sync.Once
	release func()
}

func (c *limitedConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(c.release)
	return err
}
