package sandbox

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// Disks makes the file systems of sandboxes' on-disk /tmp: each is an
// ext4 file system in a sparse image file in a directory on the data
// dir's disk, on a loop device, mounted detached (fsmount(2)). Such a
// mount is in no mount namespace: a sandbox's init moves a mount of it
// onto its /tmp, so no other namespace ever holds a copy of it, and it
// goes, loop device and image with it, once the last reference (Disks'
// descriptor of its root, the sandbox's namespace) does. Its files are
// page cache, which the kernel can write back and reclaim, not tmpfs
// memory the sandbox's cgroup must hold, and the image's size caps what
// the sandbox can write.
//
// Making one costs about 2 ms (a sparse copy of a per-size template made
// once by mkfs.ext4, a loop device, the mount), against 50 us for a
// tmpfs, so Disks keeps a few ready for each size in recent use: taking
// one of those costs about 10 us (BenchmarkScratchMake).
//
// A file system serves one sandbox at a time and is then reused: the
// sandbox gets a directory of it, "tmp", as a detached mount of its own
// (a Scratch); only Disks holds the root. Once the sandbox's processes
// are gone (Scratch.Release), the directory is removed and the file
// system must be back to the free blocks and inodes it had when made: a
// file or directory of it that anything still holds open keeps its
// inode, and such a file system is dropped, never reused. So is one that
// was left with many files or names, or whose image has grown much since
// it was made (see reuseFiles). A fresh directory then goes to the next
// sandbox. That saves making and
// dropping a file system per sandbox (about 1.2 ms of CPU and 90 KiB
// written; BenchmarkScratchLife). Kernels that cannot clone a detached
// mount (open_tree, before Linux 6.15) get a whole new file system per
// sandbox, as before.
//
// A Disks is safe for concurrent use; its owner calls Close once no
// sandbox uses it anymore.
type Disks struct {
	dir   string
	ready int
	mkfs  string
	log   *slog.Logger

	wake chan struct{}
	stop chan struct{}
	done chan struct{}

	mu     sync.Mutex
	sizes  map[int64]*diskSize // by usable bytes; guarded by mu
	seq    uint64              // image names; guarded by mu
	taken  time.Time           // last Take; guarded by mu
	closed bool                // guarded by mu
	stats  DiskStats           // guarded by mu
	// noReuse says why file systems are not reused here, if they are not.
	noReuse error // guarded by mu
}

// DiskStats counts what became of Disks' file systems.
type DiskStats struct {
	Made    int64 // file systems made
	Reused  int64 // times one was emptied after a sandbox and made ready again
	Dropped int64 // file systems gone: after a sandbox (see Disks), or unused
}

// diskSize is the template and the reserve of one /tmp size.
type diskSize struct {
	bytes int64 // usable bytes asked for

	tmplMu sync.Mutex
	image  string // template image file, once made; guarded by tmplMu

	ready   []*Scratch // guarded by Disks.mu
	making  int        // guarded by Disks.mu
	lastUse time.Time  // guarded by Disks.mu
	keep    bool       // keep a reserve even unused (Keep); guarded by Disks.mu
}

// DisksConfig configures Disks. The zero value is usable.
type DisksConfig struct {
	// Ready is how many file systems are kept ready for each size in use
	// (default 4; negative: none, each is made when taken).
	Ready int
	// Logger receives the failures of the background refill (default
	// slog.Default()).
	Logger *slog.Logger
}

// diskIdle is how long a size nobody asked for keeps its reserve.
const diskIdle = 10 * time.Minute

// ProbeDisks reports whether this host can give sandboxes an on-disk
// /tmp: it needs loop devices and mkfs.ext4. The error wraps ErrNoDisks.
func ProbeDisks() error {
	_, err := probeDisks()
	return err
}

// probeDisks returns mkfs.ext4's path if the host has it and loop devices.
func probeDisks() (string, error) {
	mkfs, err := findMkfs()
	if err != nil {
		return "", err
	}
	fd, err := unix.Open("/dev/loop-control", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return "", fmt.Errorf("%w: /dev/loop-control: %w", ErrNoDisks, err)
	}
	unix.Close(fd)
	return mkfs, nil
}

