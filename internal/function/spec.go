package function

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"

	"go.yaml.in/yaml/v3"
)

// File names read from a function's code directory.
const (
	ConfigFile       = "function.yaml"
	RequirementsFile = "requirements.txt"
)

// Defaults applied by Parse and Load to fields that function.yaml leaves
// out.
const (
	DefaultMemoryMB = 128
	DefaultTimeoutS = 30
	// DefaultMaxConcurrency is the number of sandboxes one function may
	// use at once when max_concurrency is absent or 0. Four keeps a burst
	// from one function from taking over a small (2-core) worker while
	// still overlapping I/O-bound handlers.
	DefaultMaxConcurrency = 4
	// DefaultTmpMB is the size of /tmp, AWS Lambda's default ephemeral
	// storage.
	DefaultTmpMB = 512
	// DefaultCPUs is the CPU quota of a sandbox of DefaultMemoryMB when
	// cpus is absent or 0: one CPU's time, so that one busy function
	// cannot take a small worker's every core from the others.
	DefaultCPUs = 1.0
	// DefaultCPUsPerGB is the CPU quota per GB of memory of a function
	// without cpus: as Lambda, CPU in proportion to memory, at a rate
	// that gives DefaultMemoryMB DefaultCPUs. Workers may set their own.
	DefaultCPUsPerGB = DefaultCPUs * 1024 / DefaultMemoryMB
)

// Limits enforced by Validate.
const (
	MinMemoryMB       = 16
	MaxMemoryMB       = 16384
	MinTimeoutS       = 1
	MaxTimeoutS       = 900
	MaxMaxConcurrency = 1000
	MinTmpMB          = 8
	MaxTmpMB          = 10240 // AWS Lambda's largest ephemeral storage
	// MinCPUs is the smallest quota the kernel takes (1 ms per 100 ms).
	MinCPUs = 0.01
	MaxCPUs = 256
	// MaxConfigBytes bounds function.yaml and requirements.txt.
	MaxConfigBytes = 64 << 10
)

// Network modes.
const (
	// NetworkIsolated, the default, gives each sandbox its own network
	// namespace from the worker's pool: a veth to an isolated bridge
	// port, a private address and a default route, with egress through
	// the host's NAT unless the operator turns it off. It reaches
	// neither the host's addresses nor other sandboxes.
	NetworkIsolated = "isolated"
	// NetworkOffline gives each sandbox an empty network namespace of
	// its own: no interface but a loopback that is down, so no IP
	// traffic at all (and no abstract unix socket shared with anyone).
	NetworkOffline = "offline"
	// NetworkHost runs the sandbox in the host's network namespace (as
	// SOCK does): the fastest start, but the function sees the host's
	// interfaces and can bind its ports. A worker accepts it only when
	// its operator allows it (allow_host_network), and even then drops
	// the function's packets to the host's own addresses.
	NetworkHost = "host"
	// NetworkNone is the deprecated name of NetworkHost (it never meant
	// "no network"). Parse reads it as NetworkHost and Load warns;
	// records deployed before the rename keep it and mean the same.
	NetworkNone = "none"
)

// Snapshot modes. The empty string means the same as SnapshotAuto.
const (
	SnapshotAuto   = "auto"
	SnapshotAlways = "always"
	SnapshotNever  = "never"
)

// Where /tmp lives. The empty string means the same as TmpDisk.
const (
	// TmpDisk puts /tmp in a file system on the worker's disk: its files
	// are page cache, which the kernel writes back and reclaims, so a
	// function can keep more in /tmp than its memory_mb.
	TmpDisk = "disk"
	// TmpMemory puts /tmp in a tmpfs: faster, but every byte in it counts
	// against memory_mb.
	TmpMemory = "memory"
)

// ReservedEnvPrefix starts environment names that Hearth sets itself;
// functions may not set them.
const ReservedEnvPrefix = "HEARTH_"

