// Package packages is Hearth's package install cache.
//
// At deploy time Resolve runs pip itself (pip install --dry-run --report)
// inside an installer sandbox, over the function's requirements.txt, so
// markers, extras, ranges and -r includes mean exactly what they mean to
// pip. Requirements the base image already satisfies stay in the base; the
// rest are installed by Ensure, each name==version once, with
// pip install --no-deps --target into its own directory under the cache
// directory. Installs run in a temporary directory inside the installer
// sandbox's writable output bind and are renamed into place on the host,
// so a package directory is either complete or absent. Concurrent Ensure
// calls that need the same package install it once; the others wait.
//
// A function's sandbox gets its packages through Mounts: a small per-set
// "view" directory bound read-only at /hearth-pkgs, holding one mount
// point per package, and each package directory bound read-only onto its
// mount point. SysPath lists the directories for sys.path (HEARTH_PATH).
//
// A Store is the on-disk half: the package directories and an index file
// (index.json) with sizes, last-use times and the functions using each
// package. Every change to the index is a read-modify-write under an
// exclusive flock, so the worker and `hearth packages gc` can share a
// cache directory. GC removes packages no function uses, least recently
// used first, until the cache fits its budget.
//
// A Compiler byte-compiles a function's code at deploy in the same kind
// of installer sandbox, with tighter limits (a compile bomb must not
// cost more than 256 MiB and 30 s by default), and copies back only the
// cache files it checked. Both run their sandboxes through one runner:
// a fresh sandbox and cgroup per run, a memory and pids limit, a
// deadline, and nothing left when the run returns.
//
// Layout below the cache directory:
//
//	<name>-<version>/  one installed distribution (wheel-style escaping)
//	.views/<hash>/     mount-point views, one per package set
//	.tmp/              installer runs in progress (swept on open)
//	.trash/            directories being removed (swept on open)
//	index.json, .lock  the index and its lock file
//
// Cache, Store and Compiler are safe for concurrent use.
package packages
