package snapshot

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/hearth-run/hearth/internal/fsutil"
)

// Remote is a shared snapshot store (internal/snapshot/s3 implements it).
type Remote interface {
	// Put uploads the sealed snapshot in dir: its files first, the
	// descriptor last.
	Put(ctx context.Context, key, dir string, d *Descriptor) error
	// Get downloads snapshot key into the empty directory dir, checking
	// every file's SHA-256, and returns its descriptor. It returns an
	// error wrapping ErrNotFound when the store has no such snapshot.
	Get(ctx context.Context, key, dir string) (*Descriptor, error)
}

// CacheConfig configures a Cache.
type CacheConfig struct {
	// Dir holds the snapshots, one directory per key; required.
	Dir string
	// MaxBytes bounds the disk space the snapshots use, counted in
	// allocated blocks, not apparent sizes. Zero means 4 GiB.
	MaxBytes int64
	// Remote, if set, is where local misses are fetched from.
	Remote Remote
	// VerifyAlways hashes every file on every Acquire. By default a
	// snapshot is hashed in full once per process lifetime (or when it
	// is written) and later acquires compare each file's size, inode and
	// modification and change times with what was hashed.
	VerifyAlways bool
}

// Cache is the local snapshot cache: a directory of sealed snapshots,
// bounded in bytes with LRU eviction. A snapshot being restored is pinned
// (Acquire until Release) and never evicted. Snapshots are written to a
// temporary directory and renamed into place; at Open, leftovers and
// snapshots without a valid descriptor are deleted and the index is
// rebuilt from disk. A Cache is safe for concurrent use.
type Cache struct {
	dir    string
	max    int64
	remote Remote
	always bool

	mu      sync.Mutex
	entries map[string]*entry  // guarded by mu
	flights map[string]*flight // downloads in progress, guarded by mu
	used    int64              // guarded by mu
	stats   Stats              // guarded by mu
}

type entry struct {
	key      string
	desc     *Descriptor
	blocks   int64 // bytes allocated on disk
	lastUse  time.Time
	pins     int
	verified map[string]fileSig // per file, what was hashed; nil until verified
	doomed   bool               // delete on last Release
}

type fileSig struct {
	size, ino    uint64
	mtime, ctime int64
}

type flight struct {
	done chan struct{}
	err  error
}

// Stats counts cache events since Open.
type Stats struct {
	Hits, Misses, RemoteHits, RemoteMisses, RemoteErrors int64
	Evictions, Corrupt                                   int64
	DownloadedBytes, UploadedBytes                       int64
}

// Info describes one cached snapshot.
type Info struct {
	Key                string
	Function, Revision string
	// Bytes is the apparent size; Blocks the space used on disk.
	Bytes, Blocks int64
	Created       time.Time
	LastUse       time.Time
	Pinned        bool
}

// OpenCache opens (creating it if needed) the cache in cfg.Dir and
// rebuilds its index from disk, evicting down to the bound.
func OpenCache(cfg CacheConfig) (*Cache, error) {
	if cfg.Dir == "" {
		return nil, fmt.Errorf("snapshot cache: no dir: %w", ErrInvalid)
	}
	if cfg.MaxBytes < 0 {
		return nil, fmt.Errorf("snapshot cache: MaxBytes %d: %w", cfg.MaxBytes, ErrInvalid)
	}
	if cfg.MaxBytes == 0 {
		cfg.MaxBytes = 4 << 30
	}
	if err := os.MkdirAll(cfg.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("snapshot cache: %w", err)
	}
	c := &Cache{dir: cfg.Dir, max: cfg.MaxBytes, remote: cfg.Remote, always: cfg.VerifyAlways,
		entries: map[string]*entry{}, flights: map[string]*flight{}}
	ents, err := os.ReadDir(cfg.Dir)
	if err != nil {
		return nil, fmt.Errorf("snapshot cache: %w", err)
	}
	for _, ent := range ents {
		p := filepath.Join(cfg.Dir, ent.Name())
		if strings.HasPrefix(ent.Name(), ".") || !ent.IsDir() || ValidKey(ent.Name()) != nil {
			os.RemoveAll(p) // an interrupted write or a stray file
			continue
		}
		d, err := ReadDescriptor(p)
		if err != nil || d.Key != ent.Name() {
			os.RemoveAll(p) // never sealed, or not ours
			continue
		}
		blocks, err := fsutil.DiskUsage(p)
		if err != nil {
			return nil, fmt.Errorf("snapshot cache: %w", err)
		}
		info, err := ent.Info()
		if err != nil {
			return nil, fmt.Errorf("snapshot cache: %w", err)
		}
		c.entries[d.Key] = &entry{key: d.Key, desc: d, blocks: blocks, lastUse: info.ModTime()}
		c.used += blocks
	}
	c.mu.Lock()
	c.evictLocked()
	c.mu.Unlock()
	return c, nil
}

