// Package zygote keeps a tree of pre-initialised Python interpreters
// (zygotes) and forks function sandboxes from them.
//
// A [Node] of the tree holds a package set; its zygotes ([Process]) have
// imported the modules of those packages, a child node's on top of its
// parent's. The [Manager] plants, promotes, replicates and evicts nodes
// from the package sets of recent invocations, within a memory budget,
// and routes a start to the node that holds the most of a function's
// packages and none it did not ask for ([Manager.Route]).
//
// # Privileges
//
// A zygote runs tenant code (the top-level code of the packages it
// imports), so it holds no host privilege: the root zygote is started by
// hearth-init in a sandbox of its own, as an unprivileged user of its
// own with no capabilities, and every node is forked from it. A child is
// cloned into user, mount, uts and ipc namespaces (and network ones) that
// it owns. This package's code runs in the worker, which alone is
// privileged, and does the privileged steps of a start from outside:
// it checks that the child's pidfd ([Child].PidFD) is a child of the
// zygote that was asked, moves the child into its sandbox's cgroup
// ([Target].Group) and writes its uid and gid maps through /proc opened
// while the pidfd shows the child alive.
//
// # Ownership
//
// A [Child] or [Spare] belongs to the caller that got it: the caller
// adopts the child's process into a sandbox and closes what it holds. A
// [Spare] waits, forked ahead of need, until [Spare.Go] gives it a
// function's mounts, identity and environment.
//
// # Concurrency
//
// A Manager is safe for concurrent use. A Process serves one request at
// a time; replicas of a node give concurrency.
package zygote
