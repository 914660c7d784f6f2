package archive

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
	"syscall"
)

// Defaults for a zero Limits field.
const (
	DefaultMaxBytes = 50 << 20
	DefaultMaxFiles = 10000
)

// Name limits, as on Linux.
const (
	maxNameLen  = 4095
	maxCompLen  = 255
	maxLinkLen  = 4095
	maxLinkHops = 40
	fileMode    = 0o644
	execMode    = 0o755
	dirMode     = 0o755
)

// Limits bound what one extraction may produce. A zero or negative field
// takes its default.
type Limits struct {
	// MaxBytes bounds both the archive's own size and the total bytes of
	// file content written (counted as written, not taken from headers).
	// Default DefaultMaxBytes.
	MaxBytes int64
	// MaxFiles bounds the number of files, directories and links
	// created, including directories created implicitly. Default
	// DefaultMaxFiles.
	MaxFiles int
}

func (l Limits) withDefaults() Limits {
	if l.MaxBytes <= 0 {
		l.MaxBytes = DefaultMaxBytes
	}
	if l.MaxFiles <= 0 {
		l.MaxFiles = DefaultMaxFiles
	}
	return l
}

type kind uint8

const (
	kindDir kind = iota + 1
	kindFile
	kindSymlink
)

type node struct {
	kind     kind
	explicit bool   // named by an entry, not only created as a parent
	target   string // symlink target
	size     int64  // file size
}

// writer creates a tree below root from a stream of entries. Its map of
// nodes mirrors exactly what it has created (root starts empty), so path
// checks never need to consult the file system, and nothing is ever
// written through a symlink.
type writer struct {
	root  string
	lim   Limits
	bytes int64
	count int
	nodes map[string]*node // by cleaned relative name; "" is root
	links []string         // symlink names, checked by finish
}

// newWriter prepares dst: it must not exist (it is created, its parent must
// exist) or be an empty directory.
func newWriter(dst string, lim Limits) (*writer, error) {
	fi, err := os.Lstat(dst)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		if err := os.Mkdir(dst, dirMode); err != nil {
			return nil, fmt.Errorf("creating destination: %w", err)
		}
	case err != nil:
		return nil, fmt.Errorf("destination: %w", err)
	case !fi.IsDir():
		return nil, fmt.Errorf("destination %s is not a directory", dst)
	default:
		ents, err := os.ReadDir(dst)
		if err != nil {
			return nil, fmt.Errorf("destination: %w", err)
		}
		if len(ents) > 0 {
			return nil, fmt.Errorf("destination %s is not empty", dst)
		}
	}
	// The mode is set explicitly so a restrictive umask cannot hide the
	// code from the sandbox user.
	if err := os.Chmod(dst, dirMode); err != nil {
		return nil, fmt.Errorf("destination: %w", err)
	}
	return &writer{
		root: dst,
		lim:  lim.withDefaults(),
		// The root is not explicit so that one "./" entry, common at
		// the head of a tar, is accepted.
		nodes: map[string]*node{"": {kind: kindDir}},
	}, nil
}

// cleanName turns an entry name into a clean relative slash path. The
// root itself is "". It rejects anything that is not plainly local.
func cleanName(raw string) (string, error) {
	if strings.IndexByte(raw, 0) >= 0 {
		return "", fmt.Errorf("entry %q: NUL in name: %w", raw, ErrUnsafe)
	}
	if strings.IndexByte(raw, '\\') >= 0 {
		return "", fmt.Errorf("entry %q: backslash in name: %w", raw, ErrUnsafe)
	}
	if strings.HasPrefix(raw, "/") {
		return "", fmt.Errorf("entry %q: absolute path: %w", raw, ErrUnsafe)
	}
	if len(raw) > maxNameLen {
		return "", fmt.Errorf("entry %.40q...: name longer than %d bytes: %w", raw, maxNameLen, ErrUnsafe)
	}
	var parts []string
	for _, c := range strings.Split(raw, "/") {
		switch c {
		case "", ".":
			continue
		case "..":
			return "", fmt.Errorf("entry %q: path traversal (..): %w", raw, ErrUnsafe)
		}
		if len(c) > maxCompLen {
			return "", fmt.Errorf("entry %.40q...: name component longer than %d bytes: %w", raw, maxCompLen, ErrUnsafe)
		}
		parts = append(parts, c)
	}
	return strings.Join(parts, "/"), nil
}

func (w *writer) full(name string) string {
	return filepath.Join(w.root, filepath.FromSlash(name))
}

// add counts one created inode against MaxFiles.
func (w *writer) add() error {
	w.count++
	if w.count > w.lim.MaxFiles {
		return fmt.Errorf("more than %d files: %w", w.lim.MaxFiles, ErrTooLarge)
	}
	return nil
}

