// Package localrun runs one function from a directory on this machine,
// for debugging, in the same kind of sandbox a worker gives it (the
// sandbox, runtime and cgroup packages, the runtime's seccomp filter, the
// base image), with no worker and no registry: `hearth run`.
//
// A Session owns everything it makes, all of it below its own names so
// that neither a running worker nor another session sweeps it, and it
// sweeps none of theirs:
//
//	<data dir>/run/<pid>/         the session's directory, held by a flock on lock
//	  runtime/                    the runtime files and seccomp filter, installed per session
//	  sandboxes/                  the sandboxes' directories (sandbox.Factory.Dir)
//	  scratch/                    on-disk /tmp images (sandbox.Disks)
//	  code-N/                     the Nth run's copy of the function's directory
//	cgroup hearth-run-<pid>       the session's cgroup parent: init, sb-N
//
// A worker sweeps <data dir>/sandboxes, installer and scratch and its
// cgroup parents (hearth, hearth-<hash>, and their -pkgs); none of those
// names is a session's. Close removes all of a session's; a session
// killed before it could (SIGKILL) leaves its directory unlocked, and the
// next session opened on the data dir sweeps it and its cgroups.
//
// A Session runs one Instance at a time; it is not safe for concurrent
// use.
package localrun
