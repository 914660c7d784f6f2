// Package trace reads the public Azure Functions traces and turns them into
// a stream of invocations for the simulator and for replay.
//
// Two formats are supported:
//
//   - Azure Functions 2019 ("Serverless in the Wild", ATC'20): three CSV files
//     per folder, invocations.csv (per-minute counts), durations.csv
//     (execution-time percentiles in ms) and memory.csv (allocated MB, per
//     function or per app). [LoadAzure2019] joins them on HashFunction.
//   - Azure Functions 2021 (SOSP'21): one row per invocation with
//     app,func,end_timestamp,duration in seconds. [LoadAzure2021] reads it.
//
// Every file is parsed by header name, never by column position. Rows that
// are malformed or cannot be joined are skipped and counted in [SkipCounts];
// a missing required column is an error. The last row of a file that does
// not end in a newline is kept but counted as suspect, since a file cut
// inside that row's last field reads as a shorter valid value. A
// [SkipReport] locates the rows (first few line numbers per reason) and
// measures how much of the trace they held, so that callers can refuse a
// damaged trace ([CheckSkips]) rather than simulate what is left of it.
//
// A 2019 trace only has per-minute counts, so arrival times inside a minute
// are synthesised by an [Arrival] model, as the vHive In-Vitro loader does:
// equidistant, or uniform / exponential gaps scaled so that a minute's gaps
// sum to exactly 60 s. Execution times are drawn from the duration
// percentiles by [SampleDuration]. [Generator] merges all functions into one
// time-ordered stream without allocating per invocation.
//
// Ownership and safety: a loaded [Trace] is plain data; the selection helpers
// ([Trace.Window], [Trace.Sample], [Trace.Select]) return deep copies. A
// Generator reads its Trace without copying it, so the Trace must not be
// modified while a Generator uses it. A Generator is not safe for concurrent
// use; a read-only Trace may be shared by many Generators.
package trace
