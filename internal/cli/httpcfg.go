package cli

import (
	"fmt"
	"log/slog"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"

	"github.com/hearth-run/hearth/internal/api"
)

// HTTPConfig is the http section of hearth.yaml: the API server's
// timeouts and connection caps. Empty durations and zero caps mean the
// defaults (see api.Limits); "off" and -1 switch one off.
type HTTPConfig struct {
	ReadHeaderTimeout string `yaml:"read_header_timeout"`
	ReadTimeout       string `yaml:"read_timeout"`
	WriteTimeout      string `yaml:"write_timeout"`
	IdleTimeout       string `yaml:"idle_timeout"`
	MaxConns          int    `yaml:"max_conns"`
	MaxConnsPerIP     int    `yaml:"max_conns_per_ip"`
	MaxRequestsPerIP  int    `yaml:"max_requests_per_ip"`
}

func addHTTPFlags(cmd *cobra.Command, c *HTTPConfig) {
	f := cmd.Flags()
	f.StringVar(&c.ReadHeaderTimeout, "read-header-timeout", "", `time to receive a request's headers (default 10s; "off")`)
	f.StringVar(&c.ReadTimeout, "read-timeout", "", `time to receive a request's body (default 60s; "off")`)
	f.StringVar(&c.WriteTimeout, "write-timeout", "", `time to write a response from its first byte (default 60s; "off"); invocations run up to their function's timeout before`)
	f.StringVar(&c.IdleTimeout, "idle-timeout", "", `keep-alive connections idle that long are closed (default 2m; "off")`)
	f.IntVar(&c.MaxConns, "max-conns", 0, "open connections at most; past it only /healthz is answered (default 1024; -1: no cap)")
	f.IntVar(&c.MaxConnsPerIP, "max-conns-per-ip", 0, "open connections per client address at most (default 128; -1: no cap)")
	f.IntVar(&c.MaxRequestsPerIP, "max-requests-per-ip", 0, "requests in flight per client address at most, else 429 (default 64; -1: no cap)")
}

func mergeHTTPFlags(cmd *cobra.Command, c *HTTPConfig, flags HTTPConfig) {
	fl := cmd.Flags()
	for _, s := range []struct {
		name     string
		to, from *string
	}{
		{"read-header-timeout", &c.ReadHeaderTimeout, &flags.ReadHeaderTimeout},
		{"read-timeout", &c.ReadTimeout, &flags.ReadTimeout},
		{"write-timeout", &c.WriteTimeout, &flags.WriteTimeout},
		{"idle-timeout", &c.IdleTimeout, &flags.IdleTimeout},
	} {
		if fl.Changed(s.name) {
			*s.to = *s.from
		}
	}
	for _, n := range []struct {
		name     string
		to, from *int
	}{
		{"max-conns", &c.MaxConns, &flags.MaxConns},
		{"max-conns-per-ip", &c.MaxConnsPerIP, &flags.MaxConnsPerIP},
		{"max-requests-per-ip", &c.MaxRequestsPerIP, &flags.MaxRequestsPerIP},
	} {
		if fl.Changed(n.name) {
			*n.to = *n.from
		}
	}
}

// httpLimits turns the http section into the API's limits, defaults
// applied. The connection cap is lowered to half the descriptors the
// process may open: the other half is the sandboxes', pools' and caches'.
func httpLimits(c HTTPConfig, log *slog.Logger) (api.Limits, error) {
	var l api.Limits
	for _, d := range []struct {
		name string
		s    string
		to   *time.Duration
	}{
		{"http.read_header_timeout", c.ReadHeaderTimeout, &l.ReadHeaderTimeout},
		{"http.read_timeout", c.ReadTimeout, &l.ReadTimeout},
		{"http.write_timeout", c.WriteTimeout, &l.WriteTimeout},
		{"http.idle_timeout", c.IdleTimeout, &l.IdleTimeout},
	} {
		switch d.s {
		case "":
		case "off":
			*d.to = -1
		default:
			v, err := time.ParseDuration(d.s)
			if err != nil || v <= 0 {
				return l, fmt.Errorf(`%s: %q is not a positive duration or "off"`, d.name, d.s)
			}
			*d.to = v
		}
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
