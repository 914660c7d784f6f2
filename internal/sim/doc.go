// Package sim is a discrete-event simulator of Hearth's warm pool. It
// replays a trace of invocations against the same pool engine and policies
// the live worker uses (internal/pool), so a policy is measured exactly as
// it will run.
//
// Events are arrivals (from a Source, in time order) and completions (a
// heap of busy containers by end time), plus the engine's keep-alive
// expiries and predicted pre-warms. Each invocation takes a container for
// its whole execution: concurrent invocations of one function each hold
// their own, and a busy container never serves another invocation. A warm
// hit runs for the sampled execution time; a cold start adds the function's
// cold cost; a drop (no room even after evicting every idle container of
// the partition) is counted and not run. At equal times completions come
// first, then expiries strictly before the arrival (a container whose
// keep-alive ends exactly at an arrival still serves it), then the arrival.
//
// Cold cost (see ColdModel): by default FaasCache-style, the function's
// maximum minus its average execution time from durations.csv (the trace
// excludes cold starts, and the max is dominated by them); or a fixed
// initialisation time for every function.
//
// Run simulates one point; Sweep runs policies × memory sizes × partition
// splits in parallel; WriteCSV, WriteMemoryCSV and Plot write the results.
// Run allocates only while the pool grows, not per invocation.
package sim
