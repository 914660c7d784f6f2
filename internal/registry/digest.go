package registry

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"

	"golang.org/x/sys/unix"
)

// treeSum is the content hash of a code tree and its totals.
type treeSum struct {
	rev   string // hex SHA-256
	size  int64  // bytes of regular file content
	files int    // regular files and symlinks
}

type treeEntry struct {
	rel  string
	mode fs.FileMode
}

// digest hashes the tree at dir: for each entry in order of its slash
// relative path, the path, its type and permission bits, and its content
// (file bytes or symlink target), each length-prefixed so no two trees
// share a stream.
func digest(dir string) (treeSum, error) {
	var ents []treeEntry
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		ents = append(ents, treeEntry{rel: filepath.ToSlash(rel), mode: info.Mode()})
		return nil
	})
	if err != nil {
		return treeSum{}, fmt.Errorf("hashing code: %w", err)
	}
	sort.Slice(ents, func(i, j int) bool { return ents[i].rel < ents[j].rel })
	h := sha256.New()
	var s treeSum
	field := func(b []byte) {
		h.Write(strconv.AppendInt(nil, int64(len(b)), 10))
		h.Write([]byte{':'})
		h.Write(b)
	}
	for _, e := range ents {
		p := filepath.Join(dir, filepath.FromSlash(e.rel))
		field([]byte(e.rel))
		field([]byte(strconv.FormatUint(uint64(e.mode.Type()|e.mode.Perm()), 8)))
		switch {
		case e.mode.IsDir():
		case e.mode.IsRegular():
			n, err := hashFile(h, p)
			if err != nil {
				return treeSum{}, fmt.Errorf("hashing code: %w", err)
			}
			s.size += n
			s.files++
		case e.mode&fs.ModeSymlink != 0:
			t, err := os.Readlink(p)
			if err != nil {
				return treeSum{}, fmt.Errorf("hashing code: %w", err)
			}
			field([]byte(t))
			s.files++
		default:
			return treeSum{}, fmt.Errorf("hashing code: %s: unexpected file type %v", e.rel, e.mode.Type())
		}
	}
	s.rev = hex.EncodeToString(h.Sum(nil))
	return s, nil
}

// hashFile writes the file's length-prefixed content to h.
func hashFile(h io.Writer, p string) (int64, error) {
	f, err := os.Open(p)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return 0, err
	}
	h.Write(strconv.AppendInt(nil, fi.Size(), 10))
	h.Write([]byte{':'})
	n, err := io.Copy(h, f)
	if err != nil {
		return 0, err
	}
	if n != fi.Size() {
		return 0, fmt.Errorf("%s changed while hashing", p)
	}
	return n, nil
}

// syncFS flushes the whole file system holding p (syncfs(2)).
func syncFS(p string) error {
	f, err := os.Open(p)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := unix.Syncfs(int(f.Fd())); err != nil {
		return fmt.Errorf("syncing file system of %s: %w", p, err)
	}
	return nil
}

func syncDir(p string) error {
	d, err := os.Open(p)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("syncing %s: %w", p, err)
	}
	return nil
}