// Spec is the configuration of a function. The zero value is not valid;
// obtain one from Load or Parse.
type Spec struct {
	// Handler is "module.func"; module may be dotted (pkg.mod.func).
	Handler string `json:"handler"`
	// MemoryMB is the sandbox memory limit.
	MemoryMB int `json:"memory_mb"`
	// TimeoutS is the per-invocation time limit in seconds.
	TimeoutS int `json:"timeout_s"`
	// MaxConcurrency is the most sandboxes serving this function at once.
	MaxConcurrency int `json:"max_concurrency"`
	// CPUs is each sandbox's CPU quota in CPUs (0.5: half of one CPU's
	// time). Zero (absent) means in proportion to MemoryMB; see CPUsFor.
	CPUs float64 `json:"cpus,omitempty"`
	// Env is added to the handler's environment.
	Env map[string]string `json:"env,omitempty"`
	// Network is NetworkIsolated, NetworkOffline or NetworkHost (or
	// NetworkNone, its old name, in records deployed before the rename).
	Network string `json:"network"`
	// Snapshot is "", SnapshotAuto, SnapshotAlways or SnapshotNever.
	Snapshot string `json:"snapshot"`
	// TmpMB is the most a sandbox can keep in /tmp. Records written before
	// it existed read 0, which means DefaultTmpMB.
	TmpMB int `json:"tmp_mb"`
	// TmpStorage is "", TmpDisk or TmpMemory.
	TmpStorage string `json:"tmp_storage,omitempty"`
	// Requirements are the requirement lines of requirements.txt, with
	// comments, blank lines and line continuations removed.
	Requirements []string `json:"requirements,omitempty"`
}

// file mirrors function.yaml. Pointers tell an absent field from a zero.
type file struct {
	Handler        *string           `yaml:"handler"`
	MemoryMB       *int              `yaml:"memory_mb"`
	TimeoutS       *int              `yaml:"timeout_s"`
	MaxConcurrency *int              `yaml:"max_concurrency"`
	CPUs           *float64          `yaml:"cpus"`
	Env            map[string]string `yaml:"env"`
	Network        *string           `yaml:"network"`
	Snapshot       *string           `yaml:"snapshot"`
	TmpMB          *int              `yaml:"tmp_mb"`
	TmpStorage     *string           `yaml:"tmp_storage"`
}

// Parse decodes function.yaml content and fills defaults for absent fields.
// Handler is left empty when absent: its default depends on the code
// directory (see Load). Unknown fields are an error. Parse does not call
// Validate. network: none is read as NetworkHost.
func Parse(data []byte) (Spec, error) {
	s, _, err := parse(data)
	return s, err
}

// noneWarning is Load's warning for the deprecated network: none.
const noneWarning = ConfigFile + `: network: "none" is deprecated and means "host" (the host's network namespace, which the worker must allow); ` +
	`write network: host, or drop the line for the default, isolated`

// parse is Parse; deprecated reports a network: none read as host.
func parse(data []byte) (_ Spec, deprecated bool, _ error) {
	var f file
	if len(bytes.TrimSpace(data)) > 0 {
		dec := yaml.NewDecoder(bytes.NewReader(data))
		dec.KnownFields(true)
		if err := dec.Decode(&f); err != nil && !errors.Is(err, io.EOF) {
			return Spec{}, false, fmt.Errorf("%s: %s: %w", ConfigFile, yamlMsg(err), ErrInvalid)
		}
		// A second document would be silently ignored; refuse it.
		var extra any
		if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
			return Spec{}, false, fmt.Errorf("%s: more than one YAML document: %w", ConfigFile, ErrInvalid)
		}
	}
	s := Spec{
		MemoryMB:       DefaultMemoryMB,
		TimeoutS:       DefaultTimeoutS,
		MaxConcurrency: DefaultMaxConcurrency,
		Network:        NetworkIsolated,
		Env:            f.Env,
		TmpMB:          DefaultTmpMB,
	}
	if f.Handler != nil {
		s.Handler = *f.Handler
	}
	if f.MemoryMB != nil {
		s.MemoryMB = *f.MemoryMB
	}
	if f.TimeoutS != nil {
		s.TimeoutS = *f.TimeoutS
	}
	if f.MaxConcurrency != nil && *f.MaxConcurrency != 0 {
		s.MaxConcurrency = *f.MaxConcurrency
	}
	if f.CPUs != nil && *f.CPUs != 0 {
		s.CPUs = *f.CPUs
	}
	if f.Network != nil {
		s.Network = *f.Network
	}
	if s.Network == NetworkNone {
		s.Network, deprecated = NetworkHost, true
	}
	if f.Snapshot != nil {
		s.Snapshot = *f.Snapshot
	}
	if f.TmpMB != nil {
		s.TmpMB = *f.TmpMB
	}
	if f.TmpStorage != nil {
		s.TmpStorage = *f.TmpStorage
	}
	return s, deprecated, nil
}

