package cli

import (
	"fmt"
	"log/slog"
	"time"

	"github.com/spf13/pflag"
	"golang.org/x/sys/unix"

	"github.com/hearth-run/hearth/internal/api"
)

// HTTPConfig is the http section of hearth.yaml: the API server's
// timeouts and connection caps. Zero durations and caps mean the defaults
// (see api.Limits); "off" and -1 switch one off.
type HTTPConfig struct {
	ReadHeaderTimeout offDuration `yaml:"read_header_timeout"`
	ReadTimeout       offDuration `yaml:"read_timeout"`
	WriteTimeout      offDuration `yaml:"write_timeout"`
	IdleTimeout       offDuration `yaml:"idle_timeout"`
	MaxConns          int         `yaml:"max_conns"`
	MaxConnsPerIP     int         `yaml:"max_conns_per_ip"`
	MaxRequestsPerIP  int         `yaml:"max_requests_per_ip"`
}

// addHTTPFlags declares the http flags of `hearth up`, bound to c.
func addHTTPFlags(f *pflag.FlagSet, c *HTTPConfig) {
	f.Var(&c.ReadHeaderTimeout, "read-header-timeout", `time to receive a request's headers (default 10s; "off")`)
	f.Var(&c.ReadTimeout, "read-timeout", `time to receive a request's body (default 60s; "off")`)
	f.Var(&c.WriteTimeout, "write-timeout", `time to write a response from its first byte (default 60s; "off"); invocations run up to their function's timeout before`)
	f.Var(&c.IdleTimeout, "idle-timeout", `keep-alive connections idle that long are closed (default 2m; "off")`)
	f.IntVar(&c.MaxConns, "max-conns", c.MaxConns, "open connections at most; past it only /healthz is answered (default 1024; -1: no cap)")
	f.IntVar(&c.MaxConnsPerIP, "max-conns-per-ip", c.MaxConnsPerIP, "open connections per client address at most (default 128; -1: no cap)")
	f.IntVar(&c.MaxRequestsPerIP, "max-requests-per-ip", c.MaxRequestsPerIP, "requests in flight per client address at most, else 429 (default 64; -1: no cap)")
}

// httpLimits turns the http section into the API's limits, defaults
// applied. The connection cap is lowered to half the descriptors the
// process may open: the other half is the sandboxes', pools' and caches'.
func httpLimits(c HTTPConfig, log *slog.Logger) (api.Limits, error) {
	l := api.Limits{
		ReadHeaderTimeout: time.Duration(c.ReadHeaderTimeout),
		ReadTimeout:       time.Duration(c.ReadTimeout),
		WriteTimeout:      time.Duration(c.WriteTimeout),
		IdleTimeout:       time.Duration(c.IdleTimeout),
	}
	for _, n := range []struct {
		name string
		v    int
		to   *int
	}{
		{"http.max_conns", c.MaxConns, &l.MaxConns},
		{"http.max_conns_per_ip", c.MaxConnsPerIP, &l.MaxConnsPerIP},
		{"http.max_requests_per_ip", c.MaxRequestsPerIP, &l.MaxRequestsPerIP},
	} {
		if n.v < -1 {
			return l, fmt.Errorf("%s: %d: use a positive cap, 0 for the default or -1 for none", n.name, n.v)
		}
		*n.to = n.v
	}
	l = l.WithDefaults()
	var rl unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &rl); err == nil && rl.Cur != unix.RLIM_INFINITY {
		if budget := int(rl.Cur / 2); l.MaxConns <= 0 || l.MaxConns > budget {
			log.Warn("http.max_conns capped at half the open-files limit", "max_conns", budget, "nofile", rl.Cur)
			l.MaxConns = budget
		}
	}
	return l, nil
}
