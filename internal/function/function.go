package function

import "time"

// Function is a deployed function: what the registry keeps of a deploy
// and hands to the worker, and what the API answers about it.
type Function struct {
	Name string `json:"name"`
	// Revision is the full hex SHA-256 of the code tree.
	Revision string `json:"revision"`
	Spec     Spec   `json:"spec"`
	// Packages is the resolved package set: the packages from the install
	// cache and the base-image ones that satisfied requirements. Empty
	// when the function has no requirements or nothing resolved them.
	Packages []Package `json:"packages,omitempty"`
	// CodeDir holds the code, read-only by convention. It is removed when
	// a newer revision is deployed or the function is deleted, once no
	// lease (see registry.Registry.Lease) holds it. A host path: never
	// sent to clients.
	CodeDir string `json:"-"`
	// Size is the bytes of file content; Files the number of files and
	// symlinks.
	Size       int64     `json:"size"`
	Files      int       `json:"files"`
	DeployedAt time.Time `json:"deployed_at"`
	// Slot numbers the function among those deployed on its worker,
	// from 1, for the life of its name: its sandboxes run as the host
	// user of that slot (see internal/ident). Zero: none yet.
	Slot int `json:"-"`
	// Warnings name what of the code's configuration the deploy ignored:
	// the keys of OpenLambda's ol.yaml that Hearth has no equivalent for.
	Warnings []string `json:"warnings,omitempty"`
}

// ShortRevision returns the first 16 hex digits of the revision, for
// display.
func (f Function) ShortRevision() string {
	if len(f.Revision) > 16 {
		return f.Revision[:16]
	}
	return f.Revision
}

// Package is one resolved distribution of a function's requirements.
type Package struct {
	// Name is normalised per PEP 503.
	Name    string `json:"name"`
	Version string `json:"version"`
	// Base marks a distribution the base image provides: it is not in
	// the install cache and needs no mount.
	Base bool `json:"base,omitempty"`
}

// String returns "name==version".
func (p Package) String() string { return p.Name + "==" + p.Version }
