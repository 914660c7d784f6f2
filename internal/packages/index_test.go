package packages

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// simpleIndex serves the test wheelhouse as a PEP 503 simple index.
func simpleIndex(t *testing.T) *httptest.Server {
	t.Helper()
	ents, err := os.ReadDir(wheels)
	if err != nil {
		t.Fatal(err)
	}
	projects := map[string][]string{} // normalised name -> wheel files
	for _, e := range ents {
		name := strings.ToLower(strings.ReplaceAll(strings.SplitN(e.Name(), "-", 2)[0], "_", "-"))
		projects[name] = append(projects[name], e.Name())
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/simple/{project}/", func(w http.ResponseWriter, r *http.Request) {
		files := projects[r.PathValue("project")]
		if files == nil {
			http.NotFound(w, r)
			return
		}
		fmt.Fprintln(w, "<!DOCTYPE html><html><body>")
		for _, f := range files {
			fmt.Fprintf(w, "<a href=\"/files/%s\">%s</a><br>\n", f, f)
		}
		fmt.Fprintln(w, "</body></html>")
	})
	mux.Handle("/files/", http.StripPrefix("/files/", http.FileServer(http.Dir(wheels))))
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv
}

func TestIndexURL(t *testing.T) {
	srv := simpleIndex(t)
	e := newEnv(t, Config{Index: Index{URL: srv.URL + "/simple", TrustedHosts: []string{"127.0.0.1"}}})
	set, err := e.c.Install(context.Background(), codeDir(t, map[string]string{"requirements.txt": "beta\n"}))
	if err != nil {
		t.Fatal(err)
	}
	if got := names(Cached(set)); got != "alpha==2.0 beta==1.0" {
		t.Errorf("resolved %q", got)
	}
	for _, p := range Cached(set) {
		if _, err := os.Stat(filepath.Join(e.c.path(p), p.Name, "__init__.py")); err != nil {
			t.Errorf("%s: %v", p, err)
		}
	}
}

func TestUnreachableIndex(t *testing.T) {
	// A loopback port nobody listens on: pip's connections are refused.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	e := newEnv(t, Config{Index: Index{URL: "http://user:secret@" + addr + "/simple"}})
	t0 := time.Now()
	// numpy is in the base image: it needs no index.
	_, err = e.c.Install(context.Background(), codeDir(t, map[string]string{
		"requirements.txt": "alpha\nnumpy\nbeta>=1.0\n-r more.txt\n",
		"more.txt":         "gamma[fast]==0.3 ; python_version >= '3'\n",
	}))
	if !errors.Is(err, ErrIndexUnreachable) || errors.Is(err, ErrResolve) {
		t.Fatalf("err = %v, want ErrIndexUnreachable (not the code's fault)", err)
	}
	msg := err.Error()
	for _, want := range []string{"package index http://" + addr + "/simple could not be reached",
		"Connection refused", "could not resolve alpha, beta>=1.0, gamma[fast]==0.3"} {
		if !strings.Contains(msg, want) {
			t.Errorf("error %q does not say %q", msg, want)
		}
	}
	if strings.Contains(msg, "numpy") || strings.Contains(msg, "secret") {
		t.Errorf("error %q names numpy (in the base image) or the index's password", msg)
	}
	// Two retries with back-off, not pip's default five (~8 s).
	if d := time.Since(t0); d > 5*time.Second {
		t.Errorf("failing took %v", d)
	}
}

func TestUnreachableOutput(t *testing.T) {
	tests := []struct{ out, want string }{
		{"WARNING: Retrying (Retry(total=1, connect=None, read=None, redirect=None, status=None)) after connection broken by " +
			"'NewConnectionError('<pip._vendor.urllib3.connection.HTTPConnection object at 0x7f9d3a805940>: Failed to establish a new connection: [Errno 111] Connection refused')': /simple/alpha/\n" +
			"ERROR: Could not find a version that satisfies the requirement alpha (from versions: none)\n",
			"Failed to establish a new connection: [Errno 111] Connection refused"},
		{"WARNING: Retrying (Retry(total=0, connect=None, read=None, redirect=None, status=None)) after connection broken by " +
			"'ConnectTimeoutError(<pip._vendor.urllib3.connection.HTTPSConnection object at 0x7f>, 'Connection to pypi.org timed out. (connect timeout=15)')': /simple/x/\n",
			"Connection to pypi.org timed out. (connect timeout=15)"},
		{"WARNING: Retrying (Retry(total=0, connect=None, read=None, redirect=None, status=None)) after connection broken by " +
			"'NameResolutionError(\"<pip._vendor.urllib3.connection.HTTPSConnection object at 0x7f>: Failed to resolve 'pypi.org' ([Errno -3] Temporary failure in name resolution)\")': /simple/x/\n",
			"Failed to resolve 'pypi.org' ([Errno -3] Temporary failure in name resolution)"},
		{"Could not fetch URL https://pypi.org/simple/x/: There was a problem confirming the ssl certificate: HTTPSConnectionPool(host='pypi.org', port=443) - skipping\n",
			"There was a problem confirming the ssl certificate: HTTPSConnectionPool(host='pypi.org', port=443)"},
		{"ERROR: Could not find a version that satisfies the requirement nosuch (from versions: none)\n", ""},
	}
	for _, tt := range tests {
		if got := unreachable(tt.out); got != tt.want {
			t.Errorf("unreachable(%q)\n = %q\nwant %q", tt.out, got, tt.want)
		}
	}
}
