// Package types holds the JSON shapes of Hearth's HTTP API: the bodies
// the worker's API (internal/api) answers and its clients (internal/client,
// the CLI, replay, and the gateway and Lambda API to come) decode. It is a
// leaf: it imports only the function description (internal/function),
// never the server side, so a client links no sandbox, cgroup, namespace
// or CRIU code. The worker and the zygote manager fill in some of these
// values directly (their Status, LogTail, NodeInfo are these types).
//
// Field names and tags are the wire format: renaming one breaks clients.
package types

import (
	"time"

	"github.com/hearth-run/hearth/internal/function"
)

// Error is the body of every error response (errorType and errorMessage,
// as AWS Lambda's). A handler's own error (X-Hearth-Error: Unhandled or
// LoadError) carries its stack trace too.
type Error struct {
	Type       string   `json:"errorType"`
	Message    string   `json:"errorMessage"`
	StackTrace []string `json:"stackTrace,omitempty"`
}

// Function is a deployed function: the body of PUT and GET
// /v1/functions/{name}, and GET /v1/functions lists them. Its host
// directory is never sent.
type Function = function.Function

// Package is one resolved distribution of a function's requirements.
type Package = function.Package

// Spec is a function's configuration, as deployed.
type Spec = function.Spec

// Status is the body of GET /v1/status: a snapshot of the worker's state.
type Status struct {
	CgroupMode string        `json:"cgroup_mode"`
	Tiers      Tiers         `json:"tiers"`
	Sandboxes  []SandboxInfo `json:"sandboxes"`
	WarmBytes  int64         `json:"warm_bytes"`
	WarmBudget int64         `json:"warm_budget_bytes"`
	Policy     string        `json:"policy"`
	Pools      []PoolStatus  `json:"pools"`
	// Charge is what the warm pool charges a new sandbox until it is
	// paused and measured: "peak" or "declared". Charges lists each
	// function revision's.
	Charge  string        `json:"charge"`
	Charges []StartCharge `json:"charges"`
	// GrowthEveryMs is how often a sandbox in a call is measured and
	// charged its growth; a shorter call is not.
	GrowthEveryMs float64 `json:"growth_every_ms"`
}

// StartCharge is what the warm pool charges a new sandbox of a function
// revision until it is paused and measured, unless its call makes it
// grow past that.
type StartCharge struct {
	Function string `json:"function"`
	Revision string `json:"revision"`
	Declared int64  `json:"declared_bytes"` // its memory limit
	// Peak is the highest peak memory of its last sandboxes after a call
	// (0 before the first). Where the pool charges declared memory it is
	// only reported.
	Peak  int64 `json:"peak_bytes"`
	Start int64 `json:"start_bytes"`
	// Grown is what a call that takes Peak is charged once its growth is
	// seen (sampled every GrowthEveryMs into the call): a paused sandbox
	// is charged what it held when paused, and its call's growth on top
	// of that. 0 before the first peak.
	Grown int64 `json:"grown_bytes,omitempty"`
	// GrowthMs is the mean time from the start of a call whose growth
	// was charged to the last such charge (0: none seen). In a burst it
	// comes late: the calls touch their memory while sharing the CPUs.
	GrowthMs float64 `json:"growth_ms,omitempty"`
}

// Tiers says which cache tiers are on; each can be switched off so that
// one machine can compare designs side by side.
type Tiers struct {
	Warm      bool `json:"warm"`
	Snapshots bool `json:"snapshots"`
	Zygotes   bool `json:"zygotes"`
	Pools     bool `json:"pools"`
	// SnapshotsOff says why snapshots are off, when they are.
	SnapshotsOff string `json:"snapshots_off,omitempty"`
	// ZygotesOff says why zygotes are off on this host, when a probe
	// found they cannot fork.
	ZygotesOff string `json:"zygotes_off,omitempty"`
}

// SandboxInfo describes one live sandbox.
type SandboxInfo struct {
	ID       string `json:"id"`
	Function string `json:"function"`
	Revision string `json:"revision"`
	State    string `json:"state"`
	// Memory is what the sandbox's cgroup is charged. Pages its processes
	// share with a zygote are charged to the zygote, and so are those a
	// forked child copied before it joined the cgroup.
	Memory int64 `json:"memory_bytes"`
	// Private is the memory mapped by the sandbox's processes alone (smaps
	// Private_Clean + Private_Dirty), wherever it is charged.
	Private int64 `json:"private_bytes"`
	// Pids are the host pids of the processes in the sandbox's cgroup:
	// its runtime and what that started.
	Pids []int `json:"pids,omitempty"`
}

// PoolStatus describes one pool (partition) of the warm pool.
type PoolStatus struct {
	Name string `json:"name"`
	// MaxSize is the largest declared memory limit routed here; 0 for the
	// last pool, which takes every size.
	MaxSize  int64 `json:"max_size_bytes"`
	Capacity int64 `json:"capacity_bytes"`
	// Used is the memory charged to the pool: busy and paused sandboxes at
	// their measured cgroup usage (declared limit until first measured),
	// plus what it lends to other pools.
	Used          int64  `json:"used_bytes"`
	Idle          int64  `json:"idle_bytes"`
	Borrowed      int64  `json:"borrowed_bytes"`
	Lent          int64  `json:"lent_bytes"`
	Sandboxes     int    `json:"sandboxes"`
	IdleSandboxes int    `json:"idle_sandboxes"`
	Hits          uint64 `json:"hits"`
	Misses        uint64 `json:"misses"` // cold starts
	Drops         uint64 `json:"drops"`  // requests refused for lack of memory
	Evictions     uint64 `json:"evictions"`
	Expirations   uint64 `json:"expirations"`
	Prewarms      uint64 `json:"prewarms"`
}

