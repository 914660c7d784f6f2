package e2e

import (
	"bytes"
	"strings"
	"testing"

	"github.com/hearth-run/hearth/internal/client"
)

// TestOpenLambdaConfig deploys an OpenLambda function with an ol.yaml:
// its environment reaches the handler, OL_ENTRY_FILE picks the module,
// and the keys Hearth has no equivalent for come back as warnings, in
// the deploy response and printed by `hearth deploy`.
func TestOpenLambdaConfig(t *testing.T) {
	w := startWorker(t, "--no-snapshots") // CRIU is not what this tests
	dir := fn(t,
		"app.py", "import os\ndef f(event):\n    return {'greeting': os.environ.get('GREETING'), 'n': os.environ.get('N')}\n",
		"ol.yaml", `triggers:
  http:
    - method: GET
environment:
  GREETING: "hello from ol.yaml"
  N: 3
  OL_ENTRY_FILE: app.py
reuse-sandbox: false
`)
	out, err := w.hearth("deploy", dir, "--name", "olfn")
	if err != nil {
		t.Fatalf("deploy: %v\n%s", err, out)
	}
	for _, want := range []string{"warning: ol.yaml: triggers.http: ignored", "warning: ol.yaml: reuse-sandbox: ignored"} {
		if !strings.Contains(out, want) {
			t.Errorf("hearth deploy output lacks %q:\n%s", want, out)
		}
	}
	inv := w.mustInvoke("olfn", "{}")
	if got := string(inv.Body); got != `{"greeting":"hello from ol.yaml","n":"3"}` {
		t.Errorf("body = %s, want ol.yaml's environment", got)
	}

	// The API response carries the same warnings, also for a redeploy of
	// the same code.
	for range 2 {
		var buf bytes.Buffer
		if err := client.PackDir(dir, &buf); err != nil {
			t.Fatal(err)
		}
		f, err := w.c.Deploy(t.Context(), "olfn", &buf)
		if err != nil {
			t.Fatal(err)
		}
		if len(f.Warnings) != 2 || !strings.Contains(f.Warnings[0], "triggers.http") || !strings.Contains(f.Warnings[1], "reuse-sandbox") {
			t.Errorf("deploy response warnings = %q", f.Warnings)
		}
		if f.Spec.Handler != "app.f" {
			t.Errorf("handler = %q, want app.f (from OL_ENTRY_FILE)", f.Spec.Handler)
		}
	}
}
