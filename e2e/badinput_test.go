package e2e

import (
	"archive/tar"
	"archive/zip"
	"bytes"
	"compress/gzip"
	"context"
	"strings"
	"testing"
	"time"
)

type entry struct {
	name, body, link string
	typ              byte
}

func tarGz(t *testing.T, entries ...entry) []byte {
	t.Helper()
	var buf bytes.Buffer
	gz := gzip.NewWriter(&buf)
	tw := tar.NewWriter(gz)
	for _, e := range entries {
		typ := e.typ
		if typ == 0 {
			typ = tar.TypeReg
		}
		hdr := &tar.Header{Name: e.name, Typeflag: typ, Mode: 0o644, Size: int64(len(e.body)), Linkname: e.link}
		if typ != tar.TypeReg {
			hdr.Size = 0
		}
		if typ == tar.TypeChar {
			hdr.Devmajor, hdr.Devminor = 1, 3
		}
		if err := tw.WriteHeader(hdr); err != nil {
			t.Fatal(err)
		}
		if typ == tar.TypeReg {
			tw.Write([]byte(e.body))
		}
	}
	tw.Close()
	gz.Close()
	return buf.Bytes()
}

func TestBadInputGetsClearErrorsAndLosesNothing(t *testing.T) {
	// A local (empty) wheelhouse: an uninstallable requirement is the
	// caller's mistake (400), not an unreachable index (PyPI is not
	// reachable from the test hosts; that case has its own test).
	w := startWorker(t, "--config", writeConfig(t, "max_archive_mb: 1\nmax_body_mb: 1\n"),
		"--no-index", "--find-links", t.TempDir())
	w.deployDir("good", fn(t, "f.py", "def f(e):\n    return 'good'\n"))
	good := w.mustInvoke("good", "{}")

	var zbuf bytes.Buffer
	zw := zip.NewWriter(&zbuf)
	fw, _ := zw.Create("../evil.py")
	fw.Write([]byte("x"))
	zw.Close()

	big := make([]byte, 2<<20)
	for i := range big {
		big[i] = byte(i*7919 + i>>8)
	}
	ok := entry{name: "f.py", body: "def f(e):\n    return 'bad'\n"}
	cases := []struct {
		name    string
		archive []byte
		code    int
		want    string
	}{
		{"dotdot", tarGz(t, ok, entry{name: "../../etc/evil", body: "x"}), 400, "unsafe"},
		{"absolute", tarGz(t, ok, entry{name: "/etc/evil", body: "x"}), 400, ""},
		{"symlink out", tarGz(t, ok, entry{name: "link", typ: tar.TypeSymlink, link: "/etc/passwd"}), 400, ""},
		{"symlink up", tarGz(t, ok, entry{name: "d/link", typ: tar.TypeSymlink, link: "../../x"}), 400, ""},
		{"device", tarGz(t, ok, entry{name: "null", typ: tar.TypeChar}), 400, ""},
		{"zip traversal", zbuf.Bytes(), 400, ""},
		{"not an archive", []byte("just some text, not a tarball"), 400, ""},
		{"truncated", tarGz(t, ok)[:40], 400, ""},
		{"too large", big, 413, ""},
		{"bad yaml", tarGz(t, ok, entry{name: "function.yaml", body: "memory_mb: [oops"}), 400, ""},
		{"unknown field", tarGz(t, ok, entry{name: "function.yaml", body: "memroy_mb: 5\n"}), 400, "memroy_mb"},
		{"unknown network", tarGz(t, ok, entry{name: "function.yaml", body: "network: carrier-pigeon\n"}), 400, "network"},
		{"missing handler", tarGz(t, entry{name: "other.py", body: "x=1"}), 400, "handler"},
		{"uninstallable requirement", tarGz(t, ok, entry{name: "requirements.txt", body: "surely-not-a-package==9.9\n"}), 400, "install cache"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			_, err := w.c.Deploy(ctx, "good", bytes.NewReader(tc.archive))
			if !isStatus(err, tc.code) {
				t.Fatalf("deploy: err = %v, want HTTP %d", err, tc.code)
			}
			if tc.want != "" && !strings.Contains(strings.ToLower(err.Error()), strings.ToLower(tc.want)) {
				t.Errorf("error %q does not mention %q", err, tc.want)
			}
			// The previous revision keeps serving, warm.
			inv := w.mustInvoke("good", "{}")
			if string(inv.Body) != `"good"` || inv.Revision != good.Revision {
				t.Errorf("after a bad deploy: %s rev %s, want \"good\" rev %s", inv.Body, inv.Revision, good.Revision)
			}
		})
	}

	t.Run("bad json", func(t *testing.T) {
		if _, err := w.invoke("good", "{not json"); !isStatus(err, 400) {
			t.Errorf("err = %v, want 400", err)
		}
	})
	t.Run("oversized body", func(t *testing.T) {
		body := `{"x":"` + strings.Repeat("a", 2<<20) + `"}`
		if _, err := w.invoke("good", body); !isStatus(err, 413) {
			t.Errorf("err = %v, want 413", err)
		}
	})
	t.Run("unknown function", func(t *testing.T) {
		if _, err := w.invoke("nope", "{}"); !isStatus(err, 404) {
			t.Errorf("err = %v, want 404", err)
		}
	})
	t.Run("bad name", func(t *testing.T) {
		_, err := w.c.Deploy(context.Background(), "Bad..Name", bytes.NewReader(tarGz(t, ok)))
		if !isStatus(err, 400) {
			t.Errorf("err = %v, want 400", err)
		}
	})
	t.Run("handler import error", func(t *testing.T) {
		w.deployDir("broken", fn(t, "f.py", "import not_a_module_anywhere\ndef f(e):\n    return 1\n"))
		_, err := w.invoke("broken", "{}")
		if !isStatus(err, 502) || !strings.Contains(err.Error(), "not_a_module_anywhere") {
			t.Errorf("err = %v, want 502 naming the missing module", err)
		}
	})
}

func TestRestartKeepsFunctionsAndLeavesNothing(t *testing.T) {
	w := startWorker(t)
	w.deployDir("hello", "../examples/hello")
	w.deployDir("upd", fn(t, "f.py", "def f(e):\n    return 'v1'\n"))
	w.deployDir("upd", fn(t, "f.py", "def f(e):\n    return 'v2'\n"))
	w.mustInvoke("hello", "{}")
	w.mustInvoke("upd", "{}")

	// A crash: the worker's reaper sweeps its sandboxes, mounts and
	// cgroups; no deployed function is lost.
	w.crash()
	w.start()
	if inv := w.mustInvoke("upd", "{}"); string(inv.Body) != `"v2"` || !fresh(inv.Path) {
		t.Errorf("after crash: %s via %s, want \"v2\" in a new sandbox", inv.Body, inv.Path)
	}
	if inv := w.mustInvoke("hello", `{"name":"back"}`); !strings.Contains(string(inv.Body), "hello, back") {
		t.Errorf("after crash: %s", inv.Body)
	}
	st, err := w.c.Status(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Sandboxes) != 2 {
		t.Errorf("after restart %d sandboxes, want 2 (swept the old ones): %+v", len(st.Sandboxes), st.Sandboxes)
	}
	// A clean stop, then the same checks as every test: nothing left.
	w.stop()
	w.assertClean()
	w.start()
	if inv := w.mustInvoke("hello", "{}"); !fresh(inv.Path) {
		t.Errorf("after restart: path %s", inv.Path)
	}
}
