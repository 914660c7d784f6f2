package image

import (
	"crypto/sha256"
	"debug/elf"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// MarkerFile is the file, at the root of a built tree, that records how it
// was built.
const MarkerFile = ".hearth-image.json"

// Marker records how a base image was built.
type Marker struct {
	Suite    string   `json:"suite"`
	Mirror   string   `json:"mirror"`
	Packages []string `json:"packages"`
	// Built is the build time in RFC 3339 format (with nanoseconds), UTC.
	Built string `json:"built"`
}

// ReadMarker reads the marker of a tree made by Build.
func ReadMarker(dir string) (Marker, error) {
	var m Marker
	b, err := os.ReadFile(filepath.Join(dir, MarkerFile))
	if err != nil {
		return m, fmt.Errorf("reading image marker: %w", err)
	}
	if err := json.Unmarshal(b, &m); err != nil {
		return m, fmt.Errorf("reading image marker in %s: %w", dir, err)
	}
	return m, nil
}

// ID names the image in dir for snapshot descriptors: "sha256:" and the
// hash of its marker, so a rebuilt image gets a new id. A tree without a
// marker (a user's --base tree) is named by its absolute path and its
// python3's size and modification time. ID returns "" for a tree it cannot
// read.
func ID(dir string) string {
	h := sha256.New()
	if b, err := os.ReadFile(filepath.Join(dir, MarkerFile)); err == nil {
		h.Write(b)
	} else {
		abs, err := filepath.Abs(dir)
		if err != nil {
			return ""
		}
		py, err := resolveIn(dir, "usr/bin/python3")
		if err != nil {
			return ""
		}
		st, err := os.Stat(py)
		if err != nil {
			return ""
		}
		fmt.Fprintf(h, "tree %s\npython3 %d %d\n", abs, st.Size(), st.ModTime().UnixNano())
	}
	return "sha256:" + hex.EncodeToString(h.Sum(nil))
}

// Validate checks that dir is a directory holding an executable
// usr/bin/python3. Symbolic links are followed inside the tree, as they
// will be once the tree is a sandbox's root.
func Validate(dir string) error {
	st, err := os.Stat(dir)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	if !st.IsDir() {
		return fmt.Errorf("%w: %s is not a directory", ErrInvalid, dir)
	}
	py, err := resolveIn(dir, "usr/bin/python3")
	if err != nil {
		return fmt.Errorf("%w: %s has no usr/bin/python3: %w", ErrInvalid, dir, err)
	}
	st, err = os.Stat(py)
	if err != nil {
		return fmt.Errorf("%w: %s: %w", ErrInvalid, dir, err)
	}
	if !st.Mode().IsRegular() || st.Mode().Perm()&0o111 == 0 {
		return fmt.Errorf("%w: %s/usr/bin/python3 is not an executable file", ErrInvalid, dir)
	}
	return nil
}

// mountPoints are the directories the sandbox mounts over; the base is
// bound read-only, so they must exist beforehand.
var mountPoints = [...]struct {
	path string
	mode fs.FileMode
}{
	{"code", 0o755},
	{"hearth", 0o755},
	{"tmp", 0o1777},
	{"proc", 0o555},
	{"dev", 0o755},
}

// Prepare creates, inside the tree at dir, the mount points a sandbox
// needs (/code, /hearth, /tmp, /proc, /dev) where they are missing.
func Prepare(dir string) error {
	for _, mp := range mountPoints {
		p, err := resolveIn(dir, mp.path)
		switch {
		case err == nil:
			st, err := os.Stat(p)
			if err != nil {
				return fmt.Errorf("preparing %s: %w", dir, err)
			}
			if !st.IsDir() {
				return fmt.Errorf("%w: %s/%s is not a directory", ErrInvalid, dir, mp.path)
			}
		case errors.Is(err, fs.ErrNotExist):
			if err := os.Mkdir(p, mp.mode); err != nil {
				return fmt.Errorf("preparing %s: %w", dir, err)
			}
			// Mkdir applies the umask and drops the sticky bit.
			if err := os.Chmod(p, mp.mode); err != nil {
				return fmt.Errorf("preparing %s: %w", dir, err)
			}
		default:
			return fmt.Errorf("preparing %s: %w", dir, err)
		}
	}
	return nil
}

// resolveIn resolves the relative path rel inside root, following
// symbolic links as if root were "/". It returns the host path; when the
// last element does not exist it returns that path with an error wrapping
// fs.ErrNotExist.
func resolveIn(root, rel string) (string, error) {
	const maxLinks = 40
	links := 0
	cur := "" // resolved path relative to root, no leading slash
	rest := strings.Split(filepath.Clean("/" + rel)[1:], "/")
	for len(rest) > 0 {
		el := rest[0]
		rest = rest[1:]
		switch el {
		case "", ".":
			continue
		case "..":
			cur = filepath.Dir("/" + cur)[1:]
			continue
		}
		next := filepath.Join(cur, el)
		full := filepath.Join(root, next)
		st, err := os.Lstat(full)
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) && len(rest) == 0 {
				return full, err
			}
			return "", err
		}
		if st.Mode()&fs.ModeSymlink == 0 {
			cur = next
			continue
		}
		if links++; links > maxLinks {
			return "", fmt.Errorf("%s: too many symbolic links", rel)
		}
		target, err := os.Readlink(full)
		if err != nil {
			return "", err
		}
		if filepath.IsAbs(target) {
			cur = ""
		}
		rest = append(strings.Split(target, "/"), rest...)
	}
	return filepath.Join(root, cur), nil
}