// yamlMsg drops the "yaml: " prefix so messages read as one sentence.
func yamlMsg(err error) string {
	return strings.TrimPrefix(err.Error(), "yaml: ")
}

var (
	identRE  = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)
	envKeyRE = identRE
)

// Validate checks the fields that do not depend on the code directory:
// limits, env names, network and snapshot modes, and the handler's syntax.
// Errors wrap ErrInvalid.
func (s Spec) Validate() error {
	if _, _, err := splitHandler(s.Handler); err != nil {
		return err
	}
	if s.MemoryMB < MinMemoryMB || s.MemoryMB > MaxMemoryMB {
		return fmt.Errorf("memory_mb: %d is outside %d..%d: %w", s.MemoryMB, MinMemoryMB, MaxMemoryMB, ErrInvalid)
	}
	if s.TimeoutS < MinTimeoutS || s.TimeoutS > MaxTimeoutS {
		return fmt.Errorf("timeout_s: %d is outside %d..%d: %w", s.TimeoutS, MinTimeoutS, MaxTimeoutS, ErrInvalid)
	}
	if s.MaxConcurrency < 1 || s.MaxConcurrency > MaxMaxConcurrency {
		return fmt.Errorf("max_concurrency: %d is outside 1..%d (0 in function.yaml means %d): %w",
			s.MaxConcurrency, MaxMaxConcurrency, DefaultMaxConcurrency, ErrInvalid)
	}
	if c := s.CPULimit(); c < MinCPUs || c > MaxCPUs || c != c {
		return fmt.Errorf("cpus: %g is outside %g..%d (0 in function.yaml means %g): %w", s.CPUs, MinCPUs, MaxCPUs, DefaultCPUs, ErrInvalid)
	}
	if err := checkEnv("env", s.Env); err != nil {
		return err
	}
	switch s.Network {
	case NetworkIsolated, NetworkOffline, NetworkHost, NetworkNone:
	default:
		return fmt.Errorf("network: %q is not one of isolated, offline, host: %w", s.Network, ErrInvalid)
	}
	switch s.Snapshot {
	case "", SnapshotAuto, SnapshotAlways, SnapshotNever:
	default:
		return fmt.Errorf("snapshot: %q is not one of auto, always, never: %w", s.Snapshot, ErrInvalid)
	}
	if s.TmpMB < MinTmpMB || s.TmpMB > MaxTmpMB {
		return fmt.Errorf("tmp_mb: %d is outside %d..%d: %w", s.TmpMB, MinTmpMB, MaxTmpMB, ErrInvalid)
	}
	switch s.TmpStorage {
	case "", TmpDisk, TmpMemory:
	default:
		return fmt.Errorf("tmp_storage: %q is not one of disk, memory: %w", s.TmpStorage, ErrInvalid)
	}
	return nil
}