// claim checks that name is new and that its parents are (or can be made)
// real directories, creating missing ones.
func (w *writer) claim(raw, name string) error {
	if name == "" {
		return fmt.Errorf("entry %q: names the root as a non-directory: %w", raw, ErrUnsafe)
	}
	if _, ok := w.nodes[name]; ok {
		return fmt.Errorf("entry %q: duplicate entry: %w", raw, ErrUnsafe)
	}
	return w.mkdirs(raw, path.Dir(name))
}

// mkdirs makes dir and its parents, refusing to pass through anything but
// a directory this writer made.
func (w *writer) mkdirs(raw, dir string) error {
	if dir == "." || dir == "" {
		return nil
	}
	parts := strings.Split(dir, "/")
	for i := range parts {
		p := strings.Join(parts[:i+1], "/")
		n, ok := w.nodes[p]
		if ok {
			if n.kind != kindDir {
				return fmt.Errorf("entry %q: parent %q is not a directory: %w", raw, p, ErrUnsafe)
			}
			continue
		}
		if err := w.add(); err != nil {
			return err
		}
		if err := mkdir(w.full(p)); err != nil {
			return err
		}
		w.nodes[p] = &node{kind: kindDir}
	}
	return nil
}

func mkdir(p string) error {
	if err := os.Mkdir(p, dirMode); err != nil {
		return fmt.Errorf("creating directory: %w", err)
	}
	if err := os.Chmod(p, dirMode); err != nil {
		return fmt.Errorf("creating directory: %w", err)
	}
	return nil
}

// dir creates a directory entry. A directory that was only created as a
// parent may be named once more; anything else is a duplicate.
func (w *writer) dir(raw string) error {
	name, err := cleanName(raw)
	if err != nil {
		return err
	}
	if n, ok := w.nodes[name]; ok {
		if n.kind == kindDir && !n.explicit {
			n.explicit = true
			return nil
		}
		return fmt.Errorf("entry %q: duplicate entry: %w", raw, ErrUnsafe)
	}
	if err := w.mkdirs(raw, path.Dir(name)); err != nil {
		return err
	}
	if err := w.add(); err != nil {
		return err
	}
	if err := mkdir(w.full(name)); err != nil {
		return err
	}
	w.nodes[name] = &node{kind: kindDir, explicit: true}
	return nil
}

// file writes a regular file from r. hint is the size the archive claims
// (or -1): only used to fail early, never trusted.
func (w *writer) file(raw string, exec bool, hint int64, r io.Reader) error {
	name, err := cleanName(raw)
	if err != nil {
		return err
	}
	if err := w.claim(raw, name); err != nil {
		return err
	}
	if err := w.add(); err != nil {
		return err
	}
	left := w.lim.MaxBytes - w.bytes
	if hint > left {
		return fmt.Errorf("entry %q: %d bytes would exceed %d bytes in total: %w", raw, hint, w.lim.MaxBytes, ErrTooLarge)
	}
	mode := os.FileMode(fileMode)
	if exec {
		mode = execMode
	}
	// O_EXCL and O_NOFOLLOW: never reuse or follow anything already there.
	f, err := os.OpenFile(w.full(name), os.O_WRONLY|os.O_CREATE|os.O_EXCL|syscall.O_NOFOLLOW, mode)
	if err != nil {
		return fmt.Errorf("entry %q: %w", raw, err)
	}
	nd := &node{kind: kindFile, explicit: true}
	w.nodes[name] = nd
	n, err := io.Copy(f, io.LimitReader(r, left+1))
	w.bytes += n
	nd.size = n
	if err == nil && n > left {
		err = fmt.Errorf("entry %q: content exceeds %d bytes in total: %w", raw, w.lim.MaxBytes, ErrTooLarge)
	} else if err != nil {
		err = fmt.Errorf("entry %q: %w", raw, readErr(err))
	}
	if err == nil {
		err = f.Chmod(mode)
	}
	if cerr := f.Close(); err == nil && cerr != nil {
		err = fmt.Errorf("entry %q: %w", raw, cerr)
	}
	return err
}

// readErr classifies an error from reading archive content: limits stay
// ErrTooLarge, anything else is a format problem.
func readErr(err error) error {
	if errors.Is(err, ErrTooLarge) || errors.Is(err, ErrFormat) {
		return err
	}
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return err // a write failure on our side, not the archive's fault
	}
	return fmt.Errorf("%v: %w", err, ErrFormat)
}

