package image

// DefaultDataDir is where Hearth keeps its state when no data dir is
// given: the base image, functions, sandboxes, snapshots, the API token.
// It lives here, in a package with no internal imports but mountinfo, so
// that every package naming a default path below it can use this one
// constant.
const DefaultDataDir = "/var/lib/hearth"
