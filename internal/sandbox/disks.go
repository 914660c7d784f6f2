package sandbox

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// Disks makes the file systems of sandboxes' on-disk /tmp: each is an
// ext4 file system in a sparse image file in a directory on the data
// dir's disk, on a loop device, mounted detached (fsmount(2)). Such a mount is
// in no mount namespace until a sandbox's init moves it onto its /tmp, so
// no other namespace ever holds a copy of it, and it goes, loop device
// and image with it, once the last reference (the sandbox's namespace and
// the worker's descriptor) does. Its files are page cache, which the
// kernel can write back and reclaim, not tmpfs memory the sandbox's
// cgroup must hold, and the image's size caps what the sandbox can write.
//
// Making one costs about 2 ms (a sparse copy of a per-size template made
// once by mkfs.ext4, a loop device, the mount), against 50 us for a
// tmpfs, so Disks keeps a few ready for each size in recent use: taking
// one of those costs about 10 us (BenchmarkScratchMake). A Disks is safe for concurrent use; its owner
// calls Close once no sandbox uses it anymore.
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
}

// diskSize is the template and the reserve of one /tmp size.
type diskSize struct {
	bytes int64 // usable bytes asked for

	tmplMu sync.Mutex
	image  string // template image file, once made; guarded by tmplMu

	ready   []*os.File // detached mounts; guarded by Disks.mu
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

// Take returns a detached mount of a new, empty ext4 file system of which
// a sandbox can use bytes, root directory mode 1777; the caller owns it.
// It comes from the reserve when one is ready.
func (d *Disks) Take(ctx context.Context, bytes int64) (*os.File, error) {
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
	var f *os.File
	if n := len(s.ready); n > 0 {
		f, s.ready = s.ready[n-1], s.ready[:n-1]
	}
	d.mu.Unlock()
	d.poke()
	if f != nil {
		return f, nil
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
			f, err := d.make(s)
			d.mu.Lock()
			s.making--
			if err == nil && !d.closed && d.sizes[s.bytes] == s {
				s.ready = append(s.ready, f)
				f = nil
			}
			d.mu.Unlock()
			if f != nil {
				f.Close()
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
	var drop []*os.File
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
	for _, f := range drop {
		f.Close()
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
	var drop []*os.File
	for _, s := range d.sizes {
		drop = append(drop, s.ready...)
		s.ready = nil
	}
	d.mu.Unlock()
	for _, f := range drop {
		f.Close()
	}
	_, err := SweepDisks(d.dir)
	return err
}

// make makes one file system of size s: a sparse copy of its template,
// attached to a loop device, mounted detached.
func (d *Disks) make(s *diskSize) (*os.File, error) {
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
	defer img.Close()
	// The loop device holds the file open; unlinked now, its blocks go
	// back to the disk when the device goes, crash or not.
	defer os.Remove(img.Name())
	return mountImage(img)
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