// OpenDisks sweeps dir (see SweepDisks), creates it, and starts keeping
// file systems ready. It fails with ErrNoDisks when the host has no loop
// devices or no mkfs.ext4.
func OpenDisks(dir string, cfg DisksConfig) (*Disks, error) {
	mkfs, err := probeDisks()
	if err != nil {
		return nil, err
	}
	if _, err := SweepDisks(dir); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("sandbox disks: %w", err)
	}
	if cfg.Ready == 0 {
		cfg.Ready = 4
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	d := &Disks{
		dir: dir, ready: max(cfg.Ready, 0), mkfs: mkfs, log: cfg.Logger,
		wake: make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{}),
		sizes: map[int64]*diskSize{},
	}
	if d.ready == 0 {
		d.noReuse = errors.New("no reserve kept (Ready < 0)")
	} else if err := ProbeReuse(); err != nil {
		d.noReuse = err
		d.log.Info("sandbox /tmp file systems are not reused on this host: each is made for one sandbox", "err", err)
	}
	go d.fill()
	return d, nil
}

func findMkfs() (string, error) {
	if p, err := exec.LookPath("mkfs.ext4"); err == nil {
		return p, nil
	}
	for _, p := range []string{"/usr/sbin/mkfs.ext4", "/sbin/mkfs.ext4"} {
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	return "", fmt.Errorf("%w: mkfs.ext4 not found (Debian: e2fsprogs)", ErrNoDisks)
}

// sizeLocked returns the entry of bytes, made if new; d.mu must be held.
func (d *Disks) sizeLocked(bytes int64) *diskSize {
	s := d.sizes[bytes]
	if s == nil {
		s = &diskSize{bytes: bytes}
		d.sizes[bytes] = s
	}
	return s
}

// Keep keeps a reserve of file systems of bytes ready even when none was
// taken lately: the size of pre-made sandboxes.
func (d *Disks) Keep(bytes int64) {
	d.mu.Lock()
	d.sizeLocked(bytes).keep = true
	d.mu.Unlock()
	d.poke()
}

func (d *Disks) poke() {
	select {
	case d.wake <- struct{}{}:
	default:
	}
}

// diskFS is one file system of Disks.
type diskFS struct {
	size  *diskSize
	root  *os.File // a detached mount of its root, Disks' own
	image *os.File // its image, unlinked: what it holds of the disk
	// free and files are its free blocks and inodes when made, without
	// its "tmp"; blocks is the image's blocks (of 512 bytes) then.
	free, files uint64
	blocks      int64
}

// A Scratch is an empty on-disk /tmp from Disks for one sandbox.
type Scratch struct {
	// Mount is a detached mount of the /tmp, root mode 1777: the
	// sandbox's init moves it onto its /tmp.
	Mount    *os.File
	d        *Disks
	fs       *diskFS // nil: Mount is the root of a file system used once
	released atomic.Bool
}

// Release gives s back once its sandbox is done with it, and closes
// s.Mount; a second call does nothing. reuse says that the sandbox's
// processes are gone (killed and waited for, or never started), so that
// its file system may serve another sandbox once emptied; false drops
// it. What keeps another sandbox from ever meeting anything of this one
// is not reuse but the check after emptying (see Disks): whatever still
// holds a file or directory of it, or its mount, keeps an inode in use,
// and the file system is dropped.
func (s *Scratch) Release(reuse bool) {
	if s.released.Swap(true) {
		return
	}
	s.Mount.Close()
	if s.fs != nil && reuse && s.d.recycle(s.fs) {
		return
	}
	if s.fs != nil {
		s.fs.close()
	}
	s.d.count(func(st *DiskStats) { st.Dropped++ })
}

func (d *Disks) count(f func(*DiskStats)) {
	d.mu.Lock()
	f(&d.stats)
	d.mu.Unlock()
}

// Stats reports what became of the file systems so far.
func (d *Disks) Stats() DiskStats {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.stats
}

// Reuse reports nil if released file systems are reused on this host,
// else why not (see ProbeReuse).
func (d *Disks) Reuse() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.noReuse
}

