package snapshot

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hearth-run/hearth/internal/fsutil"
)

// fakeSnapshot returns a fill func writing files of the given sizes with
// random contents (random so that no file system can compress them).
func fakeSnapshot(sizes ...int) func(string) (*Descriptor, error) {
	return func(dir string) (*Descriptor, error) {
		if err := os.Mkdir(filepath.Join(dir, imagesDir), 0o700); err != nil {
			return nil, err
		}
		for i, n := range sizes {
			b := make([]byte, n)
			rand.Read(b)
			if err := os.WriteFile(filepath.Join(dir, imagesDir, fmt.Sprintf("pages-%d.img", i)), b, 0o600); err != nil {
				return nil, err
			}
		}
		return &Descriptor{Function: "f", Revision: "r", Socket: "rt.sock"}, nil
	}
}

func openCache(t *testing.T, dir string, max int64, r Remote) *Cache {
	t.Helper()
	c, err := OpenCache(CacheConfig{Dir: dir, MaxBytes: max, Remote: r})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func mustCreate(t *testing.T, c *Cache, key string, sizes ...int) {
	t.Helper()
	if _, err := c.Create(context.Background(), key, fakeSnapshot(sizes...)); err != nil {
		t.Fatalf("create %s: %v", key, err)
	}
}

func keys(c *Cache) map[string]bool {
	out := map[string]bool{}
	for _, i := range c.List() {
		out[i.Key] = true
	}
	return out
}

func TestCacheCreateAcquire(t *testing.T) {
	c := openCache(t, t.TempDir(), 0, nil)
	mustCreate(t, c, "a", 100000, 5000)
	h, err := c.Acquire(context.Background(), "a")
	if err != nil {
		t.Fatal(err)
	}
	d := h.Descriptor()
	if d.Key != "a" || len(d.Files) != 2 || d.Bytes != 105000 {
		t.Fatalf("descriptor %+v", d)
	}
	if err := Verify(h.Dir(), d); err != nil {
		t.Fatal(err)
	}
	if l := c.List(); len(l) != 1 || !l[0].Pinned || l[0].Blocks < 105000 {
		t.Fatalf("list %+v", l)
	}
	h.Release()
	h.Release() // idempotent
	if l := c.List(); l[0].Pinned {
		t.Fatal("still pinned after Release")
	}
	if _, err := c.Acquire(context.Background(), "nope"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("missing key: %v", err)
	}
	if st := c.Stats(); st.Hits != 1 || st.Misses != 1 {
		t.Fatalf("stats %+v", st)
	}
	if err := c.Remove("a"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(c.Dir(), "a")); !os.IsNotExist(err) {
		t.Fatalf("removed snapshot still on disk: %v", err)
	}
	if used, _ := c.Usage(); used != 0 {
		t.Fatalf("usage %d after removing everything", used)
	}
}

func TestCacheBadInput(t *testing.T) {
	c := openCache(t, t.TempDir(), 0, nil)
	for _, k := range []string{"", ".hidden", "a/b", "../x", "sp ace", string(make([]byte, 200))} {
		t.Run(fmt.Sprintf("%q", k), func(t *testing.T) {
			if _, err := c.Create(context.Background(), k, fakeSnapshot(1)); !errors.Is(err, ErrInvalid) {
				t.Errorf("Create: %v, want ErrInvalid", err)
			}
			if _, err := c.Acquire(context.Background(), k); !errors.Is(err, ErrInvalid) {
				t.Errorf("Acquire: %v, want ErrInvalid", err)
			}
		})
	}
	if _, err := OpenCache(CacheConfig{}); !errors.Is(err, ErrInvalid) {
		t.Errorf("no dir: %v", err)
	}
	if _, err := OpenCache(CacheConfig{Dir: t.TempDir(), MaxBytes: -1}); !errors.Is(err, ErrInvalid) {
		t.Errorf("negative bound: %v", err)
	}
	small := openCache(t, t.TempDir(), 64<<10, nil)
	if _, err := small.Create(context.Background(), "big", fakeSnapshot(1<<20)); !errors.Is(err, ErrTooLarge) {
		t.Errorf("too large: %v", err)
	}
	failing := func(string) (*Descriptor, error) { return nil, errors.New("dump failed") }
	if _, err := c.Create(context.Background(), "x", failing); err == nil {
		t.Error("failing fill: no error")
	}
	if ents, _ := os.ReadDir(c.Dir()); len(ents) != 0 {
		t.Errorf("failed creates left %d entries", len(ents))
	}
}

func TestCacheEvictionKeepsPinned(t *testing.T) {
	const mb = 1 << 20
	c := openCache(t, t.TempDir(), 3*mb+mb/2, nil)
	ctx := context.Background()
	mustCreate(t, c, "old-pinned", mb)
	time.Sleep(5 * time.Millisecond)
	mustCreate(t, c, "b", mb)
	time.Sleep(5 * time.Millisecond)
	mustCreate(t, c, "c", mb)
	pinned, err := c.Acquire(ctx, "old-pinned") // also the most recently used now
	if err != nil {
		t.Fatal(err)
	}
	// Make old-pinned the least recently used again: only the pin saves it.
	c.mu.Lock()
	c.entries["old-pinned"].lastUse = time.Unix(0, 0)
	c.mu.Unlock()
	time.Sleep(5 * time.Millisecond)
	mustCreate(t, c, "d", mb)
	k := keys(c)
	if !k["old-pinned"] || k["b"] || !k["c"] || !k["d"] {
		t.Fatalf("after eviction: %v, want old-pinned, c, d", k)
	}
	if _, err := os.Stat(filepath.Join(c.Dir(), "b")); !os.IsNotExist(err) {
		t.Fatalf("evicted snapshot still on disk: %v", err)
	}
	if used, max := c.Usage(); used > max {
		t.Fatalf("used %d > bound %d", used, max)
	}
	if err := Verify(pinned.Dir(), pinned.Descriptor()); err != nil {
		t.Fatalf("pinned snapshot damaged: %v", err)
	}
	pinned.Release()
	mustCreate(t, c, "e", mb)
	if k := keys(c); k["old-pinned"] {
		t.Fatalf("unpinned LRU snapshot not evicted: %v", k)
	}
	if st := c.Stats(); st.Evictions != 2 {
		t.Fatalf("evictions %d, want 2", st.Evictions)
	}
	// Usage counts blocks on disk, as du does.
	used, _ := c.Usage()
	du, err := fsutil.DiskUsage(c.Dir())
	if err != nil {
		t.Fatal(err)
	}
	if used > du || du-used > 64<<10 {
		t.Fatalf("usage %d, disk %d", used, du)
	}
}

func TestCacheCorrupt(t *testing.T) {
	cases := []struct {
		name  string
		spoil func(t *testing.T, file string)
	}{
		{"flipped byte", func(t *testing.T, f string) {
			fh, err := os.OpenFile(f, os.O_RDWR, 0)
			if err != nil {
				t.Fatal(err)
			}
			b := make([]byte, 1)
			fh.ReadAt(b, 1000)
			b[0] ^= 0xff
			fh.WriteAt(b, 1000)
			fh.Close()
		}},
		{"truncated", func(t *testing.T, f string) {
			if err := os.Truncate(f, 4096); err != nil {
				t.Fatal(err)
			}
		}},
		{"missing", func(t *testing.T, f string) {
			if err := os.Remove(f); err != nil {
				t.Fatal(err)
			}
		}},
		{"same size, times restored", func(t *testing.T, f string) {
			st, _ := os.Stat(f)
			b, _ := os.ReadFile(f)
			b[0] ^= 1
			os.WriteFile(f, b, 0o600)
			os.Chtimes(f, st.ModTime(), st.ModTime()) // ctime still changes
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := openCache(t, t.TempDir(), 0, nil)
			mustCreate(t, c, "s", 64<<10)
			// A first acquire verifies and records the files.
			h, err := c.Acquire(context.Background(), "s")
			if err != nil {
				t.Fatal(err)
			}
			h.Release()
			tc.spoil(t, filepath.Join(c.Dir(), "s", imagesDir, "pages-0.img"))
			if _, err := c.Acquire(context.Background(), "s"); !errors.Is(err, ErrCorrupt) {
				t.Fatalf("acquire: %v, want ErrCorrupt", err)
			}
			if _, err := os.Stat(filepath.Join(c.Dir(), "s")); !os.IsNotExist(err) {
				t.Fatalf("corrupt snapshot not deleted: %v", err)
			}
			if _, err := c.Acquire(context.Background(), "s"); !errors.Is(err, ErrNotFound) {
				t.Fatalf("second acquire: %v, want ErrNotFound", err)
			}
			// Also after a restart, where nothing is known to be verified.
			mustCreate(t, c, "s", 64<<10)
			tc.spoil(t, filepath.Join(c.Dir(), "s", imagesDir, "pages-0.img"))
			c2 := openCache(t, c.Dir(), 0, nil)
			if _, err := c2.Acquire(context.Background(), "s"); !errors.Is(err, ErrCorrupt) {
				t.Fatalf("acquire after reopen: %v, want ErrCorrupt", err)
			}
		})
	}
}

func TestCacheRestart(t *testing.T) {
	dir := t.TempDir()
	c := openCache(t, dir, 0, nil)
	mustCreate(t, c, "a", 10000)
	time.Sleep(10 * time.Millisecond)
	mustCreate(t, c, "b", 10000)
	time.Sleep(10 * time.Millisecond)
	h, err := c.Acquire(context.Background(), "a") // a is now the most recent
	if err != nil {
		t.Fatal(err)
	}
	h.Release()
	usedBefore, _ := c.Usage()
	// Debris a crash leaves: an interrupted write and an unsealed dir.
	os.MkdirAll(filepath.Join(dir, ".tmp-c-123456", imagesDir), 0o700)
	os.MkdirAll(filepath.Join(dir, "unsealed"), 0o700)
	os.WriteFile(filepath.Join(dir, "unsealed", "x"), []byte("x"), 0o600)

	c2 := openCache(t, dir, 0, nil)
	l := c2.List()
	if len(l) != 2 || l[0].Key != "a" || l[1].Key != "b" {
		t.Fatalf("after restart: %+v, want a then b", l)
	}
	if used, _ := c2.Usage(); used != usedBefore {
		t.Fatalf("usage %d after restart, %d before", used, usedBefore)
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) != 2 {
		t.Fatalf("debris left: %v", ents)
	}
	h, err = c2.Acquire(context.Background(), "b")
	if err != nil {
		t.Fatal(err)
	}
	h.Release()
	// A smaller bound on reopen evicts the least recently used.
	c3 := openCache(t, dir, usedBefore/2+1000, nil)
	if k := keys(c3); len(k) != 1 || !k["b"] {
		t.Fatalf("after reopen with a smaller bound: %v, want b", k)
	}
}

// dirRemote is a directory-backed Remote that counts Gets; the S3 store
// is tested against a real S3 server in internal/snapshot/s3.
type dirRemote struct {
	root string
	gets atomic.Int32
	gate chan struct{} // if set, Get waits for it
}

func (r *dirRemote) Put(ctx context.Context, key, dir string, d *Descriptor) error {
	dst := filepath.Join(r.root, key)
	if err := os.MkdirAll(filepath.Join(dst, imagesDir), 0o700); err != nil {
		return err
	}
	for _, f := range d.Files {
		b, err := os.ReadFile(filepath.Join(dir, f.Path))
		if err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(dst, f.Path), b, 0o600); err != nil {
			return err
		}
	}
	return writeDescriptor(dst, d)
}