// Python returns the command line and environment that run the image's
// python3 straight on the host, without a sandbox: through the image's own
// dynamic loader and libraries, with the image's standard library. The
// host's python3 may be another version (a Debian 12 host has 3.11, the
// image 3.13); this one byte-compiles code for the version that sandboxes
// run. Only for trusted, short jobs: nothing isolates it.
func Python(dir string) (argv, env []string, err error) {
	py, err := resolveIn(dir, "usr/bin/python3")
	if err != nil {
		return nil, nil, fmt.Errorf("image python: %w", err)
	}
	f, err := elf.Open(py)
	if err != nil {
		return nil, nil, fmt.Errorf("image python: %w", err)
	}
	defer f.Close()
	var interp string
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			b, err := io.ReadAll(p.Open())
			if err != nil {
				return nil, nil, fmt.Errorf("image python: reading its loader's name: %w", err)
			}
			interp = strings.TrimRight(string(b), "\x00")
		}
	}
	if interp == "" {
		return nil, nil, fmt.Errorf("image python: %s names no dynamic loader", py)
	}
	ld, err := resolveIn(dir, interp)
	if err != nil {
		return nil, nil, fmt.Errorf("image python: loader %s: %w", interp, err)
	}
	// The image's library directories, multiarch ones first, as its own
	// ld.so.conf would list them.
	var libs []string
	for _, l := range []string{"usr/lib", "lib"} {
		multi, _ := filepath.Glob(filepath.Join(dir, l, "*-linux-gnu*"))
		for _, m := range append(multi, filepath.Join(dir, l)) {
			if st, err := os.Stat(m); err == nil && st.IsDir() {
				libs = append(libs, m)
			}
		}
	}
	argv = []string{ld, "--library-path", strings.Join(libs, ":"), py}
	return argv, []string{"PYTHONHOME=" + filepath.Dir(filepath.Dir(py))}, nil
}

// PythonVersion returns the version ("3.13") of the image's python3, from
// the name of the interpreter its usr/bin/python3 resolves to.
func PythonVersion(dir string) (string, error) {
	py, err := resolveIn(dir, "usr/bin/python3")
	if err != nil {
		return "", fmt.Errorf("image python version: %w", err)
	}
	v, ok := strings.CutPrefix(filepath.Base(py), "python")
	if !ok || !strings.Contains(v, ".") {
		return "", fmt.Errorf("image python version: %s names no version", py)
	}
	return v, nil
}
