package e2e

import (
	"encoding/json"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// redirect tries to replace the runtime's socket in /tmp with a symlink
// to the decoy (a host path: the worker resolves it in the host's mount
// namespace), by unlink and by rename, and reports what happened.
const redirect = `
import os, sys

def redirect():
    out = []
    for how in ("unlink", "rename"):
        try:
            if how == "unlink":
                os.unlink("/tmp/.hearth.sock")
                os.symlink(os.environ["DECOY"], "/tmp/.hearth.sock")
            else:
                try:
                    os.unlink("/tmp/evil")
                except FileNotFoundError:
                    pass
                os.symlink(os.environ["DECOY"], "/tmp/evil")
                os.rename("/tmp/evil", "/tmp/.hearth.sock")
            out.append(how + " succeeded")
        except OSError as e:
            out.append(how + " refused: " + e.strerror)
    return out

at_init = redirect()

def f(event):
    if event.get("exit"):
        os._exit(3)
    return {"init": at_init, "call": redirect()}
`

// TestSocketRedirectRefused: a function that replaces its runtime socket
// with a symlink to a socket outside its sandbox (at init and in a call)
// must not get the worker to connect there: neither on its next call, nor
// when its sandbox dies and the worker starts another, nor when the
// worker restores it from a snapshot taken after such an init.
func TestSocketRedirectRefused(t *testing.T) {
	decoyPath := filepath.Join(t.TempDir(), "decoy.sock")
	decoy, err := net.Listen("unix", decoyPath)
	if err != nil {
		t.Fatal(err)
	}
	defer decoy.Close()
	accepted := make(chan struct{}, 16)
	go func() {
		for {
			c, err := decoy.Accept()
			if err != nil {
				return
			}
			accepted <- struct{}{}
			c.Close()
		}
	}()
	w := startWorker(t)
	w.deployDir("redirect", fn(t, "f.py", redirect,
		"function.yaml", "env: {DECOY: "+decoyPath+"}\nsnapshot: always\n"))

	check := func(what string, body []byte) {
		t.Helper()
		var got struct{ Init, Call []string }
		if err := json.Unmarshal(body, &got); err != nil {
			t.Fatalf("%s: %s: %v", what, body, err)
		}
		for _, r := range append(got.Init, got.Call...) {
			if !strings.Contains(r, "refused") {
				t.Errorf("%s: the function could replace its socket: %v", what, got)
			}
		}
	}
	t0 := time.Now()
	check("first call", w.mustInvoke("redirect", "{}").Body)
	check("second call", w.mustInvoke("redirect", "{}").Body)

	// A snapshot of a sandbox whose init tried it (snapshot: always
	// makes one after the first start), where snapshots work.
	snapshots := w.snapshots().Enabled
	if snapshots {
		w.waitSnapshot("redirect", t0)
	} else {
		t.Logf("snapshots off on this host (%s): the restore path is not exercised", w.snapshots().Off)
	}

	// The sandbox dies: that call fails cleanly, the next gets a new one.
	if _, err := w.invoke("redirect", `{"exit": true}`); err == nil || !strings.Contains(err.Error(), "502") {
		t.Errorf("a call whose runtime exits: %v, want a clean 502", err)
	}
	inv := w.mustInvoke("redirect", "{}")
	check("after a restart", inv.Body)
	if snapshots && inv.Path != "snapshot" {
		t.Errorf("after a restart: path %s, want a snapshot restore", inv.Path)
	}
	select {
	case <-accepted:
		t.Fatal("the worker connected to the decoy socket outside the sandbox")
	case <-time.After(200 * time.Millisecond):
	}
}
