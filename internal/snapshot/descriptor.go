package snapshot

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"
)

// DescriptorName is the descriptor's file name in a snapshot directory.
// It is written last (locally and remotely): its presence marks a complete
// snapshot.
const DescriptorName = "descriptor.json"

// FormatVersion is the descriptor format this package writes and reads.
// A dump carries its sandbox's mounts, so a change to them is a new
// format, and snapshots of the old one are dropped and taken again:
// 2 has /proc/fs masked, 3 /proc/diskstats and /proc/partitions too (see
// initproc).
const FormatVersion = 3

// Descriptor describes one snapshot: what it is of, how to restore it and
// the SHA-256 of every file.
type Descriptor struct {
	Format   int    `json:"format"`
	Key      string `json:"key"`
	Function string `json:"function"`
	Revision string `json:"revision"`
	// BaseImage is the base image id (internal/image.ID) the process ran on.
	BaseImage string `json:"base_image"`
	// Packages is the function's package set.
	Packages []string  `json:"packages,omitempty"`
	Created  time.Time `json:"created"`

	// UID and GID are the checkpointed process's ids.
	UID int `json:"uid"`
	GID int `json:"gid"`
	// Socket names the runtime's listening socket in the scratch dir.
	Socket string `json:"socket"`
	// ScratchBytes is the size of the scratch tmpfs.
	ScratchBytes int64 `json:"scratch_bytes"`
	// Mounts are the bind mounts (by target) the restore must provide.
	Mounts []Mount `json:"mounts"`
	// FDs are descriptors that reach outside the sandbox and are handed
	// in afresh on restore.
	FDs []FD `json:"fds"`
	// Net says the process had a network namespace of its own, which was
	// not dumped: a restore must hand one in (RestoreSpec.NetNS).
	Net bool `json:"net,omitempty"`

	// Files lists every file of the snapshot but the descriptor.
	Files []File `json:"files"`
	// Bytes is the sum of the files' sizes.
	Bytes int64 `json:"bytes"`
	// DumpTime is how long the checkpoint took.
	DumpTime time.Duration `json:"dump_ns"`
}

// Mount is a bind mount of the checkpointed sandbox.
type Mount struct {
	Target string `json:"target"`
	Key    string `json:"key"`
}

// FD kinds.
const (
	FDNull   = "null"   // /dev/null from the host
	FDPipe   = "pipe"   // stdout or stderr pipe to the worker
	FDListen = "listen" // the runtime's listening socket
)

// FD is a descriptor of the checkpointed process that refers to something
// outside the sandbox.
type FD struct {
	Num  int    `json:"num"`
	Kind string `json:"kind"`
	// Key is CRIU's name for the object, for --inherit-fd.
	Key string `json:"key"`
}

// File is one file of a snapshot, by slash-separated relative path.
type File struct {
	Path   string `json:"path"`
	Size   int64  `json:"size"`
	SHA256 string `json:"sha256"`
}

// Validate checks the parts of d a restore relies on.
func (d *Descriptor) Validate() error {
	if d.Format != FormatVersion {
		return fmt.Errorf("descriptor format %d, want %d: %w", d.Format, FormatVersion, ErrInvalid)
	}
	if err := ValidKey(d.Key); err != nil {
		return err
	}
	if d.Socket == "" || strings.ContainsAny(d.Socket, "/\x00") {
		return fmt.Errorf("descriptor socket %q: %w", d.Socket, ErrInvalid)
	}
	for _, f := range d.Files {
		if !validRel(f.Path) || f.Size < 0 || len(f.SHA256) != 64 {
			return fmt.Errorf("descriptor file %q: %w", f.Path, ErrInvalid)
		}
	}
	for _, m := range d.Mounts {
		if !filepath.IsAbs(m.Target) || m.Key == "" {
			return fmt.Errorf("descriptor mount %q: %w", m.Target, ErrInvalid)
		}
	}
	return nil
}

// validRel reports whether p is a clean relative path inside a snapshot.
func validRel(p string) bool {
	if p == "" || strings.HasPrefix(p, "/") || strings.ContainsRune(p, 0) || p == DescriptorName {
		return false
	}
	c := filepath.ToSlash(filepath.Clean(p))
	return c == p && c != "." && !strings.HasPrefix(c, "../") && c != ".."
}

// ValidKey reports whether key can name a snapshot: 1 to 128 characters
// from [A-Za-z0-9._-], not starting with a dot.
func ValidKey(key string) error {
	if key == "" || len(key) > 128 || key[0] == '.' {
		return fmt.Errorf("key %q: %w", key, ErrInvalid)
	}
	for _, c := range key {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			return fmt.Errorf("key %q: %w", key, ErrInvalid)
		}
	}
	return nil
}

