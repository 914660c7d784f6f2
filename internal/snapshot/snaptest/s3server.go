package snaptest

import (
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"
)

// VersityVersion is the S3 server the tests run (Apache-2.0).
const VersityVersion = "v1.8.0"

// S3Server is a versitygw process serving a temp dir on loopback.
type S3Server struct {
	Endpoint       string // host:port
	Access, Secret string
	cmd            *exec.Cmd
}

// versitygw finds the server binary: $HEARTH_VERSITYGW, $GOPATH/bin or
// PATH; else it builds it with go install (a minute the first time).
func versitygw() (string, error) {
	if p := os.Getenv("HEARTH_VERSITYGW"); p != "" {
		return p, nil
	}
	gopath, _ := exec.Command("go", "env", "GOPATH").Output()
	p := filepath.Join(string(trimNL(gopath)), "bin", "versitygw")
	if _, err := os.Stat(p); err == nil {
		return p, nil
	}
	if p, err := exec.LookPath("versitygw"); err == nil {
		return p, nil
	}
	out, err := exec.Command("go", "install", "github.com/versity/versitygw/cmd/versitygw@"+VersityVersion).CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("building versitygw: %v: %s", err, out)
	}
	return filepath.Join(string(trimNL(gopath)), "bin", "versitygw"), nil
}

func trimNL(b []byte) []byte {
	for len(b) > 0 && (b[len(b)-1] == '\n' || b[len(b)-1] == '\r') {
		b = b[:len(b)-1]
	}
	return b
}

// StartS3 starts a versitygw on 127.0.0.1 with a fresh data dir; it is
// stopped and removed at the end of the test.
func StartS3(t testing.TB) *S3Server {
	t.Helper()
	bin, err := versitygw()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	s := &S3Server{Endpoint: addr, Access: "hearthtest", Secret: "hearthtestsecret"}
	s.cmd = exec.Command(bin, "--access", s.Access, "--secret", s.Secret, "--port", addr, "posix", "--sidecar", filepath.Join(dir, "meta"), filepath.Join(dir, "data"))
	os.MkdirAll(filepath.Join(dir, "meta"), 0o755)
	os.MkdirAll(filepath.Join(dir, "data"), 0o755)
	s.cmd.Stdout, s.cmd.Stderr = io.Discard, io.Discard
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Stop)
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", addr, 100*time.Millisecond)
		if err == nil {
			c.Close()
			return s
		}
		if time.Now().After(deadline) {
			t.Fatalf("versitygw did not come up on %s", addr)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Stop stops the server; it is idempotent.
func (s *S3Server) Stop() {
	if s.cmd.ProcessState != nil {
		return
	}
	s.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { s.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		s.cmd.Process.Kill()
		<-done
	}
}

// CutProxy forwards TCP connections to a server until Limit bytes have
// gone from the server to clients; then it closes every connection and
// refuses new ones, as a store that goes down mid-download.
type CutProxy struct {
	Addr  string
	Limit int64

	l      net.Listener
	target string
	mu     sync.Mutex
	sent   int64
	cut    bool
	conns  []net.Conn
}

// NewCutProxy starts a proxy to target; it is closed at the end of the
// test.
func NewCutProxy(t testing.TB, target string, limit int64) *CutProxy {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &CutProxy{Addr: l.Addr().String(), Limit: limit, l: l, target: target}
	go p.serve()
	t.Cleanup(p.Cut)
	return p
}

func (p *CutProxy) serve() {
	for {
		c, err := p.l.Accept()
		if err != nil {
			return
		}
		s, err := net.Dial("tcp", p.target)
		if err != nil {
			c.Close()
			continue
		}
		p.mu.Lock()
		if p.cut {
			p.mu.Unlock()
			c.Close()
			s.Close()
			return
		}
		p.conns = append(p.conns, c, s)
		p.mu.Unlock()
		go func() { io.Copy(s, c); s.Close() }()
		go p.down(c, s)
	}
}

// down copies server to client, counting bytes, and cuts at the limit.
func (p *CutProxy) down(c, s net.Conn) {
	buf := make([]byte, 32<<10)
	for {
		n, err := s.Read(buf)
		if n > 0 {
			p.mu.Lock()
			over := p.sent+int64(n) > p.Limit
			p.sent += int64(n)
			p.mu.Unlock()
			if over {
				p.Cut()
				return
			}
			if _, err := c.Write(buf[:n]); err != nil {
				return
			}
		}
		if err != nil {
			c.Close()
			return
		}
	}
}

// Cut closes everything; later connections are refused.
func (p *CutProxy) Cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cut {
		return
	}
	p.cut = true
	p.l.Close()
	for _, c := range p.conns {
		c.Close()
	}
}

// Sent returns how many bytes went from the server to clients.
func (p *CutProxy) Sent() int64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.sent
}