const (
	// reuseFiles is how many inodes (files, directories, sockets...) a
	// sandbox may leave in its /tmp for the file system to be emptied
	// and reused rather than dropped: removing them costs the worker
	// CPU, dropping the file system does not.
	reuseFiles = 64
	// reuseNames bounds the names removed: hard links give one inode
	// many, so a /tmp with more is dropped halfway through instead.
	reuseNames = 4 * reuseFiles
	// reuseGrowth is how much the image may have grown on the data
	// dir's disk: the blocks a removed file freed stay allocated in it.
	reuseGrowth = 16 << 20
)

// recycle empties fs after its sandbox and, if it is back to as made,
// makes it ready again. It reports false if fs is to be dropped.
func (d *Disks) recycle(fs *diskFS) bool {
	if !d.wants(fs.size) {
		return false
	}
	if err := fs.empty(); err != nil {
		d.log.Debug("dropping a sandbox /tmp file system rather than reuse it", "err", err)
		return false
	}
	sc, err := d.open(fs)
	if err != nil {
		d.log.Debug("dropping a sandbox /tmp file system rather than reuse it", "err", err)
		return false
	}
	d.mu.Lock()
	ok := d.wantsLocked(fs.size)
	if ok {
		fs.size.ready = append(fs.size.ready, sc)
		d.stats.Reused++
	}
	d.mu.Unlock()
	if !ok {
		sc.Mount.Close()
	}
	return ok
}

// wants reports whether s's reserve has room for one more released file
// system: up to twice the reserve the refill keeps. A start takes one
// and the refill makes another only below the reserve, so while starts
// and teardowns come at the same rate the file systems go round and
// none is made or dropped.
func (d *Disks) wants(s *diskSize) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.wantsLocked(s)
}

func (d *Disks) wantsLocked(s *diskSize) bool {
	return !d.closed && d.noReuse == nil && d.sizes[s.bytes] == s && len(s.ready) < 2*d.ready
}

// empty removes fs's "tmp" and checks that fs has the free blocks and
// inodes it had when made: none is held by an open file.
func (fs *diskFS) empty() error {
	var st unix.Statfs_t
	if err := unix.Fstatfs(int(fs.root.Fd()), &st); err != nil {
		return fmt.Errorf("statfs: %w", err)
	}
	if used := fs.files - st.Ffree; used > reuseFiles+1 {
		return fmt.Errorf("%d files left", used-1)
	}
	var ist unix.Stat_t
	if err := unix.Fstat(int(fs.image.Fd()), &ist); err != nil {
		return fmt.Errorf("image: %w", err)
	}
	if grew := (ist.Blocks - fs.blocks) * 512; grew > reuseGrowth {
		return fmt.Errorf("image grew %d MiB", grew>>20)
	}
	budget := reuseNames
	if err := removeTree(int(fs.root.Fd()), "tmp", &budget); err != nil {
		return err
	}
	if err := unix.Fstatfs(int(fs.root.Fd()), &st); err != nil {
		return fmt.Errorf("statfs: %w", err)
	}
	if st.Bfree != fs.free || st.Ffree != fs.files {
		return fmt.Errorf("emptied, %d blocks and %d inodes still in use: something holds a file of it open",
			int64(fs.free)-int64(st.Bfree), int64(fs.files)-int64(st.Ffree))
	}
	return nil
}

// errManyNames says a tree had more names than removeTree's budget.
var errManyNames = errors.New("too many names to remove")

// removeTree removes name, in the directory dir, and all below it,
// following no symbolic link, and gives up with errManyNames once it has
// met more than *budget names.
func removeTree(dir int, name string, budget *int) error {
	if *budget--; *budget < 0 {
		return errManyNames
	}
	err := unix.Unlinkat(dir, name, 0)
	if err == nil || err == unix.ENOENT {
		return nil
	}
	if err != unix.EISDIR {
		return fmt.Errorf("remove %s: %w", name, err)
	}
	fd, err := unix.Openat(dir, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open %s: %w", name, err)
	}
	d := os.NewFile(uintptr(fd), name)
	defer d.Close()
	for {
		// In batches: a directory may hold very many names.
		names, err := d.Readdirnames(64)
		for _, n := range names {
			if err := removeTree(fd, n, budget); err != nil {
				return err
			}
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			return fmt.Errorf("read %s: %w", name, err)
		}
	}
	if err := unix.Unlinkat(dir, name, unix.AT_REMOVEDIR); err != nil {
		return fmt.Errorf("remove %s: %w", name, err)
	}
	return nil
}