// Dir returns the cache directory.
func (c *Cache) Dir() string { return c.dir }

// Usage returns the bytes in use and the bound.
func (c *Cache) Usage() (used, max int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.used, c.max
}

// Stats returns the event counts.
func (c *Cache) Stats() Stats {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.stats
}

// List returns the cached snapshots, most recently used first.
func (c *Cache) List() []Info {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]Info, 0, len(c.entries))
	for _, e := range c.entries {
		out = append(out, Info{Key: e.key, Function: e.desc.Function, Revision: e.desc.Revision,
			Bytes: e.desc.Bytes, Blocks: e.blocks, Created: e.desc.Created, LastUse: e.lastUse, Pinned: e.pins > 0})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].LastUse.After(out[j].LastUse) })
	return out
}

// Create makes snapshot key: fill writes its files into an empty
// temporary directory and returns its descriptor, which Create seals
// (hashes every file, writes the descriptor) before renaming the
// directory into place. An existing snapshot of that key is replaced
// unless pinned. Older snapshots are evicted to stay within the bound.
func (c *Cache) Create(ctx context.Context, key string, fill func(dir string) (*Descriptor, error)) (*Descriptor, error) {
	if err := ValidKey(key); err != nil {
		return nil, err
	}
	tmp, err := c.tempDir(key)
	if err != nil {
		return nil, err
	}
	d, err := fill(tmp)
	if err == nil && ctx.Err() != nil {
		err = ctx.Err()
	}
	if err == nil {
		d.Key = key
		err = Seal(tmp, d)
	}
	if err != nil {
		os.RemoveAll(tmp)
		return nil, fmt.Errorf("creating snapshot %s: %w", key, err)
	}
	if err := c.commit(key, tmp, d); err != nil {
		return nil, err
	}
	return d, nil
}

func (c *Cache) tempDir(key string) (string, error) {
	var b [6]byte
	rand.Read(b[:])
	tmp := filepath.Join(c.dir, ".tmp-"+key+"-"+hex.EncodeToString(b[:]))
	if err := os.Mkdir(tmp, 0o700); err != nil {
		return "", fmt.Errorf("snapshot %s: %w", key, err)
	}
	return tmp, nil
}

// commit renames the sealed snapshot in tmp into place, marks it
// verified, and evicts.
func (c *Cache) commit(key, tmp string, d *Descriptor) error {
	blocks, err := fsutil.DiskUsage(tmp)
	if err != nil {
		os.RemoveAll(tmp)
		return fmt.Errorf("snapshot %s: %w", key, err)
	}
	sigs, err := signatures(tmp, d)
	if err != nil {
		os.RemoveAll(tmp)
		return fmt.Errorf("snapshot %s: %w", key, err)
	}
	if blocks > c.max {
		os.RemoveAll(tmp)
		return fmt.Errorf("snapshot %s: %d bytes, cache holds %d: %w", key, blocks, c.max, ErrTooLarge)
	}
	final := filepath.Join(c.dir, key)
	c.mu.Lock()
	defer c.mu.Unlock()
	if old, ok := c.entries[key]; ok {
		if old.pins > 0 {
			os.RemoveAll(tmp)
			return fmt.Errorf("snapshot %s: replacing a snapshot in use: %w", key, ErrInvalid)
		}
		c.dropLocked(old)
	}
	// Sync the rename: a crash after it must not lose the snapshot.
	if err := os.Rename(tmp, final); err != nil {
		os.RemoveAll(tmp)
		return fmt.Errorf("snapshot %s: %w", key, err)
	}
	syncDir(c.dir)
	c.entries[key] = &entry{key: key, desc: d, blocks: blocks, lastUse: time.Now(), verified: sigs}
	c.used += blocks
	c.evictLocked()
	return nil
}