// checkEnv checks environment names and values; field names where they
// come from in messages.
func checkEnv(field string, env map[string]string) error {
	keys := make([]string, 0, len(env))
	for k := range env {
		keys = append(keys, k)
	}
	sort.Strings(keys) // report the same key every time
	for _, k := range keys {
		if !envKeyRE.MatchString(k) {
			return fmt.Errorf("%s: %q is not a valid variable name (letters, digits, _; not starting with a digit): %w", field, k, ErrInvalid)
		}
		if strings.HasPrefix(strings.ToUpper(k), ReservedEnvPrefix) {
			return fmt.Errorf("%s: %q is reserved (names starting with %s are set by Hearth): %w", field, k, ReservedEnvPrefix, ErrInvalid)
		}
		if strings.IndexByte(env[k], 0) >= 0 {
			return fmt.Errorf("%s: value of %q contains a NUL byte: %w", field, k, ErrInvalid)
		}
	}
	return nil
}

// HostNetwork reports whether the function runs in the host's network
// namespace (network: host, or none in an old record).
func (s Spec) HostNetwork() bool {
	return s.Network == NetworkHost || s.Network == NetworkNone
}

// CPULimit is CPUsFor at DefaultCPUsPerGB.
func (s Spec) CPULimit() float64 { return s.CPUsFor(DefaultCPUsPerGB) }

// CPUsFor is the sandbox's CPU quota in CPUs: CPUs, or for a spec
// without, perGB CPUs per GB of MemoryMB, within MinCPUs..MaxCPUs.
func (s Spec) CPUsFor(perGB float64) float64 {
	if s.CPUs != 0 {
		return s.CPUs
	}
	return min(max(float64(s.MemoryMB)/1024*perGB, MinCPUs), MaxCPUs)
}

// Module returns the handler's module ("pkg.mod") and function name.
func (s Spec) Module() (module, fn string, err error) {
	return splitHandler(s.Handler)
}

func splitHandler(h string) (module, fn string, err error) {
	if h == "" {
		return "", "", fmt.Errorf("handler: empty: %w", ErrInvalid)
	}
	i := strings.LastIndexByte(h, '.')
	if i < 0 {
		return "", "", fmt.Errorf("handler: %q is not of the form module.function: %w", h, ErrInvalid)
	}
	module, fn = h[:i], h[i+1:]
	for _, part := range append(strings.Split(module, "."), fn) {
		if !identRE.MatchString(part) {
			return "", "", fmt.Errorf("handler: %q: %q is not a Python identifier: %w", h, part, ErrInvalid)
		}
	}
	return module, fn, nil
}

// ModuleFile returns the path, relative to the code directory, of the file
// that defines the handler's module, checking module.py then
// module/__init__.py (dots in the module become directories).
func (s Spec) ModuleFile(dir string) (string, error) {
	module, _, err := splitHandler(s.Handler)
	if err != nil {
		return "", err
	}
	base := filepath.Join(strings.Split(module, ".")...)
	cands := []string{base + ".py", filepath.Join(base, "__init__.py")}
	for _, c := range cands {
		fi, err := os.Stat(filepath.Join(dir, c))
		if err == nil && fi.Mode().IsRegular() {
			return c, nil
		}
	}
	return "", fmt.Errorf("handler %q: module %q not found (looked for %s and %s): %w",
		s.Handler, module, cands[0], cands[1], ErrInvalid)
}