func (fs *diskFS) close() {
	fs.root.Close()
	if fs.image != nil {
		fs.image.Close()
	}
}

// open makes fs's "tmp" (mode 1777, owned by root) and returns a Scratch
// of it; where released file systems are not reused, one of fs's root.
func (d *Disks) open(fs *diskFS) (*Scratch, error) {
	if d.Reuse() == nil {
		return fs.fresh(d)
	}
	fs.image.Close()
	fs.image = nil
	return &Scratch{Mount: fs.root, d: d}, nil
}

// fresh makes fs's "tmp" and a Scratch of it.
func (fs *diskFS) fresh(d *Disks) (*Scratch, error) {
	root := int(fs.root.Fd())
	if err := unix.Mkdirat(root, "tmp", 0o700); err != nil {
		return nil, fmt.Errorf("sandbox disks: %w", err)
	}
	if err := unix.Fchmodat(root, "tmp", 0o1777, 0); err != nil {
		unix.Unlinkat(root, "tmp", unix.AT_REMOVEDIR)
		return nil, fmt.Errorf("sandbox disks: %w", err)
	}
	m, err := unix.OpenTree(root, "tmp", unix.OPEN_TREE_CLONE|unix.OPEN_TREE_CLOEXEC)
	if err != nil {
		unix.Unlinkat(root, "tmp", unix.AT_REMOVEDIR)
		return nil, fmt.Errorf("sandbox disks: open_tree: %w", err)
	}
	return &Scratch{Mount: os.NewFile(uintptr(m), "tmp"), d: d, fs: fs}, nil
}

// ProbeReuse reports whether this kernel can hand out a directory of a
// detached mount as a detached mount of its own (open_tree of a
// detached mount, Linux 6.15), which reusing /tmp file systems needs.
func ProbeReuse() error {
	fs, err := unix.Fsopen("tmpfs", unix.FSOPEN_CLOEXEC)
	if err != nil {
		return fmt.Errorf("fsopen tmpfs: %w", err)
	}
	defer unix.Close(fs)
	if err := unix.FsconfigCreate(fs); err != nil {
		return fmt.Errorf("tmpfs: %w", err)
	}
	m, err := unix.Fsmount(fs, unix.FSMOUNT_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("fsmount tmpfs: %w", err)
	}
	defer unix.Close(m)
	if err := unix.Mkdirat(m, "d", 0o700); err != nil {
		return err
	}
	c, err := unix.OpenTree(m, "d", unix.OPEN_TREE_CLONE|unix.OPEN_TREE_CLOEXEC)
	if err != nil {
		return fmt.Errorf("cannot clone a directory of a detached mount (open_tree: %w; Linux 6.15 can)", err)
	}
	unix.Close(c)
	return nil
}

// Take returns an empty ext4 file system of which a sandbox can use
// bytes; the caller owns it and releases it. It comes from the reserve
// when one is ready.
func (d *Disks) Take(ctx context.Context, bytes int64) (*Scratch, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return nil, fmt.Errorf("sandbox disks: closed")
	}
	s := d.sizeLocked(bytes)
	s.lastUse = time.Now()
	d.taken = s.lastUse
	var sc *Scratch
	if n := len(s.ready); n > 0 {
		sc, s.ready = s.ready[n-1], s.ready[:n-1]
	}
	d.mu.Unlock()
	d.poke()
	if sc != nil {
		return sc, nil
	}
	return d.make(s)
}

// readyCount returns how many file systems of bytes are ready.
func (d *Disks) readyCount(bytes int64) int {
	d.mu.Lock()
	defer d.mu.Unlock()
	if s := d.sizes[bytes]; s != nil {
		return len(s.ready)
	}
	return 0
}

