// Package snapshot checkpoints initialized function sandboxes with CRIU and
// restores them into fresh sandboxes, keeps snapshots in a byte-bounded
// local cache, and fetches them from a remote store on a miss.
//
// # Engine
//
// [Engine.Dump] checkpoints the process tree of a sandbox whose pid 1 is
// the runtime itself (hearth-init must exec the runtime rather than fork
// it: CRIU needs pid 1's executable inside the sandbox), after the handler
// is loaded and with no connection open. The sandbox's mount, pid, uts and
// ipc namespaces are dumped with it; its bind mounts (function code,
// runtime, packages) and /tmp are declared external, its stdio pipes and
// listening socket are recorded for re-creation, and /tmp's contents go
// to a tar file next to the CRIU images.
//
// [Engine.Restore] mounts a new scratch tmpfs, unpacks /tmp into it, makes
// a new listening socket there and has CRIU restore the tree into fresh
// namespaces (so two copies never collide on pids, mounts or sockets),
// created directly in the caller's cgroup, with the base image as a
// read-only root and the caller's sources for the bind mounts. The
// restored init becomes a child of the calling process, and the tree a
// [sandbox.Sandbox] (see sandbox.AdoptRestored), which reaps it and
// tears it down like any other sandbox. If the runtime
// handles [ReseedSignal] (internal/snapshot/python installs the handler),
// Restore sends it so the copy reseeds its random generators and runs its
// after-restore hooks before it answers the worker.
//
// CRIU runs through [criu.Runner] from a private mount namespace, where it
// keeps its kernel-feature cache on a tmpfs.
//
// # Cache and remote store
//
// A snapshot is a directory: images/ (CRIU), scratch.tar and
// descriptor.json (function, revision, base image id, package set, sizes,
// SHA-256 of every file), written last. [Cache] keeps them under the data
// dir, bounded by disk blocks, LRU-evicted, pinned while in use, verified
// before use and rebuilt from disk at start. A [Remote] (internal/snapshot/s3)
// shares them between workers.
//
// # Use from a worker
//
// [OpenService] bundles all of the above with the policy: it returns an
// error wrapping [ErrDisabled] when CRIU is unavailable (the worker runs
// on without snapshots). After a start whose measured init is
// [Service.Worth] a snapshot, the worker starts a spare sandbox with
// sandbox.Config.Exec set (the same binds, env and socket), waits for
// READY, closes its connection and calls [Service.Create] off the
// critical path, then destroys the spare. On a later cold start it tries
// [Service.Restore] before a zygote fork when [Service.Prefer] says the
// measured restore beats fork plus init, and falls back on any error.
// Keys come from [Key](function, revision), so a new revision never finds
// an old snapshot.
//
// Engine, Cache, Service and Sandbox are safe for concurrent use.
package snapshot
