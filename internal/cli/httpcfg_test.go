package cli

import (
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/hearth-run/hearth/internal/api"
)

func TestHTTPLimits(t *testing.T) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	l, err := httpLimits(HTTPConfig{}, log)
	if err != nil {
		t.Fatal(err)
	}
	if l.ReadHeaderTimeout != api.DefaultReadHeaderTimeout || l.WriteTimeout != api.DefaultWriteTimeout ||
		l.MaxConnsPerIP != api.DefaultMaxConnsPerIP || l.MaxRequestsPerIP != api.DefaultMaxRequestsPerIP || l.MaxConns <= 0 {
		t.Errorf("defaults: %+v", l)
	}
	l, err = httpLimits(HTTPConfig{ReadTimeout: offDuration(3 * time.Second), WriteTimeout: -1, MaxConns: 10, MaxConnsPerIP: -1, MaxRequestsPerIP: 2}, log)
	if err != nil {
		t.Fatal(err)
	}
	want := api.Limits{ReadHeaderTimeout: api.DefaultReadHeaderTimeout, ReadTimeout: 3 * time.Second, WriteTimeout: -1,
		IdleTimeout: api.DefaultIdleTimeout, MaxConns: 10, MaxConnsPerIP: -1, MaxRequestsPerIP: 2}
	if l != want {
		t.Errorf("got %+v, want %+v", l, want)
	}
	// Off stays off however often the defaults are applied.
	if again := l.WithDefaults(); again != l {
		t.Errorf("WithDefaults twice: %+v, then %+v", l, again)
	}
	if _, err := httpLimits(HTTPConfig{MaxConns: -2}, log); err == nil || !strings.Contains(err.Error(), "http.max_conns") {
		t.Errorf("max_conns -2: %v, want an error naming the setting", err)
	}
	// Bad timeouts are refused where they are read: in hearth.yaml (with
	// the line) and on the command line.
	for _, bad := range []string{"soon", "-1s", "0s"} {
		var d offDuration
		if err := d.Set(bad); err == nil || !strings.Contains(err.Error(), bad) {
			t.Errorf("%q: %v, want an error quoting it", bad, err)
		}
		_, err := loadConfig(writeYAML(t, "http:\n  idle_timeout: "+bad+"\n"))
		if err == nil || !strings.Contains(err.Error(), "line 2") {
			t.Errorf("http.idle_timeout %q: %v, want an error naming its line", bad, err)
		}
	}
}
