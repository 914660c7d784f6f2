// Package replay replays a serverless trace against a live Hearth worker as
// an open-loop load generator, in the spirit of vHive's In-Vitro.
//
// A [Plan] is built from a per-minute [trace.Trace]: one synthetic function
// per trace function ([Func]) and one scheduled call per trace invocation
// ([Call]), placed by a seeded arrival model and compressed by a speed
// factor. Each synthetic function imports a package set from the base
// image, chosen by a seeded [Popularity] table, and its handler touches the
// function's memory and then runs for the execution time that the generator
// sampled and passed in the event. Execution times are not scaled by the
// speed factor: a faster replay compresses the idle gaps between calls,
// not the calls themselves.
//
// [Run] is open loop: calls fire at their scheduled times whether or not
// earlier ones have answered, with at most MaxInFlight outstanding. When
// the bound is full the call waits for a slot; every such wait is counted
// and every call's lateness is recorded, so a replay whose generator fell
// behind says so ([Stats.Behind]) instead of silently skewing results.
//
// [Summarize] reduces the per-call [Record]s to per-function figures, with
// cold starts counted both by start path and by PARSEC's definition
// (response time more than 30 ms above the run time). [WriteCSV] and
// [Plot] write the per-invocation CSV and the PNG figures.
//
// Ownership: a Plan is plain data and may be shared read-only. Run owns
// nothing beyond the call; its Result is the caller's.
package replay
