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
	e := newEnv(t, Config{Index: Index{URL: "http://" + addr + "/simple"}})
	t0 := time.Now()
	_, err = e.c.Install(context.Background(), codeDir(t, map[string]string{"requirements.txt": "alpha\n"}))
	if !errors.Is(err, ErrResolve) || !strings.Contains(err.Error(), "No matching distribution found for alpha") {
		t.Fatalf("err = %v, want ErrResolve naming alpha", err)
	}
	// Two retries with back-off, not pip's default five (~8 s).
	if d := time.Since(t0); d > 5*time.Second {
		t.Errorf("failing took %v", d)
	}
}