func (r *dirRemote) Get(ctx context.Context, key, dir string) (*Descriptor, error) {
	r.gets.Add(1)
	if r.gate != nil {
		<-r.gate
	}
	d, err := ReadDescriptor(filepath.Join(r.root, key))
	if os.IsNotExist(err) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, err
	}
	os.MkdirAll(filepath.Join(dir, imagesDir), 0o700)
	for _, f := range d.Files {
		b, err := os.ReadFile(filepath.Join(r.root, key, f.Path))
		if err != nil {
			return nil, err
		}
		if err := os.WriteFile(filepath.Join(dir, f.Path), b, 0o600); err != nil {
			return nil, err
		}
	}
	return d, Verify(dir, d)
}

func TestCacheRemoteSingleflight(t *testing.T) {
	r := &dirRemote{root: t.TempDir()}
	a := openCache(t, t.TempDir(), 0, r)
	mustCreate(t, a, "s", 200000)
	if err := a.Push(context.Background(), "s"); err != nil {
		t.Fatal(err)
	}
	r.gate = make(chan struct{})
	b := openCache(t, t.TempDir(), 0, r)
	const n = 8
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			h, err := b.Acquire(context.Background(), "s")
			if err != nil {
				errs <- err
				return
			}
			defer h.Release()
			if err := Verify(h.Dir(), h.Descriptor()); err != nil {
				errs <- err
			}
		}()
	}
	time.Sleep(50 * time.Millisecond)
	close(r.gate)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if g := r.gets.Load(); g != 1 {
		t.Fatalf("%d downloads for %d concurrent acquires, want 1", g, n)
	}
	if st := b.Stats(); st.RemoteHits != 1 || st.DownloadedBytes != 200000 {
		t.Fatalf("stats %+v", st)
	}
	if _, err := b.Acquire(context.Background(), "absent"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("remote miss: %v", err)
	}
}

func TestReadDir(t *testing.T) {
	dir := t.TempDir()
	c := openCache(t, dir, 0, nil)
	mustCreate(t, c, "a", 1000)
	time.Sleep(5 * time.Millisecond)
	mustCreate(t, c, "b", 2000)
	os.MkdirAll(filepath.Join(dir, "junk"), 0o700)
	l, err := ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(l) != 2 || l[0].Key != "b" || l[1].Key != "a" || l[0].Bytes != 2000 || l[0].Blocks < 2000 {
		t.Fatalf("ReadDir: %+v", l)
	}
	if _, err := os.Stat(filepath.Join(dir, "junk")); err != nil {
		t.Fatalf("ReadDir changed the directory: %v", err)
	}
	if _, err := ReadDir(filepath.Join(dir, "nope")); err == nil {
		t.Fatal("ReadDir of a missing dir: no error")
	}
}
