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
	l, err = httpLimits(HTTPConfig{ReadTimeout: "3s", WriteTimeout: "off", MaxConns: 10, MaxConnsPerIP: -1, MaxRequestsPerIP: 2}, log)
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
	for _, bad := range []HTTPConfig{{ReadTimeout: "soon"}, {IdleTimeout: "-1s"}, {MaxConns: -2}} {
		if _, err := httpLimits(bad, log); err == nil || !strings.Contains(err.Error(), "http.") {
			t.Errorf("%+v: %v, want an error naming the setting", bad, err)
		}
	}
}