// Handle is a pinned snapshot; Release unpins it.
type Handle struct {
	c    *Cache
	e    *entry
	once sync.Once
	// Remote reports whether this acquire fetched it from the remote
	// store.
	Remote bool
}

// Dir returns the snapshot's directory.
func (h *Handle) Dir() string { return filepath.Join(h.c.dir, h.e.key) }

// Descriptor returns the snapshot's descriptor.
func (h *Handle) Descriptor() *Descriptor { return h.e.desc }

// Release unpins the snapshot. It is idempotent.
func (h *Handle) Release() {
	h.once.Do(func() {
		c := h.c
		c.mu.Lock()
		defer c.mu.Unlock()
		h.e.pins--
		if h.e.pins == 0 && h.e.doomed {
			os.RemoveAll(filepath.Join(c.dir, h.e.key))
		}
		c.evictLocked()
	})
}

// Acquire pins snapshot key for a restore, fetching it from the remote
// store on a local miss (one download per key at a time; concurrent
// callers wait for it). The snapshot is verified first: a mismatch
// deletes it and returns ErrCorrupt. A miss everywhere returns
// ErrNotFound; the caller falls back to a fork or a cold start on any
// error.
func (c *Cache) Acquire(ctx context.Context, key string) (*Handle, error) {
	if err := ValidKey(key); err != nil {
		return nil, err
	}
	remote := false
	for {
		c.mu.Lock()
		if e, ok := c.entries[key]; ok && !e.doomed {
			e.pins++
			e.lastUse = time.Now()
			if !remote {
				c.stats.Hits++ // else counted as a remote hit
			}
			c.mu.Unlock()
			h := &Handle{c: c, e: e, Remote: remote}
			if err := c.check(e); err != nil {
				h.Release()
				return nil, err
			}
			os.Chtimes(h.Dir(), e.lastUse, e.lastUse) // LRU order survives restarts
			return h, nil
		}
		if c.remote == nil || remote {
			c.stats.Misses++
			c.mu.Unlock()
			return nil, fmt.Errorf("snapshot %s: %w", key, ErrNotFound)
		}
		f, ok := c.flights[key]
		if !ok {
			f = &flight{done: make(chan struct{})}
			c.flights[key] = f
			c.stats.Misses++
			go c.download(key, f)
		}
		c.mu.Unlock()
		select {
		case <-f.done:
		case <-ctx.Done():
			return nil, fmt.Errorf("snapshot %s: waiting for download: %w", key, ctx.Err())
		}
		if f.err != nil {
			return nil, f.err
		}
		remote = true
	}
}