// fill keeps each size's reserve at d.ready, off the critical path, and
// drops the reserves (and templates) of sizes unused for diskIdle.
func (d *Disks) fill() {
	defer close(d.done)
	tick := time.NewTicker(time.Minute)
	defer tick.Stop()
	for {
		d.trim(time.Now())
		for {
			if !d.quiet() {
				return
			}
			s := d.short()
			if s == nil {
				break
			}
			sc, err := d.make(s)
			d.mu.Lock()
			s.making--
			if err == nil && !d.closed && d.sizes[s.bytes] == s {
				s.ready = append(s.ready, sc)
				sc = nil
			}
			d.mu.Unlock()
			if sc != nil {
				sc.Release(false)
			}
			if err != nil {
				d.log.Warn("making a sandbox /tmp file system", "bytes", s.bytes, "err", err)
				select {
				case <-time.After(time.Second):
				case <-d.stop:
					return
				}
			}
		}
		select {
		case <-d.wake:
		case <-tick.C:
		case <-d.stop:
			return
		}
	}
}

// diskQuiet is how long the refill waits after the last Take: making a
// file system costs a couple of ms of CPU, which would otherwise compete
// with the start that just took one.
const diskQuiet = 3 * time.Millisecond

// quiet waits until no file system was taken for diskQuiet, and reports
// false if d is closing.
func (d *Disks) quiet() bool {
	for {
		d.mu.Lock()
		wait := diskQuiet - time.Since(d.taken)
		d.mu.Unlock()
		if wait <= 0 {
			return true
		}
		select {
		case <-time.After(wait):
		case <-d.stop:
			return false
		}
	}
}

// short picks a size whose reserve is below d.ready and counts one as
// being made for it.
func (d *Disks) short() *diskSize {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return nil
	}
	for _, s := range d.sizes {
		if len(s.ready)+s.making < d.ready {
			s.making++
			return s
		}
	}
	return nil
}

func (d *Disks) trim(now time.Time) {
	var drop []*Scratch
	var sizes []int64
	d.mu.Lock()
	for b, s := range d.sizes {
		if !s.keep && s.making == 0 && now.Sub(s.lastUse) > diskIdle {
			drop = append(drop, s.ready...)
			delete(d.sizes, b)
			sizes = append(sizes, b)
		}
	}
	d.mu.Unlock()
	for _, sc := range drop {
		sc.Release(false)
	}
	for _, b := range sizes {
		os.Remove(d.templatePath(b))
	}
}

// Close stops the refill and closes the ready file systems; those taken
// stay with their owners. Their images are already unlinked, so it also
// removes dir.
func (d *Disks) Close() error {
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return nil
	}
	d.closed = true
	close(d.stop)
	d.mu.Unlock()
	<-d.done
	d.mu.Lock()
	var drop []*Scratch
	for _, s := range d.sizes {
		drop = append(drop, s.ready...)
		s.ready = nil
	}
	d.mu.Unlock()
	for _, sc := range drop {
		sc.Release(false)
	}
	_, err := SweepDisks(d.dir)
	return err
}

// make makes one file system of size s: a sparse copy of its template,
// attached to a loop device, mounted detached; and its first Scratch.
func (d *Disks) make(s *diskSize) (*Scratch, error) {
	s.tmplMu.Lock()
	if s.image == "" {
		// A failure is not kept: the next make tries again.
		p, err := d.template(s.bytes)
		if err != nil {
			s.tmplMu.Unlock()
			return nil, err
		}
		s.image = p
	}
	tmpl := s.image
	s.tmplMu.Unlock()
	img, err := d.copyImage(tmpl)
	if err != nil {
		return nil, err
	}
	root, err := mountImage(img)
	// The loop device holds the file open; unlinked now, its blocks go
	// back to the disk when the device goes, crash or not.
	os.Remove(img.Name())
	if err != nil {
		img.Close()
		return nil, err
	}
	fs := &diskFS{size: s, root: root, image: img}
	var st unix.Statfs_t
	var ist unix.Stat_t
	if err := unix.Fstatfs(int(root.Fd()), &st); err != nil {
		fs.close()
		return nil, fmt.Errorf("sandbox disks: statfs: %w", err)
	}
	if err := unix.Fstat(int(img.Fd()), &ist); err != nil {
		fs.close()
		return nil, fmt.Errorf("sandbox disks: %w", err)
	}
	fs.free, fs.files, fs.blocks = st.Bfree, st.Ffree, ist.Blocks
	sc, err := d.open(fs)
	if err != nil {
		fs.close()
		return nil, err
	}
	d.count(func(st *DiskStats) { st.Made++ })
	return sc, nil
}

