// Package registry stores deployed functions durably: their code under
// dataDir/functions/<name>/<revision>/ and their metadata in a bbolt
// database at dataDir/registry.db.
//
// Names follow AWS Lambda: 1 to 64 letters, digits, "_" and "-", case
// included ("Foo" and "foo" are two functions). In a code directory's
// name each capital is written "^" and its lower case ("Foo" is "^foo"),
// so no two functions share a directory on a file system that folds case.
//
// A revision is the SHA-256 of the code tree (sorted relative paths, entry
// types, normalised modes and contents), so deploying identical code twice
// yields the same revision and the second deploy changes nothing.
//
// A deploy extracts into a staging directory under
// dataDir/functions/.staging, loads and validates the function's Spec,
// makes the tree durable (one syncfs), renames it into place and only
// then commits the metadata in one bbolt transaction. The commit is the point of no return:
// a deploy that fails or is interrupted before it leaves the previous
// revision serving, and Open sweeps whatever it left behind (staging
// directories, revision directories no metadata names). After the commit
// the previous revision's directory is removed, at once or, while leases
// hold it (Registry.Lease), when the last is released: a sandbox's bind
// mount shows the directory itself, so removing its files would pull the
// code out from under the sandboxes of that revision. A caller holding
// the old Function should Get it again.
//
// A Registry is safe for concurrent use. Deploys and deletes of the same
// name are serialised; different names proceed in parallel. Only one
// process may open a data directory at a time (bbolt holds a file lock).
package registry
