// Package function describes a deployable Hearth function: its Spec, read
// from an optional function.yaml, OpenLambda's ol.yaml and
// requirements.txt in the code directory, and the checks a deploy runs on
// it. What of ol.yaml has no Hearth equivalent comes back from Load as
// warnings, so that nothing in it is ignored silently.
//
// A Spec returned by Load is complete: defaults are filled in and it has
// been validated against the code directory. Parse only decodes
// function.yaml and fills defaults; Validate checks the limits that do not
// depend on the code directory.
//
// Requirements are not installed. CheckRequirements accepts a requirement
// only when a distribution already installed in the base image satisfies
// it; installing from a package index comes with the install cache in a
// later issue.
//
// Everything in this package is safe for concurrent use; it keeps no state.
package function