func (d *Disks) newName() string {
	d.mu.Lock()
	d.seq++
	n := d.seq
	d.mu.Unlock()
	return filepath.Join(d.dir, "tmp-"+strconv.FormatUint(n, 10)+".img")
}

// template makes the image new file systems of bytes usable bytes are
// copied from: mkfs.ext4 without a journal (a /tmp does not outlive a
// crash), reserved blocks or a resize inode (it is never grown; its
// reserved descriptor blocks were 270 of the 330 KiB that every image
// copied and that attaching it with direct I/O synced to disk), root
// directory 1777 and no lost+found, its
// size grown until the free space seen from the sandbox is bytes, never
// more: ext4's own metadata takes about 4%.
func (d *Disks) template(bytes int64) (string, error) {
	if bytes < 4<<20 {
		return "", fmt.Errorf("sandbox disks: %d bytes is too small for a file system", bytes)
	}
	p := d.templatePath(bytes)
	size := bytes
	var last int64 // the largest size found not to exceed bytes
	for range 3 {
		free, err := d.mkfs1(p, size)
		if err != nil {
			return "", err
		}
		if free > bytes {
			break
		}
		last = size
		if free == bytes || bytes-free < 64<<10 {
			break
		}
		size += (bytes - free + 4095) &^ 4095
	}
	if last == 0 {
		return "", fmt.Errorf("sandbox disks: no image size gives %d usable bytes", bytes)
	}
	if last != size {
		if _, err := d.mkfs1(p, last); err != nil {
			return "", err
		}
	}
	return p, nil
}

func (d *Disks) templatePath(bytes int64) string {
	return filepath.Join(d.dir, "template-"+strconv.FormatInt(bytes, 10)+".img")
}

// mkfs1 writes an ext4 image of size bytes at p, prepares its root, and
// returns the free bytes an unprivileged user sees in it.
func (d *Disks) mkfs1(p string, size int64) (int64, error) {
	os.Remove(p)
	f, err := os.OpenFile(p, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return 0, fmt.Errorf("sandbox disks: %w", err)
	}
	defer f.Close()
	if err := f.Truncate(size); err != nil {
		return 0, fmt.Errorf("sandbox disks: %w", err)
	}
	out, err := exec.Command(d.mkfs, "-q", "-F", "-b", "4096", "-m", "0", "-O", "^has_journal,^resize_inode",
		"-E", "nodiscard,lazy_itable_init=1,root_owner=0:0", "-L", "hearth-tmp", p).CombinedOutput()
	if err != nil {
		return 0, fmt.Errorf("sandbox disks: mkfs.ext4: %w: %s", err, out)
	}
	m, err := mountImage(f)
	if err != nil {
		return 0, err
	}
	defer m.Close()
	root := fdPath(m)
	if err := os.Remove(filepath.Join(root, "lost+found")); err != nil && !os.IsNotExist(err) {
		return 0, fmt.Errorf("sandbox disks: %w", err)
	}
	if err := unix.Chmod(root, 0o1777); err != nil {
		return 0, fmt.Errorf("sandbox disks: %w", err)
	}
	var st unix.Statfs_t
	if err := unix.Fstatfs(int(m.Fd()), &st); err != nil {
		return 0, fmt.Errorf("sandbox disks: statfs: %w", err)
	}
	return int64(st.Bavail) * st.Bsize, nil
}

// copyImage copies the template's data (its holes stay holes) into a new
// file in d.dir.
func (d *Disks) copyImage(template string) (_ *os.File, err error) {
	src, err := os.Open(template)
	if err != nil {
		return nil, fmt.Errorf("sandbox disks: %w", err)
	}
	defer src.Close()
	dst, err := os.OpenFile(d.newName(), os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, fmt.Errorf("sandbox disks: %w", err)
	}
	defer func() {
		if err != nil {
			dst.Close()
			os.Remove(dst.Name())
		}
	}()
	fi, err := src.Stat()
	if err != nil {
		return nil, fmt.Errorf("sandbox disks: %w", err)
	}
	if err := dst.Truncate(fi.Size()); err != nil {
		return nil, fmt.Errorf("sandbox disks: %w", err)
	}
	sfd, dfd := int(src.Fd()), int(dst.Fd())
	for off := int64(0); off < fi.Size(); {
		data, err := unix.Seek(sfd, off, unix.SEEK_DATA)
		if err == unix.ENXIO {
			break // only a hole is left
		}
		if err != nil {
			return nil, fmt.Errorf("sandbox disks: seek data: %w", err)
		}
		hole, err := unix.Seek(sfd, data, unix.SEEK_HOLE)
		if err != nil {
			return nil, fmt.Errorf("sandbox disks: seek hole: %w", err)
		}
		in, out := data, data
		for in < hole {
			n, err := unix.CopyFileRange(sfd, &in, dfd, &out, int(hole-in), 0)
			if err != nil {
				return nil, fmt.Errorf("sandbox disks: copy: %w", err)
			}
			if n == 0 {
				return nil, fmt.Errorf("sandbox disks: copy: %w", io.ErrUnexpectedEOF)
			}
		}
		off = hole
	}
	return dst, nil
}

