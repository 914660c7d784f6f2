// Package cgroup gives each Hearth sandbox its own control group on both
// cgroup v1 and cgroup v2 hosts.
//
// A [Manager] owns one parent group per worker (for example "hearth") and
// creates one child [Group] per sandbox with a memory limit, a pids limit and
// a CPU weight. On v1 the parent and its children live in exactly four
// hierarchies (memory, cpu, pids, freezer); the others are left alone so
// that creating and deleting a group stays cheap. On v2 the parent enables
// the memory, pids and cpu controllers for its children.
//
// Creation and limits go through github.com/containerd/cgroups/v3. The hot
// paths (attach, freeze, kill, delete, usage and OOM counters) read and write
// cgroupfs files directly: the library either reads far more than needed
// (Stat parses every statistics file), polls with a fixed 1 ms sleep, lists
// processes with a recursive walk before rmdir, or lacks the value (the v1
// oom_kill counter).
//
// A [Pool] keeps a reserve of pre-made groups of one Manager, refilled in
// the background, so that a cold start takes a group in tens of
// microseconds instead of creating one in four hierarchies. Put cleans a
// returned group for reuse (kills what is left, removes child groups,
// thaws it, resets limits and the counters the kernel lets us reset, and
// takes the OOM-kill count as a new baseline); a group that cannot be
// cleaned is quarantined and never handed out again. An empty reserve
// falls back to creating a group on the spot, counted as a miss.
//
// A Manager is safe for concurrent use. A Group is safe for concurrent use,
// but callers should not race Freeze, Thaw, Kill and Delete on the same group.
package cgroup
