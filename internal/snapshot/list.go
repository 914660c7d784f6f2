package snapshot

import (
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/hearth-run/hearth/internal/fsutil"
)

// ReadDir lists the sealed snapshots in a cache directory without
// opening the cache: it changes nothing on disk, so it is safe while a
// worker owns the directory. Entries without a valid descriptor are
// skipped.
func ReadDir(dir string) ([]Info, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var out []Info
	for _, ent := range ents {
		if !ent.IsDir() || strings.HasPrefix(ent.Name(), ".") {
			continue
		}
		p := filepath.Join(dir, ent.Name())
		d, err := ReadDescriptor(p)
		if err != nil || d.Key != ent.Name() {
			continue
		}
		blocks, err := fsutil.DiskUsage(p)
		if err != nil {
			continue
		}
		info, err := ent.Info()
		if err != nil {
			continue
		}
		out = append(out, Info{Key: d.Key, Function: d.Function, Revision: d.Revision,
			Bytes: d.Bytes, Blocks: blocks, Created: d.Created, LastUse: info.ModTime()})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].LastUse.After(out[j].LastUse) })
	return out, nil
}