// mountImage attaches img to a free loop device (direct I/O: the image's
// pages are not cached twice; autoclear: the device goes with its last
// user) and mounts its ext4 detached, nosuid and nodev.
func mountImage(img *os.File) (*os.File, error) {
	loop, dev, err := attachLoop(img)
	if err != nil {
		return nil, err
	}
	defer unix.Close(loop)
	fs, err := unix.Fsopen("ext4", unix.FSOPEN_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("sandbox disks: fsopen ext4: %w", err)
	}
	defer unix.Close(fs)
	// noinit_itable: no background zeroing of inode tables, which would
	// write megabytes into every image.
	if err := unix.FsconfigSetString(fs, "source", dev); err != nil {
		return nil, fmt.Errorf("sandbox disks: fsconfig source: %w", err)
	}
	if err := unix.FsconfigSetFlag(fs, "noinit_itable"); err != nil {
		return nil, fmt.Errorf("sandbox disks: fsconfig noinit_itable: %w", err)
	}
	if err := unix.FsconfigCreate(fs); err != nil {
		return nil, fmt.Errorf("sandbox disks: mount %s: %w", dev, err)
	}
	m, err := unix.Fsmount(fs, unix.FSMOUNT_CLOEXEC, unix.MOUNT_ATTR_NOSUID|unix.MOUNT_ATTR_NODEV)
	if err != nil {
		return nil, fmt.Errorf("sandbox disks: fsmount %s: %w", dev, err)
	}
	return os.NewFile(uintptr(m), "tmp"), nil
}

// attachLoop binds img to a free loop device and returns the device,
// open, and its path. Other processes take free devices too: a device
// taken between LOOP_CTL_GET_FREE and LOOP_CONFIGURE is busy; the next
// free one is tried.
func attachLoop(img *os.File) (int, string, error) {
	ctl, err := unix.Open("/dev/loop-control", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, "", fmt.Errorf("%w: /dev/loop-control: %w", ErrNoDisks, err)
	}
	defer unix.Close(ctl)
	for range 64 {
		n, err := unix.IoctlRetInt(ctl, unix.LOOP_CTL_GET_FREE)
		if err != nil {
			return -1, "", fmt.Errorf("sandbox disks: no free loop device: %w", err)
		}
		dev := "/dev/loop" + strconv.Itoa(n)
		fd, err := unix.Open(dev, unix.O_RDWR|unix.O_CLOEXEC, 0)
		if err != nil {
			return -1, "", fmt.Errorf("sandbox disks: %w", err)
		}
		cfg := unix.LoopConfig{Fd: uint32(img.Fd()), Size: 4096}
		cfg.Info.Flags = unix.LO_FLAGS_AUTOCLEAR | unix.LO_FLAGS_DIRECT_IO
		err = unix.IoctlLoopConfigure(fd, &cfg)
		if err == nil {
			return fd, dev, nil
		}
		unix.Close(fd)
		if err != unix.EBUSY {
			return -1, "", fmt.Errorf("sandbox disks: configure %s: %w", dev, err)
		}
	}
	return -1, "", fmt.Errorf("sandbox disks: every free loop device was taken first")
}

// fdPath names the directory f refers to, through /proc/self/fd: a path
// for this process only, valid while f is open.
func fdPath(f *os.File) string { return "/proc/self/fd/" + strconv.Itoa(int(f.Fd())) }