// LogLine is one line a function's sandboxes printed.
type LogLine struct {
	// Seq numbers the function's lines from 1, in the order they reached
	// the worker.
	Seq    uint64    `json:"seq"`
	Time   time.Time `json:"time"`
	Stream string    `json:"stream"` // "stdout" or "stderr"
	Text   string    `json:"text"`
}

// LogTail is a slice of a function's log, and where it sits in all the
// lines the function printed.
type LogTail struct {
	// Epoch names this log: a function deleted and deployed again, or a
	// restarted worker, starts a new one with Seq from 1.
	Epoch string    `json:"epoch"`
	Lines []LogLine `json:"lines"`
	// Older counts the kept lines before Lines that n left out.
	Older int `json:"older"`
	// Dropped counts the lines before Lines (since Since, if given) that
	// the worker no longer keeps.
	Dropped uint64 `json:"dropped"`
	// Next is the Seq after the last line of Lines (or of the log, if
	// Lines is empty): Since to ask for what follows.
	Next uint64 `json:"next"`
	// Newer counts the kept lines after Lines that n left out.
	Newer int `json:"newer"`
	// Limit is how many lines the worker keeps of a function, and
	// LimitBytes how much of all functions' lines (the oldest lines of the
	// functions holding the most go first).
	Limit      int   `json:"limit"`
	LimitBytes int64 `json:"limit_bytes"`
}

// FunctionLog is the body of GET /v1/functions/{name}/logs.
type FunctionLog struct {
	Function string `json:"function"`
	LogTail
}

// Snapshot describes one snapshot the worker knows of: an element of
// GET /v1/snapshots, and the body of POST /v1/functions/{name}/snapshot.
type Snapshot struct {
	Key      string    `json:"key"`
	Function string    `json:"function"`
	Revision string    `json:"revision"`
	Bytes    int64     `json:"bytes"`
	Blocks   int64     `json:"disk_bytes"`
	Created  time.Time `json:"created"`
	LastUse  time.Time `json:"last_use"`
	Local    bool      `json:"local"`
	Remote   bool      `json:"remote"`
}

// SnapshotList is the body of GET /v1/snapshots. Off says why snapshots
// are off, when they are.
type SnapshotList struct {
	Enabled   bool       `json:"enabled"`
	Off       string     `json:"off"`
	Snapshots []Snapshot `json:"snapshots"`
}

// ZygoteNode describes one node of the live zygote tree.
type ZygoteNode struct {
	ID       int      `json:"id"`
	Parent   int      `json:"parent"`
	Packages []string `json:"packages"`
	Modules  []string `json:"modules"`
	Replicas int      `json:"replicas"`
	Pids     []int    `json:"pids"`
	Hits     int64    `json:"hits"`
	Forks    int64    `json:"forks"`
	Memory   int64    `json:"memory_bytes"`
	// HugeCode is how many bytes of code the node's first zygote moved
	// onto transparent huge pages of its own (the hot 2 MiB stretches of
	// its libraries' code, shared by its children; each replica moves
	// its own), and HugeCodeError why any moved no more, if something
	// failed.
	HugeCode      int64  `json:"huge_code_bytes"`
	HugeCodeError string `json:"huge_code_error,omitempty"`
	LastUse       string `json:"last_use,omitempty"`
	Static        bool   `json:"static"`
	// Deployed is true for a node planted for deployed functions'
	// package sets, before their first call.
	Deployed bool `json:"deployed"`
	// Failures is how many of the node's builds failed (or made a zygote
	// that died young) since it last had one that lived, and RetryAt when
	// the next try starts; both are set only while the node waits for it.
	Failures int    `json:"failures,omitempty"`
	RetryAt  string `json:"retry_at,omitempty"`
	// Spares is how many children of this node wait, forked ahead of
	// need, for a function (filled in by the worker).
	Spares int `json:"spares"`
}

// ZygoteTree is the body of GET /v1/zygotes, root first. Enabled is
// false when the worker runs without zygotes.
type ZygoteTree struct {
	Enabled bool         `json:"enabled"`
	Nodes   []ZygoteNode `json:"nodes"`
}

// PackageInfo is one installed package in GET /v1/packages.
type PackageInfo struct {
	Package
	Size      int64     `json:"size"`
	Installed time.Time `json:"installed"`
	LastUse   time.Time `json:"last_use"`
	// Users are the deployed functions whose package set holds it.
	Users []string `json:"users"`
}

// PackageList is the body of GET /v1/packages: the worker's install
// cache. Enabled is false when the worker runs without one.
type PackageList struct {
	Enabled  bool          `json:"enabled"`
	Packages []PackageInfo `json:"packages"`
}

// FunctionInfo is a function as the API returns it: its environment's
// values never leave the worker (they are often secrets, and anything
// holding the token, or a log of responses, would have them), only
// their names, in spec.env_keys.
type FunctionInfo struct {
	Function
	Spec PublicSpec `json:"spec"`
}

// PublicSpec is a function.Spec without Env's values.
type PublicSpec struct {
	function.Spec
	EnvKeys []string `json:"env_keys,omitempty"`
}