// download fetches key into the cache. It runs detached from any one
// caller's context, so a caller giving up does not waste the download
// for the others; the remote's own timeouts bound it.
func (c *Cache) download(key string, f *flight) {
	defer func() {
		c.mu.Lock()
		delete(c.flights, key)
		c.mu.Unlock()
		close(f.done)
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	tmp, err := c.tempDir(key)
	if err != nil {
		f.err = err
		return
	}
	d, err := c.remote.Get(ctx, key, tmp)
	if err == nil && d.Key != key {
		err = fmt.Errorf("remote descriptor names %q: %w", d.Key, ErrCorrupt)
	}
	if err == nil {
		// Write the descriptor last, as a local Create does.
		err = writeDescriptor(tmp, d)
	}
	c.mu.Lock()
	switch {
	case err == nil:
		c.stats.RemoteHits++
		c.stats.DownloadedBytes += d.Bytes
	case errors.Is(err, ErrNotFound):
		c.stats.RemoteMisses++
	default:
		c.stats.RemoteErrors++
	}
	c.mu.Unlock()
	if err != nil {
		os.RemoveAll(tmp)
		f.err = fmt.Errorf("snapshot %s: remote: %w", key, err)
		return
	}
	f.err = c.commit(key, tmp, d)
}

// Push uploads snapshot key to the remote store.
func (c *Cache) Push(ctx context.Context, key string) error {
	if c.remote == nil {
		return fmt.Errorf("snapshot %s: no remote store: %w", key, ErrInvalid)
	}
	c.mu.Lock()
	e, ok := c.entries[key]
	if !ok || e.doomed {
		c.mu.Unlock()
		return fmt.Errorf("snapshot %s: %w", key, ErrNotFound)
	}
	e.pins++
	c.mu.Unlock()
	h := &Handle{c: c, e: e}
	defer h.Release()
	if err := c.remote.Put(ctx, key, h.Dir(), e.desc); err != nil {
		return fmt.Errorf("snapshot %s: upload: %w", key, err)
	}
	c.mu.Lock()
	c.stats.UploadedBytes += e.desc.Bytes
	c.mu.Unlock()
	return nil
}

// check verifies e's files against its descriptor; see
// CacheConfig.VerifyAlways. On a mismatch the snapshot is dropped.
func (c *Cache) check(e *entry) error {
	dir := filepath.Join(c.dir, e.key)
	c.mu.Lock()
	known := e.verified
	c.mu.Unlock()
	if !c.always && known != nil {
		now, err := signatures(dir, e.desc)
		if err == nil && sameSigs(now, known) {
			return nil
		}
	}
	err := Verify(dir, e.desc)
	if err == nil {
		sigs, serr := signatures(dir, e.desc)
		c.mu.Lock()
		if serr == nil {
			e.verified = sigs
		}
		c.mu.Unlock()
		return nil
	}
	c.mu.Lock()
	c.stats.Corrupt++
	c.dropLocked(e)
	c.mu.Unlock()
	return err
}

// Remove deletes snapshot key; one in use is deleted on its last
// Release.
func (c *Cache) Remove(key string) error {
	if err := ValidKey(key); err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.entries[key]
	if !ok {
		return fmt.Errorf("snapshot %s: %w", key, ErrNotFound)
	}
	c.dropLocked(e)
	return nil
}

// dropLocked forgets e and deletes its files now, or on its last Release
// if pinned. A doomed entry's directory is renamed away at once so that a
// new snapshot of the same key can take its place.
func (c *Cache) dropLocked(e *entry) {
	if c.entries[e.key] == e {
		delete(c.entries, e.key)
		c.used -= e.blocks
	}
	dir := filepath.Join(c.dir, e.key)
	if e.pins > 0 {
		var b [6]byte
		rand.Read(b[:])
		gone := filepath.Join(c.dir, ".gone-"+e.key+"-"+hex.EncodeToString(b[:]))
		if os.Rename(dir, gone) == nil {
			e.key = filepath.Base(gone)
		}
		e.doomed = true
		return
	}
	os.RemoveAll(dir)
}

// evictLocked removes least recently used, unpinned snapshots until the
// total is within the bound. Pinned ones may keep it above for a while.
func (c *Cache) evictLocked() {
	if c.used <= c.max {
		return
	}
	var cand []*entry
	for _, e := range c.entries {
		if e.pins == 0 {
			cand = append(cand, e)
		}
	}
	sort.Slice(cand, func(i, j int) bool { return cand[i].lastUse.Before(cand[j].lastUse) })
	for _, e := range cand {
		if c.used <= c.max {
			return
		}
		c.dropLocked(e)
		c.stats.Evictions++
	}
}

func signatures(dir string, d *Descriptor) (map[string]fileSig, error) {
	out := make(map[string]fileSig, len(d.Files))
	for _, f := range d.Files {
		var st syscall.Stat_t
		if err := syscall.Lstat(filepath.Join(dir, filepath.FromSlash(f.Path)), &st); err != nil {
			return nil, err
		}
		out[f.Path] = fileSig{size: uint64(st.Size), ino: st.Ino, mtime: st.Mtim.Nano(), ctime: st.Ctim.Nano()}
	}
	return out, nil
}

func sameSigs(a, b map[string]fileSig) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

func writeDescriptor(dir string, d *Descriptor) error {
	b, err := marshalDescriptor(d)
	if err != nil {
		return err
	}
	return writeFileAtomic(filepath.Join(dir, DescriptorName), b)
}

func syncDir(dir string) {
	if f, err := os.Open(dir); err == nil {
		f.Sync()
		f.Close()
	}
}
