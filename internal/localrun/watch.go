package localrun

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// DefaultDebounce is how long a directory must be quiet after a change
// before Watch reports it: an editor's save is several events (a write,
// a rename, an attribute change), and a checkout is many.
const DefaultDebounce = 200 * time.Millisecond

// watchMask is what counts as a change: content written, files and
// directories made, removed or renamed, modes changed.
const watchMask = unix.IN_CLOSE_WRITE | unix.IN_MODIFY | unix.IN_ATTRIB | unix.IN_CREATE |
	unix.IN_DELETE | unix.IN_MOVED_FROM | unix.IN_MOVED_TO | unix.IN_DELETE_SELF | unix.IN_MOVE_SELF

// Watch watches dir and every directory below it (inotify; directories
// made later too) and sends on the returned channel once per burst of
// changes, when debounce (default DefaultDebounce) has passed without
// another. Bytecode caches (__pycache__, .pyc), hidden files and
// directories (.git, an editor's swap files) and backups (name~) do not
// count. The channel closes when ctx ends or the watch fails.
func Watch(ctx context.Context, dir string, debounce time.Duration) (<-chan struct{}, error) {
	if debounce <= 0 {
		debounce = DefaultDebounce
	}
	fd, err := unix.InotifyInit1(unix.IN_CLOEXEC | unix.IN_NONBLOCK)
	if err != nil {
		return nil, fmt.Errorf("watching %s: %w", dir, err)
	}
	// Non-blocking: the file's reads wait in the runtime's poller, and
	// Close wakes them.
	f := os.NewFile(uintptr(fd), "inotify")
	w := &watcher{fd: fd, dirs: map[int32]string{}}
	if err := w.addTree(dir); err != nil {
		f.Close()
		return nil, err
	}
	changes := make(chan struct{}, 1)
	events := make(chan struct{}, 1)
	go func() {
		<-ctx.Done()
		f.Close()
	}()
	go func() {
		defer close(events)
		buf := make([]byte, 64<<10)
		for {
			n, err := f.Read(buf)
			if err != nil {
				return
			}
			if w.parse(buf[:n]) {
				select {
				case events <- struct{}{}:
				default:
				}
			}
		}
	}()
	go func() {
		defer close(changes)
		var timer <-chan time.Time
		for {
			select {
			case _, ok := <-events:
				if !ok {
					return
				}
				timer = time.After(debounce)
			case <-timer:
				timer = nil
				select {
				case changes <- struct{}{}:
				default: // one pending report covers this burst too
				}
			}
		}
	}()
	return changes, nil
}

// watcher tracks inotify's watch descriptors; only the reading goroutine
// uses it after Watch returns.
type watcher struct {
	fd   int
	dirs map[int32]string // by watch descriptor
}

// ignored reports whether changes to a file or directory named name do
// not count.
func ignored(name string) bool {
	return name == "__pycache__" || strings.HasPrefix(name, ".") || strings.HasSuffix(name, "~") ||
		strings.HasSuffix(name, ".pyc")
}

func (w *watcher) addTree(root string) error {
	return filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if p != root && errors.Is(err, fs.ErrNotExist) {
				return nil // gone meanwhile
			}
			return fmt.Errorf("watching %s: %w", p, err)
		}
		if !d.IsDir() {
			return nil
		}
		if p != root && ignored(d.Name()) {
			return filepath.SkipDir
		}
		wd, err := unix.InotifyAddWatch(w.fd, p, watchMask|unix.IN_ONLYDIR)
		if err != nil {
			return fmt.Errorf("watching %s: %w", p, err)
		}
		w.dirs[int32(wd)] = p
		return nil
	})
}

// parse reads a batch of events, watches directories made, and reports
// whether any counts as a change.
func (w *watcher) parse(b []byte) bool {
	changed := false
	for len(b) >= unix.SizeofInotifyEvent {
		ev := (*unix.InotifyEvent)(unsafe.Pointer(&b[0]))
		end := unix.SizeofInotifyEvent + int(ev.Len)
		if end > len(b) {
			break
		}
		name := strings.TrimRight(string(b[unix.SizeofInotifyEvent:end]), "\x00")
		b = b[end:]
		if ev.Mask&unix.IN_IGNORED != 0 {
			delete(w.dirs, ev.Wd)
			continue
		}
		if ev.Mask&unix.IN_Q_OVERFLOW != 0 {
			changed = true
			continue
		}
		if name != "" && ignored(name) {
			continue
		}
		dir, ok := w.dirs[ev.Wd]
		if !ok {
			continue
		}
		if ev.Mask&unix.IN_ISDIR != 0 && ev.Mask&(unix.IN_CREATE|unix.IN_MOVED_TO) != 0 {
			// Best effort: a directory removed at once is no change to miss.
			w.addTree(filepath.Join(dir, name))
		}
		changed = true
	}
	return changed
}
