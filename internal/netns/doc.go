// Package netns keeps a pool of ready network namespaces for sandboxes of
// functions that declare `network: isolated`, after the PCPM paper:
// creating a namespace with its veth pair costs about a millisecond of
// kernel-serialised work, entering a ready one a few microseconds.
//
// Each pooled namespace has a veth pair whose host end is a port of one of
// the pool's bridges, an address from the configured private subnet, a
// default route through its bridge's address, and loopback up. Bridge
// ports are isolated from each other (IFLA_BRPORT_ISOLATED), and a policy
// rule refuses to forward from one of the pool's bridges back into the
// subnet, so a sandbox reaches neither another sandbox's namespace nor,
// through its own loopback, the host's. A bridge takes at most 1024 ports;
// the pool adds bridges as it grows, each with its own block of the
// subnet.
//
// Everything lives in this process: a namespace is held only by an open
// descriptor (no bind mount under /run/netns), so a crashed worker's
// namespaces die with it and their veth pairs with them. Bridges and
// rules are named or keyed by a per-worker prefix; Sweep removes what a
// crashed worker with the same prefix left, and never touches another
// worker's objects.
//
// Put scrubs a namespace before it is reused: no process may still live in
// it and no socket may be left (otherwise it is discarded, never handed
// out again), routes and addresses beyond its own are removed, its
// neighbour cache is flushed and its counters start again from zero.
//
// The pool also holds one shared, empty namespace (only a loopback that is
// down) for `network: offline` sandboxes: they leave the host's network
// without paying for a namespace each.
//
// An nftables table (hearth-PREFIX) drops forwarded packets into the
// pool's bridges unless they belong to a connection a sandbox opened, in
// case the host forwards. With Config.NAT it also masquerades sandbox
// traffic that leaves through the host's other interfaces (off by
// default).
//
// A Pool is safe for concurrent use; Close removes everything it made.
package netns