// Load reads the function in dir: function.yaml, OpenLambda's ol.yaml and
// requirements.txt, all optional. It fills defaults, picks the default
// handler (OL_ENTRY_FILE's module.f when ol.yaml sets it, f.f when f.py
// exists, else lambda_function.lambda_handler), validates the result and
// checks that the handler's module file exists. ol.yaml's environment is
// added to the function's; function.yaml wins where both set a variable.
// The warnings say what of ol.yaml the Spec leaves out. Requirements are
// parsed but not checked against a base image; see CheckRequirements.
func Load(dir string) (_ Spec, warnings []string, _ error) {
	fi, err := os.Stat(dir)
	if err != nil {
		return Spec{}, nil, fmt.Errorf("loading function: %w", err)
	}
	if !fi.IsDir() {
		return Spec{}, nil, fmt.Errorf("loading function: %s is not a directory: %w", dir, ErrInvalid)
	}
	data, err := readSmall(filepath.Join(dir, ConfigFile))
	if err != nil {
		return Spec{}, nil, err
	}
	s, deprecated, err := parse(data)
	if err != nil {
		return Spec{}, nil, err
	}
	data, err = readSmall(filepath.Join(dir, OpenLambdaFile))
	if err != nil {
		return Spec{}, nil, err
	}
	ol, warnings, err := parseOpenLambda(data)
	if err != nil {
		return Spec{}, nil, err
	}
	if len(ol.Env) > 0 {
		env := maps.Clone(ol.Env)
		for _, k := range slices.Sorted(maps.Keys(s.Env)) {
			if v, ok := env[k]; ok && v != s.Env[k] {
				warnings = append(warnings, fmt.Sprintf("%s: environment.%s: ignored: %s's env sets it", OpenLambdaFile, k, ConfigFile))
			}
			env[k] = s.Env[k]
		}
		s.Env = env
	}
	switch {
	case s.Handler != "" && ol.Module != "":
		warnings = append(warnings, fmt.Sprintf("%s: environment.%s: not used to pick the handler: %s sets handler %s", OpenLambdaFile, olEntryFile, ConfigFile, s.Handler))
	case ol.Module != "":
		s.Handler = ol.Module + ".f"
	case s.Handler == "":
		s.Handler = "lambda_function.lambda_handler"
		if fi, err := os.Stat(filepath.Join(dir, "f.py")); err == nil && fi.Mode().IsRegular() {
			s.Handler = "f.f"
		}
	}
	req, err := readSmall(filepath.Join(dir, RequirementsFile))
	if err != nil {
		return Spec{}, nil, err
	}
	if s.Requirements, err = ParseRequirements(req); err != nil {
		return Spec{}, nil, err
	}
	if deprecated {
		warnings = append(warnings, noneWarning)
	}
	if err := s.Validate(); err != nil {
		return Spec{}, nil, err
	}
	if _, err := s.ModuleFile(dir); err != nil {
		return Spec{}, nil, err
	}
	return s, warnings, nil
}

// readSmall reads an optional config file; a missing file is empty.
func readSmall(p string) ([]byte, error) {
	f, err := os.Open(p)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", filepath.Base(p), err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", filepath.Base(p), err)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%s is not a regular file: %w", filepath.Base(p), ErrInvalid)
	}
	data, err := io.ReadAll(io.LimitReader(f, MaxConfigBytes+1))
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", filepath.Base(p), err)
	}
	if len(data) > MaxConfigBytes {
		return nil, fmt.Errorf("%s is larger than %d bytes: %w", filepath.Base(p), MaxConfigBytes, ErrInvalid)
	}
	return data, nil
}

// ParseRequirements splits requirements.txt content into requirement
// lines. It joins backslash continuations and drops comments ("#" at the
// start of a line or after whitespace) and blank lines. It does not
// interpret the lines; CheckRequirements does.
func ParseRequirements(data []byte) ([]string, error) {
	var out []string
	var cont strings.Builder
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 0, 4096), MaxConfigBytes+1)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasSuffix(line, `\`) {
			cont.WriteString(strings.TrimSuffix(line, `\`))
			continue
		}
		cont.WriteString(line)
		line = cont.String()
		cont.Reset()
		if l := stripComment(line); l != "" {
			out = append(out, l)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%s: %w", RequirementsFile, err)
	}
	if l := stripComment(cont.String()); l != "" {
		out = append(out, l)
	}
	return out, nil
}

func stripComment(line string) string {
	for i := 0; i < len(line); i++ {
		if line[i] == '#' && (i == 0 || line[i-1] == ' ' || line[i-1] == '\t') {
			line = line[:i]
			break
		}
	}
	return strings.TrimSpace(line)
}
