// Package criu finds and runs the CRIU binary Hearth's snapshots use.
//
// CRIU 4.1 or newer is required: Debian bookworm's 3.17 fails on kernels
// 6.13 and newer. scripts/criu.sh debootstraps a minimal Debian trixie root
// holding criu 4.1 and its libraries; a [Binary] runs that criu through the
// root's own dynamic loader (ld-linux --library-path), so the host's libc is
// never touched and nothing is chrooted: criu sees the host's /proc, mounts
// and cgroups as it must.
//
// A [Runner] launches criu processes from one dedicated OS thread that lives
// in a private mount namespace (a slave of the host's, so new host mounts
// show up in it) with a tmpfs on /run. CRIU keeps its kernel-feature probe
// cache in /run/criu.kdat only on a tmpfs; with the cache a restore takes
// about half the time. The thread can also take the real uid and gid of a
// dumped process, which CRIU needs to read that process's rlimits when the
// host withholds CAP_SYS_RESOURCE.
//
// Binary is immutable and safe for concurrent use; Runner is safe for
// concurrent use and serialises process launches on its thread.
package criu
