// Package policy holds Hearth's keep-alive and eviction policies for the
// warm-pool engine in internal/pool:
//
//   - lru: evict the container idle longest; no expiry.
//   - gd: Greedy-Dual-Size-Frequency as in FaasCache (ASPLOS'21):
//     priority = clock + freq × cold cost / size; on eviction the
//     partition clock becomes the victim's priority. No expiry.
//   - freq: like gd without the size term: clock + freq × cold cost.
//   - ttl: LRU order plus a fixed keep-alive (10 minutes by default),
//     expired eagerly by the engine.
//   - hist: the hybrid histogram policy of "Serverless in the Wild"
//     (ATC'20): a per-function idle-time histogram decides a pre-warm
//     window and a keep-alive window; LRU order under memory pressure.
//
// Units in priorities: cold cost in seconds, size in MiB. Only the order of
// priorities matters, but gd adds them to the clock, so the units are fixed
// here once.
//
// Policies are built by name from the map Constructors returns (no init()
// registration, no globals). A policy value belongs to one engine partition
// and is not safe for concurrent use, like the engine itself.
package policy
