package function

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// writeTree creates files (path -> content) under a fresh temp dir.
func writeTree(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for p, c := range files {
		full := filepath.Join(dir, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, []byte(c), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func TestLoad(t *testing.T) {
	def := func(h string) Spec {
		return Spec{Handler: h, MemoryMB: DefaultMemoryMB, TimeoutS: DefaultTimeoutS,
			MaxConcurrency: DefaultMaxConcurrency, Network: NetworkIsolated, TmpMB: DefaultTmpMB}
	}
	tests := []struct {
		name  string
		files map[string]string
		want  Spec
	}{
		{"openlambda default", map[string]string{"f.py": "def f(e): return e"}, def("f.f")},
		{"aws default", map[string]string{"lambda_function.py": ""}, def("lambda_function.lambda_handler")},
		{"f.py wins over lambda_function", map[string]string{"f.py": "", "lambda_function.py": ""}, def("f.f")},
		{"empty yaml", map[string]string{"f.py": "", "function.yaml": "\n# nothing\n"}, def("f.f")},
		{"all fields", map[string]string{
			"app/main.py": "",
			"function.yaml": `handler: app.main.run
memory_mb: 256
timeout_s: 5
max_concurrency: 2
cpus: 0.5
env: {GREETING: hi, N: 3}
network: host
snapshot: always
tmp_mb: 2048
tmp_storage: memory
`,
			"requirements.txt": "# deps\nnumpy>=1.0  # from Debian\n\nrequests \\\n  ==2.28.1\n",
		}, Spec{Handler: "app.main.run", MemoryMB: 256, TimeoutS: 5, MaxConcurrency: 2, CPUs: 0.5,
			Env: map[string]string{"GREETING": "hi", "N": "3"}, Network: NetworkHost, Snapshot: "always",
			TmpMB: 2048, TmpStorage: TmpMemory,
			Requirements: []string{"numpy>=1.0", "requests   ==2.28.1"}}},
		{"package handler", map[string]string{"pkg/__init__.py": "", "function.yaml": "handler: pkg.h"}, func() Spec {
			s := def("pkg.h")
			return s
		}()},
		{"max_concurrency 0 means default", map[string]string{"f.py": "", "function.yaml": "max_concurrency: 0"}, def("f.f")},
		{"cpus 0 means default", map[string]string{"f.py": "", "function.yaml": "cpus: 0"}, def("f.f")},
		{"cpus above one", map[string]string{"f.py": "", "function.yaml": "cpus: 2"}, func() Spec {
			s := def("f.f")
			s.CPUs = 2
			return s
		}()},
		{"network isolated", map[string]string{"f.py": "", "function.yaml": "network: isolated"}, func() Spec {
			s := def("f.f")
			s.Network = NetworkIsolated
			return s
		}()},
		{"network offline", map[string]string{"f.py": "", "function.yaml": "network: offline"}, func() Spec {
			s := def("f.f")
			s.Network = NetworkOffline
			return s
		}()},
		{"network host", map[string]string{"f.py": "", "function.yaml": "network: host"}, func() Spec {
			s := def("f.f")
			s.Network = NetworkHost
			return s
		}()},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, warns, err := Load(writeTree(t, tt.files))
			if err != nil {
				t.Fatalf("Load: %v", err)
			}
			if len(warns) > 0 {
				t.Errorf("warnings: %q", warns)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("Load =\n %+v\nwant\n %+v", got, tt.want)
			}
		})
	}
}

// TestNetworkNoneIsHost: the deprecated network: none loads as host,
// with a warning that says so.
func TestNetworkNoneIsHost(t *testing.T) {
	got, warns, err := Load(writeTree(t, map[string]string{"f.py": "", "function.yaml": "network: none"}))
	if err != nil {
		t.Fatal(err)
	}
	if got.Network != NetworkHost || !got.HostNetwork() {
		t.Errorf("network: none loaded as %q, want %q", got.Network, NetworkHost)
	}
	if len(warns) != 1 || !strings.Contains(warns[0], "deprecated") || !strings.Contains(warns[0], `"host"`) {
		t.Errorf("warnings %q, want one saying none is deprecated and means host", warns)
	}
	// An old record keeps "none": it validates and means the host's.
	old := got
	old.Network = NetworkNone
	if err := old.Validate(); err != nil || !old.HostNetwork() {
		t.Errorf("record with network none: Validate %v, HostNetwork %v", err, old.HostNetwork())
	}
}

func TestLoadErrors(t *testing.T) {
	tests := []struct {
		name  string
		files map[string]string
		want  error
		msg   string
	}{
		{"no handler module", map[string]string{"other.py": ""}, ErrInvalid, "lambda_function.py"},
		{"missing module", map[string]string{"f.py": "", "function.yaml": "handler: nope.run"}, ErrInvalid, "nope.py"},
		{"missing dotted module", map[string]string{"a/b.py": "", "function.yaml": "handler: a.c.run"}, ErrInvalid, "a/c.py"},
		{"module is a dir", map[string]string{"m/x.py": "", "function.yaml": "handler: m.run"}, ErrInvalid, "m/__init__.py"},
		{"handler without dot", map[string]string{"f.py": "", "function.yaml": "handler: f"}, ErrInvalid, "module.function"},
		{"handler bad ident", map[string]string{"f.py": "", "function.yaml": "handler: f.1x"}, ErrInvalid, "identifier"},
		{"handler traversal", map[string]string{"f.py": "", "function.yaml": "handler: ..f.f"}, ErrInvalid, "identifier"},
		{"handler slash", map[string]string{"f.py": "", "function.yaml": "handler: a/b.f"}, ErrInvalid, "identifier"},
		{"unknown field", map[string]string{"f.py": "", "function.yaml": "memory: 128"}, ErrInvalid, "memory"},
		{"bad yaml", map[string]string{"f.py": "", "function.yaml": "handler: [unclosed"}, ErrInvalid, "function.yaml"},
		{"wrong type", map[string]string{"f.py": "", "function.yaml": "memory_mb: lots"}, ErrInvalid, "line 1"},
		{"two documents", map[string]string{"f.py": "", "function.yaml": "memory_mb: 64\n---\nmemory_mb: 99\n"}, ErrInvalid, "more than one"},
		{"memory low", map[string]string{"f.py": "", "function.yaml": "memory_mb: 15"}, ErrInvalid, "memory_mb"},
		{"memory zero", map[string]string{"f.py": "", "function.yaml": "memory_mb: 0"}, ErrInvalid, "memory_mb"},
		{"memory high", map[string]string{"f.py": "", "function.yaml": "memory_mb: 16385"}, ErrInvalid, "memory_mb"},
		{"timeout zero", map[string]string{"f.py": "", "function.yaml": "timeout_s: 0"}, ErrInvalid, "timeout_s"},
		{"timeout high", map[string]string{"f.py": "", "function.yaml": "timeout_s: 901"}, ErrInvalid, "timeout_s"},
		{"concurrency negative", map[string]string{"f.py": "", "function.yaml": "max_concurrency: -1"}, ErrInvalid, "max_concurrency"},
		{"cpus negative", map[string]string{"f.py": "", "function.yaml": "cpus: -1"}, ErrInvalid, "cpus"},
		{"cpus tiny", map[string]string{"f.py": "", "function.yaml": "cpus: 0.001"}, ErrInvalid, "cpus"},
		{"cpus huge", map[string]string{"f.py": "", "function.yaml": "cpus: 1000"}, ErrInvalid, "cpus"},
		{"cpus nan", map[string]string{"f.py": "", "function.yaml": "cpus: .nan"}, ErrInvalid, "cpus"},
		{"cpus not a number", map[string]string{"f.py": "", "function.yaml": "cpus: lots"}, ErrInvalid, "line 1"},
		{"env bad key", map[string]string{"f.py": "", "function.yaml": "env: {\"A-B\": x}"}, ErrInvalid, "A-B"},
		{"env digit key", map[string]string{"f.py": "", "function.yaml": "env: {\"1A\": x}"}, ErrInvalid, "1A"},
		{"env reserved", map[string]string{"f.py": "", "function.yaml": "env: {HEARTH_SOCKET: x}"}, ErrInvalid, "reserved"},
		{"env reserved lower", map[string]string{"f.py": "", "function.yaml": "env: {hearth_x: x}"}, ErrInvalid, "reserved"},
		{"env not a map", map[string]string{"f.py": "", "function.yaml": "env: [a, b]"}, ErrInvalid, "cannot unmarshal"},
		{"network bogus", map[string]string{"f.py": "", "function.yaml": "network: bridge"}, ErrInvalid, "bridge"},
		{"network empty", map[string]string{"f.py": "", "function.yaml": "network: \"\""}, ErrInvalid, "not one of isolated, offline, host"},
		{"snapshot bogus", map[string]string{"f.py": "", "function.yaml": "snapshot: sometimes"}, ErrInvalid, "sometimes"},
		{"tmp too small", map[string]string{"f.py": "", "function.yaml": "tmp_mb: 7"}, ErrInvalid, "tmp_mb"},
		{"tmp too big", map[string]string{"f.py": "", "function.yaml": "tmp_mb: 10241"}, ErrInvalid, "tmp_mb"},
		{"tmp storage bogus", map[string]string{"f.py": "", "function.yaml": "tmp_storage: ssd"}, ErrInvalid, "ssd"},
		{"yaml too big", map[string]string{"f.py": "", "function.yaml": "#" + strings.Repeat("x", MaxConfigBytes)}, ErrInvalid, "larger"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, _, err := Load(writeTree(t, tt.files))
			if !errors.Is(err, tt.want) {
				t.Fatalf("Load error = %v, want %v", err, tt.want)
			}
			if !strings.Contains(err.Error(), tt.msg) {
				t.Errorf("error %q does not mention %q", err, tt.msg)
			}
		})
	}
}