// symlink creates a symlink after checking that its target, read relative
// to the link's directory, stays inside the tree. finish checks it again
// once every link exists, following chains of links.
func (w *writer) symlink(raw, target string) error {
	name, err := cleanName(raw)
	if err != nil {
		return err
	}
	switch {
	case target == "":
		return fmt.Errorf("symlink %q: empty target: %w", raw, ErrFormat)
	case len(target) > maxLinkLen:
		return fmt.Errorf("symlink %q: target longer than %d bytes: %w", raw, maxLinkLen, ErrUnsafe)
	case strings.IndexByte(target, 0) >= 0:
		return fmt.Errorf("symlink %q: NUL in target: %w", raw, ErrUnsafe)
	case strings.HasPrefix(target, "/"):
		return fmt.Errorf("symlink %q -> %q: absolute target points outside the tree: %w", raw, target, ErrUnsafe)
	}
	depth := strings.Count(name, "/") // directories above the link
	for _, c := range strings.Split(target, "/") {
		switch c {
		case "", ".":
		case "..":
			depth--
		default:
			depth++
		}
		if depth < 0 {
			return fmt.Errorf("symlink %q -> %q: target points outside the tree: %w", raw, target, ErrUnsafe)
		}
	}
	if err := w.claim(raw, name); err != nil {
		return err
	}
	if err := w.add(); err != nil {
		return err
	}
	w.bytes += int64(len(target))
	if w.bytes > w.lim.MaxBytes {
		return fmt.Errorf("symlink %q: content exceeds %d bytes in total: %w", raw, w.lim.MaxBytes, ErrTooLarge)
	}
	if err := os.Symlink(target, w.full(name)); err != nil {
		return fmt.Errorf("symlink %q: %w", raw, err)
	}
	w.nodes[name] = &node{kind: kindSymlink, explicit: true, target: target}
	w.links = append(w.links, name)
	return nil
}

// hardlink links name to an earlier regular file entry.
func (w *writer) hardlink(raw, target string) error {
	name, err := cleanName(raw)
	if err != nil {
		return err
	}
	t, err := cleanName(target)
	if err != nil {
		return fmt.Errorf("hard link %q -> %q: target outside the tree: %w", raw, target, ErrUnsafe)
	}
	tn, ok := w.nodes[t]
	if !ok || tn.kind != kindFile {
		return fmt.Errorf("hard link %q -> %q: target is not a regular file earlier in the archive: %w", raw, target, ErrUnsafe)
	}
	if err := w.claim(raw, name); err != nil {
		return err
	}
	if err := w.add(); err != nil {
		return err
	}
	// A link costs its target's size: whoever reads the tree (hashing,
	// copying) reads it again, so links must not multiply the limit.
	w.bytes += tn.size
	if w.bytes > w.lim.MaxBytes {
		return fmt.Errorf("hard link %q: content exceeds %d bytes in total: %w", raw, w.lim.MaxBytes, ErrTooLarge)
	}
	if err := os.Link(w.full(t), w.full(name)); err != nil {
		return fmt.Errorf("hard link %q: %w", raw, err)
	}
	w.nodes[name] = &node{kind: kindFile, explicit: true, size: tn.size}
	return nil
}

// finish resolves every symlink the way the kernel would, through other
// symlinks, and rejects any that leaves the tree. Resolution stops at a
// missing component or a non-directory: the tree is read-only once
// deployed, so such a link can never lead anywhere.
func (w *writer) finish() error {
	for _, name := range w.links {
		if err := w.resolve(name); err != nil {
			return err
		}
	}
	return nil
}

func (w *writer) resolve(link string) error {
	var stack []string // resolved directory components
	if d := path.Dir(link); d != "." {
		stack = strings.Split(d, "/")
	}
	queue := strings.Split(w.nodes[link].target, "/")
	hops := 0
	for len(queue) > 0 {
		c := queue[0]
		queue = queue[1:]
		switch c {
		case "", ".":
			continue
		case "..":
			if len(stack) == 0 {
				return fmt.Errorf("symlink %q: resolves outside the tree: %w", link, ErrUnsafe)
			}
			stack = stack[:len(stack)-1]
			continue
		}
		p := strings.Join(append(stack[:len(stack):len(stack)], c), "/")
		n, ok := w.nodes[p]
		switch {
		case !ok || n.kind == kindFile:
			return nil
		case n.kind == kindDir:
			stack = append(stack, c)
		default: // symlink: splice its target in, relative to stack
			hops++
			if hops > maxLinkHops {
				return fmt.Errorf("symlink %q: loop or chain of more than %d links: %w", link, maxLinkHops, ErrUnsafe)
			}
			queue = append(strings.Split(n.target, "/"), queue...)
		}
	}
	return nil
}
