package api

import "testing"

func TestRedact(t *testing.T) {
	r := newRedactor([]string{"/srv/h", "/srv/h/base", "/opt/bin/hearth-init", "", "/"})
	for _, c := range []struct{ in, want string }{
		{"no paths here", "no paths here"},
		{"open /srv/h/functions/x/f.py: permission denied", "open [worker path]: permission denied"},
		{"read unix @->/srv/h/sandboxes/sb-1/scratch/.hearth.sock: read: reset", "read unix @->[worker path]: read: reset"},
		{`stat "/srv/h/base/usr/bin/python3"`, `stat "[worker path]"`},
		{"dir /srv/h", "dir [worker path]"},
		{"/srv/h/a and /srv/h/b", "[worker path] and [worker path]"},
		{"fork/exec /opt/bin/hearth-init: no such file", "fork/exec [worker path]: no such file"},
		{"/srv/hearth/x is another tree", "/srv/hearth/x is another tree"},
		{"/srv/h2: a sibling", "/srv/h2: a sibling"},
		{"sandbox paths stay: /code/f.py, /tmp/x", "sandbox paths stay: /code/f.py, /tmp/x"},
		{"(/srv/h/x)", "([worker path])"},
	} {
		if got := r.redact(c.in); got != c.want {
			t.Errorf("redact(%q) = %q, want %q", c.in, got, c.want)
		}
	}
	if got := (redactor{}).redact("/srv/h/x"); got != "/srv/h/x" {
		t.Errorf("no roots: %q", got)
	}
}