func TestLoadNotDir(t *testing.T) {
	dir := writeTree(t, map[string]string{"f.py": ""})
	if _, _, err := Load(filepath.Join(dir, "f.py")); !errors.Is(err, ErrInvalid) {
		t.Errorf("Load(file) = %v, want ErrInvalid", err)
	}
	if _, _, err := Load(filepath.Join(dir, "missing")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Load(missing) = %v, want ErrNotExist", err)
	}
}

func TestModule(t *testing.T) {
	tests := []struct{ h, mod, fn string }{
		{"f.f", "f", "f"},
		{"a.b.c.handler", "a.b.c", "handler"},
		{"_m._f", "_m", "_f"},
	}
	for _, tt := range tests {
		t.Run(tt.h, func(t *testing.T) {
			m, f, err := Spec{Handler: tt.h}.Module()
			if err != nil || m != tt.mod || f != tt.fn {
				t.Errorf("Module(%q) = %q, %q, %v", tt.h, m, f, err)
			}
		})
	}
}

func TestParseRequirements(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want []string
	}{
		{"empty", "", nil},
		{"comments", "# top\n\n  numpy # trailing\nurl#frag\n", []string{"numpy", "url#frag"}},
		{"continuation", "a\\\n>=1\nb", []string{"a>=1", "b"}},
		{"trailing continuation", "a\\", []string{"a"}},
		{"crlf-free spaces", "  pillow  \n\t\n", []string{"pillow"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseRequirements([]byte(tt.in))
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got %q, want %q", got, tt.want)
			}
		})
	}
}

// TestCPUsFollowMemory: without cpus, a sandbox's quota grows with its
// memory at the worker's rate; cpus, when set, wins.
func TestCPUsFollowMemory(t *testing.T) {
	for _, c := range []struct {
		mem   int
		cpus  float64
		perGB float64
		want  float64
	}{
		{128, 0, DefaultCPUsPerGB, 1},
		{512, 0, DefaultCPUsPerGB, 4},
		{64, 0, DefaultCPUsPerGB, 0.5},
		{1769, 0, 1024.0 / 1769, 1}, // Lambda's rate
		{512, 0.25, DefaultCPUsPerGB, 0.25},
		{1, 0, 0.001, MinCPUs},
	} {
		s := Spec{MemoryMB: c.mem, CPUs: c.cpus}
		if got := s.CPUsFor(c.perGB); got < c.want-1e-9 || got > c.want+1e-9 {
			t.Errorf("memory %d MB, cpus %g, %g per GB: %g CPUs, want %g", c.mem, c.cpus, c.perGB, got, c.want)
		}
	}
}
