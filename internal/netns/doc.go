// Package netns keeps a pool of ready network namespaces for sandboxes,
// after the PCPM paper: creating a namespace with its veth pair costs
// about a millisecond of kernel-serialised work, entering a ready one a
// few microseconds. That makes `network: isolated` cheap enough to be
// every function's default.
//
// Each pooled namespace has a veth pair whose host end is a port of one of
// the pool's bridges, an address from the configured private subnet, a
// default route through its bridge's address, and loopback up. Bridge
// ports are isolated from each other (IFLA_BRPORT_ISOLATED), and a policy
// rule refuses to forward from one of the pool's bridges back into the
// subnet, so a sandbox reaches no other sandbox. A bridge takes at most
// 1024 ports; the pool adds bridges as it grows, each with its own block
// of the subnet.
//
// Everything lives in this process: a namespace is held only by an open
// descriptor (no bind mount under /run/netns), so a crashed worker's
// namespaces die with it and their veth pairs with them. Bridges, rules
// and the nftables table are named or keyed by a per-worker prefix;
// Sweep removes what a crashed worker with the same prefix left, and
// never touches another worker's objects.
//
// Put scrubs a namespace before it is reused: no process may still live in
// it and no socket may be left (otherwise it is discarded, never handed
// out again), routes and addresses beyond its own are removed, its
// neighbour cache is flushed and its counters start again from zero.
//
// The pool also keeps empty namespaces (only a loopback that is down) for
// `network: offline` sandboxes, one per sandbox, so that no two share a
// loopback or abstract unix sockets; they are never reused.
//
// An nftables table (inet hearth-PREFIX, see addTable) keeps sandboxes
// off the host: what comes in from the pool's bridges to the host's own
// addresses is rejected (the host answers on every address on every
// interface, the bridge's and its loopback services' included), nothing
// opens a connection into a bridge, and sockets of the Guard uids in the
// host's namespace (`network: host` sandboxes) send nothing to the host's
// addresses or into the bridges. With Config.NAT it masquerades sandbox
// traffic that leaves through the host's other interfaces; without it, no
// packet of a sandbox leaves its bridge. Without nf_tables there is no
// pool.
//
// A Pool is safe for concurrent use; Close removes everything it made.
package netns