// Key returns the snapshot key of a function revision: a snapshot belongs
// to exactly one revision, so a new revision never finds an old one.
func Key(function, revision string) string {
	clean := func(s string) string {
		var b strings.Builder
		for _, c := range s {
			if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' {
				b.WriteRune(c)
			} else {
				b.WriteByte('_')
			}
		}
		return b.String()
	}
	sum := sha256.Sum256([]byte(function + "\x00" + revision))
	f, r := clean(function), clean(revision)
	if len(f) > 48 {
		f = f[:48]
	}
	if len(r) > 16 {
		r = r[:16]
	}
	return f + "-" + r + "-" + hex.EncodeToString(sum[:6])
}

// Seal lists and hashes every file under dir, fills d.Files and d.Bytes
// and writes the descriptor, last and atomically.
func Seal(dir string, d *Descriptor) error {
	d.Format = FormatVersion
	d.Files = nil
	d.Bytes = 0
	err := filepath.WalkDir(dir, func(p string, e fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if e.IsDir() {
			return nil
		}
		rel, _ := filepath.Rel(dir, p)
		rel = filepath.ToSlash(rel)
		if rel == DescriptorName || strings.HasPrefix(filepath.Base(rel), ".tmp-") {
			return nil
		}
		if !e.Type().IsRegular() {
			return fmt.Errorf("%s: not a regular file: %w", rel, ErrInvalid)
		}
		sum, n, err := hashFile(p)
		if err != nil {
			return err
		}
		d.Files = append(d.Files, File{Path: rel, Size: n, SHA256: sum})
		d.Bytes += n
		return nil
	})
	if err != nil {
		return fmt.Errorf("sealing %s: %w", dir, err)
	}
	sort.Slice(d.Files, func(i, j int) bool { return d.Files[i].Path < d.Files[j].Path })
	if err := d.Validate(); err != nil {
		return fmt.Errorf("sealing %s: %w", dir, err)
	}
	b, err := marshalDescriptor(d)
	if err != nil {
		return fmt.Errorf("sealing %s: %w", dir, err)
	}
	return writeFileAtomic(filepath.Join(dir, DescriptorName), b)
}

func marshalDescriptor(d *Descriptor) ([]byte, error) {
	return json.MarshalIndent(d, "", "  ")
}

// ReadDescriptor reads and validates the descriptor in dir.
func ReadDescriptor(dir string) (*Descriptor, error) {
	b, err := os.ReadFile(filepath.Join(dir, DescriptorName))
	if err != nil {
		return nil, err
	}
	return ParseDescriptor(b)
}

// ParseDescriptor decodes and validates a descriptor.
func ParseDescriptor(b []byte) (*Descriptor, error) {
	var d Descriptor
	if err := json.Unmarshal(b, &d); err != nil {
		return nil, fmt.Errorf("descriptor: %w: %w", err, ErrInvalid)
	}
	if err := d.Validate(); err != nil {
		return nil, err
	}
	return &d, nil
}

// Verify checks that every file d lists exists in dir with its size and
// SHA-256. It returns ErrCorrupt on any mismatch.
func Verify(dir string, d *Descriptor) error {
	want := make(map[string]bool, len(d.Files))
	for _, f := range d.Files {
		want[f.Path] = true
		p := filepath.Join(dir, filepath.FromSlash(f.Path))
		st, err := os.Lstat(p)
		if err != nil {
			return fmt.Errorf("snapshot %s: %s: %w: %w", d.Key, f.Path, err, ErrCorrupt)
		}
		if !st.Mode().IsRegular() || st.Size() != f.Size {
			return fmt.Errorf("snapshot %s: %s: size %d, want %d: %w", d.Key, f.Path, st.Size(), f.Size, ErrCorrupt)
		}
		sum, _, err := hashFile(p)
		if err != nil {
			return fmt.Errorf("snapshot %s: %s: %w: %w", d.Key, f.Path, err, ErrCorrupt)
		}
		if sum != f.SHA256 {
			return fmt.Errorf("snapshot %s: %s: checksum mismatch: %w", d.Key, f.Path, ErrCorrupt)
		}
	}
	return nil
}

func hashFile(p string) (string, int64, error) {
	f, err := os.Open(p)
	if err != nil {
		return "", 0, err
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		return "", 0, err
	}
	return hex.EncodeToString(h.Sum(nil)), n, nil
}

// writeFileAtomic writes b to a temp file next to p, syncs it and renames
// it over p.
func writeFileAtomic(p string, b []byte) error {
	tmp := filepath.Join(filepath.Dir(p), ".tmp-"+filepath.Base(p))
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		os.Remove(tmp)
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		os.Remove(tmp)
		return err
	}
	if err := f.Close(); err != nil {
		os.Remove(tmp)
		return err
	}
	return os.Rename(tmp, p)
}
